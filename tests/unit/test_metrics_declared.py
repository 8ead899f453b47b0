"""Only declared metrics are compared; built-ins per backend; wall_s; p-values for people."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from autoopt.tools import abrun
from autoopt.tools.abrun import ABRun, ABRunner, Slot, analyse, new_run
from autoopt.tools.backends.base import Build, Deployment, Sample, WorkloadResult
from autoopt.tools.record import _readme, _row
from autoopt.tools.stats import format_p
from autoopt.tools.targets import TargetSpec, builtin_metrics, parse_constraint, parse_target

TARGET = """# Target: t

## Source
repo: local
path: src

## Primary Metric
name: peak_rss_mb
direction: lower
unit: MiB

## Secondary Metrics
- latency_p99_ms
- throughput_qps (higher is better)
- items_per_s (lower is better)

## Constraints
- error_rate must remain 0
- pod_restarts must remain 0
- wall_s must not increase by more than 50% from baseline

## Local
kind: batch
workload: python3 main.py
"""

A_RSS = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2]
B_RSS = [x * 0.8 for x in A_RSS[2:] + A_RSS[:2]]  # 20% lower: a clear gain
WALL = [1.00, 1.02, 0.98, 1.01, 0.99, 1.00]


def _spec(tmp_path: Path, body: str = TARGET) -> TargetSpec:
    folder = tmp_path / "t"
    folder.mkdir(exist_ok=True)
    (folder / "target.md").write_text(body)
    return parse_target(folder)


def _run(spec: TargetSpec, backend: str = "local", metric: str | None = None) -> ABRun:
    return new_run(
        spec,
        backend=backend,
        base="0" * 40,
        patch=None,
        runs=6,
        warmup=0,
        order="abba",
        seed=1,
        sequential=False,
        metric=metric,
        direction=None,
        min_effect=None,
        workload=None,
        allow_constant_tuning=False,
    )


def _samples(run: ABRun, wall_b_factor: float) -> None:
    for i in range(6):
        wall_b = WALL[(i + 2) % 6] * wall_b_factor  # not a copy of A: noise on both sides
        for arm, rss, wall in (("A", A_RSS[i], WALL[i]), ("B", B_RSS[i], wall_b)):
            run.samples.append(
                Sample(
                    run=len(run.samples),
                    arm=arm,
                    build_id=arm,
                    ok=True,
                    metrics={
                        "peak_rss_mb": rss,
                        "wall_s": wall,
                        "restarts": 0.0,
                        "error_rate": 0.0,
                        "cpu_s": 0.5 + 0.01 * i,
                        "latency_p99_ms": 10.0 + i % 3,
                        "throughput_qps": 800.0 + i,
                        "rss_mb": rss - 5,
                        "items": 1e6 + i,
                        "build_time_s": 3.0 + i,
                    },
                )
            )


def test_parse_maps_pod_restarts_and_reads_secondary_directions(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    restarts = next(
        g
        for g in spec.guardrails
        if g.rule == "remain" and g.value == 0 and g.text.startswith("pod_restarts")
    )
    assert restarts.metric == "restarts" and restarts.text == "pod_restarts must remain 0"
    wall = parse_constraint("wall_s must not increase by more than 50% from baseline")
    assert wall is not None and (wall.metric, wall.rule, wall.value) == (
        "wall_s",
        "max_increase_pct",
        50.0,
    )
    assert spec.secondary == ["latency_p99_ms", "throughput_qps", "items_per_s"]
    declared = spec.declared_metrics("local")
    assert declared["throughput_qps"] == "higher"
    assert declared["items_per_s"] == "lower"  # declared, not guessed from "per_s"
    assert declared["wall_s"] == declared["restarts"] == declared["cpu_s"] == "lower"
    assert "pod_restarts" not in declared and "oom_killed" not in declared
    assert "oom_killed" in spec.declared_metrics("docker")
    assert "oom_killed" in builtin_metrics("kubernetes") and "oom_killed" not in builtin_metrics(
        "local"
    )


def test_only_declared_metrics_are_analysed(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    run = _run(spec)
    _samples(run, 1.0)
    report = analyse(run, spec, look=None)
    names = {m.metric for m in report.metrics}
    assert names == {
        "peak_rss_mb",
        "wall_s",
        "restarts",
        "error_rate",
        "cpu_s",
        "latency_p99_ms",
        "throughput_qps",
    }
    directions = {m.metric: m.direction for m in report.metrics}
    assert directions["throughput_qps"] == "higher" and directions["peak_rss_mb"] == "lower"
    # what was printed but not declared stays in the samples, uncompared
    assert all({"rss_mb", "items", "build_time_s"} <= set(s.metrics) for s in run.samples)
    readme = _readme(
        run.model_copy(update={"report": report}), spec, "e1", "d", "h", None, "report", "b"
    )
    assert "| peak_rss_mb |" in readme and "| items |" not in readme
    assert "| rss_mb |" not in readme and "| build_time_s |" not in readme


def test_a_metric_argument_is_analysed_and_keeps_a_declared_direction(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    run = _run(spec, metric="throughput_qps")
    assert run.direction == "higher"
    guessed = _run(spec, metric="items")  # undeclared: only here is the direction guessed
    assert guessed.direction == "lower"
    _samples(guessed, 1.0)
    assert "items" in {m.metric for m in analyse(guessed, spec, look=None).metrics}


@pytest.mark.parametrize(("factor", "keep"), [(1.8, False), (1.0, True)])
def test_wall_s_guardrail_is_evaluated(tmp_path: Path, factor: float, keep: bool) -> None:
    spec = _spec(tmp_path)
    run = _run(spec)
    _samples(run, factor)
    decision = analyse(run, spec, look=None).decision
    check = next(g for g in decision["guardrails"] if g["guardrail"]["metric"] == "wall_s")
    assert check["passed"] is keep, check
    assert check["violated"] is (not keep), check
    assert (decision["verdict"] == "KEEP") is keep, decision["reason"]
    if not keep:
        assert decision["verdict"] == "DISCARD" and "wall_s" in decision["reason"]


class _Fake:
    """A backend that measures nothing real: what `one` adds is all there is to see."""

    def __init__(self, name: str, printed: dict[str, float], duration: float) -> None:
        self.name = name
        self.printed = printed
        self.duration = duration

    async def deploy(self, spec: TargetSpec, build: Build) -> Deployment:
        return Deployment(
            id="d1",
            build_id=build.id,
            target=spec.name,
            backend=self.name,
            kind=spec.kind,
            tree=build.tree,
        )

    async def reset_peak(self, deployment: Deployment) -> None:
        return None

    async def run_workload(self, *args: Any, **kwargs: Any) -> WorkloadResult:
        return WorkloadResult(metrics=dict(self.printed), exit_code=0, duration_s=self.duration)

    async def collect(self, *args: Any) -> dict[str, object]:
        return {"metrics": {"peak_rss_mb": 50.0}, "died": False, "restarts": 0, "oom_killed": False}

    async def teardown(self, deployment: Deployment) -> None:
        return None


def _one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, printed: dict[str, float]
) -> Sample:
    monkeypatch.setattr(
        abrun, "workload_argv", lambda *a, **k: (SimpleNamespace(argv=["true"], env={}), "true")
    )
    spec = _spec(tmp_path)
    run = _run(spec, backend=backend)
    build = Build(
        id="b1", target="t", backend=backend, base="0" * 40, commit="0" * 40, tree=str(tmp_path)
    )
    runner = ABRunner(
        spec=spec,
        backend=_Fake(backend, printed, 1.23456),  # type: ignore[arg-type]
        run=run,
        folder=tmp_path,
        script=None,
        track=lambda d, live: None,
        target_dir=tmp_path,
    )
    return anyio.run(runner.one, build, Slot(index=0, arm="A", warmup=False))


@pytest.mark.parametrize("backend", ["local", "docker", "kubernetes"])
def test_builtins_per_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    sample = _one(tmp_path, monkeypatch, backend, {"error_rate": 0.0})
    assert sample.ok, sample.error
    assert sample.metrics["restarts"] == 0 and "pod_restarts" not in sample.metrics
    assert ("oom_killed" in sample.metrics) is (backend != "local")
    assert sample.metrics["wall_s"] == 1.235  # the workload's duration


def test_a_measured_wall_s_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = _one(tmp_path, monkeypatch, "local", {"wall_s": 0.5})
    assert sample.metrics["wall_s"] == 0.5


def test_p_values_are_never_a_bare_zero(tmp_path: Path) -> None:
    assert format_p(0.0) == "<1e-6" and format_p(3e-9) == "<1e-6"
    assert format_p(0.031234) == "0.031" and format_p(2.5e-5) == "2.5e-05"
    assert format_p(1.0) == "1" and format_p(None) == "-"
    spec = _spec(tmp_path)
    run = _run(spec)
    _samples(run, 1.0)
    run.report = analyse(run, spec, look=None)
    run.report.decision["primary"]["p_gain"] = 1e-12  # type: ignore[index]
    row = _row(run, "e1", "b", "main", "d", None)
    assert row["p_value"] == "<1e-6"
    assert row["pod_restarts"] == "0"  # the seed's column, from the restarts built-in
