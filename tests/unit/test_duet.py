"""Duet order: the schedule (pairs, CPU sets swapped by the seed), the refusals, pinning."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from autoopt.tools import abrun, contain, pinning
from autoopt.tools.errors import RuleViolation

HALVES = ((0,), (1,))


def test_duet_schedule_is_pairs_on_disjoint_cpus() -> None:
    slots = abrun.make_schedule(10, 1, "duet", seed=4, cpus=HALVES)
    steps = abrun.steps(slots, "duet")
    assert len(steps) == 11 and all(len(s) == 2 for s in steps)
    for a, b in steps:
        assert {a.arm, b.arm} == {"A", "B"} and a.block == b.block
        assert set(a.cpus).isdisjoint(b.cpus) and a.cpus and b.cpus
    assert [s.warmup for s in steps[0]] == [True, True]
    assert not any(s.warmup for step in steps[1:] for s in step)
    # each arm gets each half in some pairs (a faster CPU favours neither arm)
    got = Counter(tuple(s.cpus) for s in slots if s.arm == "A")
    assert set(got) == {(0,), (1,)}


def test_duet_schedule_is_deterministic_and_needs_cpus() -> None:
    one = abrun.make_schedule(6, 0, "duet", seed=9, cpus=HALVES)
    assert one == abrun.make_schedule(6, 0, "duet", seed=9, cpus=HALVES)
    with pytest.raises(ValueError):
        abrun.make_schedule(6, 0, "duet", seed=9)


def test_sequential_orders_are_unchanged() -> None:
    slots = abrun.make_schedule(4, 0, "abba", seed=3)
    assert all(len(step) == 1 for step in abrun.steps(slots, "abba"))
    assert not any(s.cpus for s in slots)
    assert abrun.check_duet("abba", "kubernetes") is None


def test_duet_refused_on_one_cpu_and_on_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuleViolation, match="kubernetes"):
        abrun.check_duet("duet", "kubernetes")
    monkeypatch.setattr(pinning, "usable", lambda: (0,))  # what a 1-CPU machine reports
    with pytest.raises(RuleViolation, match="1 CPU"):
        abrun.check_duet("duet", "local")


def test_halves() -> None:
    assert pinning.halves((0, 1)) == ((0,), (1,))
    assert pinning.halves((0, 1, 2, 3, 4)) == ((0, 1), (2, 3))
    with pytest.raises(ValueError):
        pinning.halves((0,))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_spawned_processes_take_the_tasks_cpu_set(tmp_path) -> None:
    from autoopt.tools.process import spawn

    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    cpu = max(os.sched_getaffinity(0))
    with pinning.pinned((cpu,)):
        child = spawn([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ),
                      logs=tmp_path, name="pinned")
    child.popen.wait(10)
    assert child.stdout.read_text().strip() == f"[{cpu}]"
    free = spawn([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ),
                 logs=tmp_path, name="free")
    free.popen.wait(10)
    assert free.stdout.read_text().strip() == str(sorted(os.sched_getaffinity(0)))
    for c in (child, free):
        contain.sweep(c.scope)


BATCHDEMO = Path(__file__).resolve().parents[2] / "targets" / "batchdemo"


def _run(order: str, values: list[tuple[float, float]], failed_pair: int | None) -> abrun.ABRun:
    from autoopt.tools.backends.base import Sample
    from autoopt.tools.targets import parse_target

    run = abrun.new_run(
        parse_target(BATCHDEMO), backend="local", base="0" * 40, patch=None,
        runs=len(values), warmup=0,
        order=order, seed=1, sequential=False, metric="wall_s", direction="lower",  # type: ignore[arg-type]
        min_effect=1, workload=None, allow_constant_tuning=False,
    )
    for k, (a, b) in enumerate(values):
        for j, (arm, x) in enumerate((("A", a), ("B", b))):
            ok = not (failed_pair == k and arm == "B")
            run.samples.append(Sample(run=2 * k + j, arm=arm, build_id=arm, ok=ok, block=k,
                                      metrics={"wall_s": x} if ok else {}))
    return run


def test_duet_analysis_is_paired_and_drops_a_failed_runs_partner() -> None:
    from autoopt.tools.targets import parse_target

    values = [(1.0, 1.01), (1.3, 1.31), (0.9, 0.91), (1.1, 1.11), (1.2, 1.21), (1.0, 5.0)]
    run = _run("duet", values, failed_pair=5)
    report = abrun.analyse(run, parse_target(BATCHDEMO), look=None)
    assert report.paired and report.n_a == report.n_b == 5 and report.failed_b == 1
    primary = report.decision["primary"]
    assert primary["method"] == "paired-log"  # type: ignore[index]
    # the pairs move together: paired, the 1% rise of B is resolved tightly
    assert primary["ci_high"] - primary["ci_low"] < 0.01  # type: ignore[index,operator]
