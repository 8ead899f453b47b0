"""SAME and FAILED, and records that agree with their run (issue 17): n per arm as analysed,
the looks a sequential run took, deltas from the run's own ratio, addenda that change no
number, and texts that never say a thing twice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from autoopt.server.run_answer import run_result
from autoopt.server.views import record_text
from autoopt.tools.abrun import ABRun, analyse
from autoopt.tools.backends.base import Sample
from autoopt.tools.decision import Verdict, decide
from autoopt.tools.errors import AlreadyExists, RuleViolation
from autoopt.tools.record import (
    _readme,
    _row,
    append_row,
    chained_ratio,
    existing_record,
    extent,
    record,
)
from autoopt.tools.targets import parse_target
from autoopt.tools.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
SPEC = parse_target(ROOT / "targets" / "pyserver")


def _arm(n: int, scale: float, cv: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(scale * np.exp(cv * rng.standard_normal(n)))


# --- the verdicts on synthetic data ----------------------------------------------------------


def test_aa_on_a_quiet_metric_is_same_not_discard() -> None:
    a, b = _arm(5, 100, 0.002, 1), _arm(5, 100, 0.002, 2)
    d = decide(a, b, metric="peak_rss_mb", direction="lower")
    assert d.verdict is Verdict.SAME, d.reason
    assert d.primary is not None
    lo, hi = d.primary.lower_bound, d.primary.upper_bound
    assert math.log(0.99) < math.log(lo) and math.log(hi) < math.log(1.01)  # TOST at 5%
    assert d.reason.startswith("SAME: peak_rss_mb") and d.reason.count("SAME") == 1
    assert "lie within ±1%" in d.reason


def test_a_real_gain_below_the_minimum_measured_precisely_is_same() -> None:
    a, b = _arm(10, 100, 0.001, 3), _arm(10, 99.5, 0.001, 4)  # a true 0.5% gain
    d = decide(a, b, metric="peak_rss_mb", direction="lower")
    assert d.verdict is Verdict.SAME, d.reason
    assert d.primary is not None and d.primary.upper_bound < 1  # a gain, and shown to be one


def test_a_clear_gain_is_keep_and_a_clear_loss_is_discard() -> None:
    a = _arm(5, 100, 0.005, 5)
    keep = decide(a, _arm(5, 90, 0.005, 6), metric="peak_rss_mb", direction="lower")
    assert keep.verdict is Verdict.KEEP, keep.reason
    loss = decide(a, _arm(5, 110, 0.005, 7), metric="peak_rss_mb", direction="lower")
    assert loss.verdict is Verdict.DISCARD, loss.reason
    higher = decide(a, _arm(5, 100.2, 0.002, 8), metric="rps", direction="higher")
    assert higher.verdict is Verdict.SAME, higher.reason


def test_a_broken_guardrail_beats_same() -> None:
    from autoopt.tools.targets import Guardrail

    errors = Guardrail(metric="error_rate", rule="remain", value=0, text="error rate stays 0")
    a, b = _arm(5, 100, 0.002, 1), _arm(5, 100, 0.002, 2)
    d = decide(a, b, metric="m", direction="lower",
               guardrails=[(errors, [0.0] * 5, [0.0, 0.0, 0.1, 0.0, 0.0])])
    assert d.verdict is Verdict.DISCARD and "guardrail failed" in d.reason


def test_an_arm_with_no_usable_run_is_failed_with_the_first_error() -> None:
    a = _arm(5, 100, 0.01, 1)
    d = decide(a, [], metric="peak_rss_mb", direction="lower", failed_runs_b=5,
               errors={"B": "the workload exited with code 1"})
    assert d.verdict is Verdict.FAILED and d.primary is None
    assert d.reason.startswith("FAILED: B (the patched build) has no usable peak_rss_mb")
    assert "first error: the workload exited with code 1" in d.reason
    base = decide([], a, metric="m", direction="lower", failed_runs_a=2, failed_runs_b=0)
    assert base.verdict is Verdict.FAILED and "A (the baseline)" in base.reason
    # FAILED wins over the run cap's DISCARD
    capped = decide(a, [], metric="m", direction="lower", failed_runs_b=3,
                    inconclusive_is_discard=True)
    assert capped.verdict is Verdict.FAILED


# --- runs built from samples, analysed as run_ab does ----------------------------------------


def _run(
    a: list[float | None],
    b: list[float | None],
    *,
    runs: int | None = None,
    sequential: bool = False,
    look: int | None = None,
    error: str | None = None,
    run_id: str = "run-test-1",
    base: str = "a" * 40,
    commit_b: str = "b" * 40,
) -> ABRun:
    """A finished run with these primary values (None: a failed run), analysed."""
    n = runs or max(len(a), len(b))
    looks = [k for k in (5, 10, 15, 20) if k < n] + [n] if sequential else []
    run = ABRun(id=run_id, target="pyserver", backend="local", base=base, patch="diff",
                commits={"A": base, "B": commit_b}, runs=n, warmup=0, order="abba", seed=1,
                sequential=sequential, looks=looks, metric="peak_rss_mb", direction="lower",
                min_effect_pct=1.0, status="done", error=error)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        for arm, v in (("A", x), ("B", y)):
            ok = v is not None
            metrics = {"peak_rss_mb": v, "latency_p99_ms": 10.0, "error_rate": 0.0,
                       "restarts": 0.0} if ok else {}
            run.samples.append(Sample(run=2 * i + (arm == "B"), arm=arm, build_id=arm, ok=ok,
                                      metrics=metrics,
                                      error=None if ok else "the service died during the workload"))
    run.report = analyse(run, SPEC, look=look)
    return run


def test_all_b_runs_crashing_is_failed_though_the_run_is_done() -> None:
    run = _run(_arm(2, 100, 0.01, 1), [None, None], runs=5,
               error="arm B failed in every run so far; stopped early")
    assert run.status == "done" and run.report is not None
    assert run.report.decision["verdict"] == "FAILED"
    assert "first error: the service died during the workload" in run.report.decision["reason"]
    text = run_result(run).content[0].text
    assert "[done] FAILED" in text and "FAILED: FAILED" not in text
    assert "2 runs per arm, stopped early (5 planned): arm B failed in every run so far" in text
    assert text.count("arm B failed in every run so far") == 1  # no 'Error:' line repeating it
    assert "Guardrail" not in text and "Warning: B failed" not in text  # the reason says it
    row = _row(run, "exp1", "br", "main", "crashes", None, None)
    assert row["status"] == "failed" and row["n_b"] == "0" and row["delta_vs_parent"] == "-"


def test_a_broken_build_reads_failed() -> None:
    run = ABRun(id="run-b", target="pyserver", backend="local", base="a" * 40, runs=5,
                warmup=0, order="abba", seed=1, sequential=False, metric="peak_rss_mb",
                direction="lower", min_effect_pct=1.0, status="failed",
                error="build failed: make: *** [all] Error 2")
    view = run_result(run).structured_content
    assert view["verdict"] == "FAILED" and view["reason"].startswith("build failed")
    text = run_result(run).content[0].text
    assert text.count("make: ***") == 1
    assert _row(run, "e", "br", "main", "d", None, None)["status"] == "failed"


def test_a_sequential_run_stopped_at_look_2_says_10_not_20() -> None:
    a, b = _arm(10, 100, 0.005, 11), _arm(10, 93, 0.005, 12)
    run = _run(a, b, runs=20, sequential=True, look=10)
    decision = run.report.decision
    assert decision["verdict"] == "KEEP" and decision["look"] == 10
    assert run.report.n_a == run.report.n_b == 10
    said = extent(run)
    assert said.startswith("10 runs per arm, stopped at look 2 of 4: the gain crossed the "
                           "look's boundary (one-sided alpha 0.0055)")
    row = _row(run, "exp1", "br", "main", "seq", None, None)
    assert (row["n_a"], row["n_b"]) == ("10", "10") and row["stopped"] == said
    readme = _readme(run, SPEC, "exp1", "seq", "h", None, "pr", "br")
    assert "10 runs per arm, stopped at look 2 of 4" in readme
    assert "20 runs per arm" not in readme and "20 per arm" not in readme
    assert "KEEP — KEEP" not in readme and "KEEP: KEEP" not in readme
    text = run_result(run).content[0].text
    assert "stopped at look 2 of 4" in text and text.count("KEEP") == 1


def test_row_figures_are_the_runs_own_estimate() -> None:
    run = _run(_arm(5, 100, 0.005, 21), _arm(5, 95, 0.005, 22))
    primary = run.report.decision["primary"]
    row = _row(run, "exp1", "br", "main", "d", None, chained_ratio(Path("/nonexistent"), run))
    change = primary["change_pct"]
    assert row["delta_vs_parent"] == f"{change:+.1f}%"
    assert row["delta_vs_baseline"] == row["delta_vs_parent"]  # no KEEP before it
    assert row["ratio"] == f"{primary['ratio_geomean']:.4f}".rstrip("0")
    b_geo = math.exp(sum(math.log(x) for x in run.report.metrics[
        [m.metric for m in run.report.metrics].index("peak_rss_mb")].b.values) / 5)
    assert float(row["metric_value"]) == pytest.approx(b_geo, abs=1e-3)
    readme = _readme(run, SPEC, "exp1", "d", "h", None, "pr", "br")
    lo, hi = primary["ci_low"], primary["ci_high"]
    assert f"peak_rss_mb {change:+.1f}% B vs A (95% CI {100 * (lo - 1):+.1f}% to" in readme
    assert f"{100 * (hi - 1):+.1f}%)" in readme and "5 A / 5 B runs analysed" in readme


def test_delta_vs_baseline_chains_the_keeps_since_the_baseline(tmp_path: Path) -> None:
    results = tmp_path / "results"
    first = _run(_arm(5, 100, 0.005, 31), _arm(5, 90, 0.005, 32), run_id="run-k1",
                 base="0" * 40, commit_b="1" * 40)
    second = _run(_arm(5, 90, 0.005, 33), _arm(5, 85, 0.005, 34), run_id="run-k2",
                  base="1" * 40, commit_b="2" * 40)
    for exp_id, run in (("exp1", first), ("exp2", second)):
        (results / exp_id).mkdir(parents=True)
        (results / exp_id / "run.json").write_text(run.model_dump_json())
        append_row(results / "results.tsv",
                   _row(run, exp_id, "br", "main", "d", None, chained_ratio(results, run)))
    third = _run(_arm(5, 85, 0.005, 35), _arm(5, 84, 0.005, 36), run_id="run-3",
                 base="2" * 40, commit_b="3" * 40)
    ratios = [r.report.decision["primary"]["ratio_geomean"] for r in (first, second, third)]
    assert chained_ratio(results, third) == pytest.approx(ratios[0] * ratios[1] * ratios[2])
    row = _row(third, "exp3", "br", "main", "d", None, chained_ratio(results, third))
    expected = 100 * (ratios[0] * ratios[1] * ratios[2] - 1)
    assert row["delta_vs_baseline"] == f"{expected:+.1f}%"
    assert row["delta_vs_parent"] == f"{third.report.decision['primary']['change_pct']:+.1f}%"


class _Source:
    def frontier(self) -> str:
        return "f" * 40


def test_an_addendum_appends_and_changes_no_number(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    run = _run(_arm(5, 100, 0.005, 41), _arm(5, 90, 0.005, 42))
    folder = ws.results_for("pyserver", "local") / "exp1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(run.model_dump_json())
    readme = _readme(run, SPEC, "exp1", "d", "h", None, "pr", "br")
    (folder / "README.md").write_text(readme)
    row = _row(run, "exp1", "br", "main", "d", None, None)
    append_row(folder.parent / "results.tsv", row)
    tsv_before = (folder.parent / "results.tsv").read_text()
    done = existing_record(ws, _Source(), run, folder, "diff_profiles: -60% at the peak")  # type: ignore[arg-type]
    text = (folder / "README.md").read_text()
    assert text.startswith(readme) and "\n## Addendum (" in text
    assert text.rstrip().endswith("diff_profiles: -60% at the peak")
    assert (folder.parent / "results.tsv").read_text() == tsv_before
    assert done.addendum and done.row["delta_vs_parent"] == row["delta_vs_parent"]
    assert not done.frontier_moved and "addendum appended" in record_text(done)
    other = _run(_arm(5, 100, 0.005, 43), _arm(5, 90, 0.005, 44), run_id="run-other")
    with pytest.raises(RuleViolation, match="records run run-test-1, not run-other"):
        existing_record(ws, _Source(), other, folder, "x")  # type: ignore[arg-type]
    assert json.loads((folder / "run.json").read_text())["id"] == "run-test-1"


def test_a_run_is_recorded_once(tmp_path: Path) -> None:
    """Same run, same exp_id: the record as it is, nothing written; another exp_id: refused,
    naming the record."""
    ws = Workspace(tmp_path)
    run = _run(_arm(5, 100, 0.005, 41), _arm(5, 90, 0.005, 42))
    folder = ws.results_for("pyserver", "local") / "exp1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(run.model_dump_json())
    (folder / "README.md").write_text("# exp1\n")
    append_row(folder.parent / "results.tsv", _row(run, "exp1", "br", "main", "d", None, None))
    before = {p.name: p.read_bytes() for p in folder.parent.rglob("*") if p.is_file()}
    args = {"description": None, "hypothesis": None, "evidence": None, "output_type": "pr",
            "tag": "exp"}
    again = record(ws, SPEC, _Source(), run, exp_id="exp1", **args)  # type: ignore[arg-type]
    assert again.existing and again.exp_id == "exp1" and again.row["run_id"] == run.id
    assert "already recorded" in record_text(again)
    with pytest.raises(AlreadyExists, match="already recorded as exp1"):
        record(ws, SPEC, _Source(), run, exp_id="exp2", **args)  # type: ignore[arg-type]
    with pytest.raises(AlreadyExists, match="already recorded as exp1"):
        record(ws, SPEC, _Source(), run, exp_id="exp2", addendum="x", **args)  # type: ignore[arg-type]
    assert {p.name: p.read_bytes() for p in folder.parent.rglob("*") if p.is_file()} == before
    assert not (folder.parent / "exp2").exists()


@pytest.mark.parametrize(
    ("b_scale", "verdict"), [(1.0, "SAME"), (0.9, "KEEP"), (1.1, "DISCARD")]
)
def test_texts_never_repeat_the_verdict_or_the_change(b_scale: float, verdict: str) -> None:
    run = _run(_arm(5, 100, 0.002, 51), _arm(5, 100 * b_scale, 0.002, 52))
    assert run.report.decision["verdict"] == verdict
    result = run_result(run)
    text = result.content[0].text
    assert f"{verdict}: {verdict}" not in text and text.count(f"{verdict}:") == 1
    assert text.count("95% CI") == 1  # the first line has it; the reason does not repeat it
    assert result.structured_content["reason"].startswith("peak_rss_mb ")  # whole, in the view
    readme = _readme(run, SPEC, "exp1", "d", "h", None, "report", "br")
    head = readme.split("## Hypothesis")[0]
    line = next(x for x in head.splitlines() if x.startswith("- **Decision:**"))
    assert line.startswith(f"- **Decision:** {verdict} — ") and line.count(verdict) == 1
    assert head.count("95% CI") == 1  # in **Result:**, not again in the decision's reason
    assert _row(run, "e", "b", "m", "d", None, None)["status"] == verdict.lower()
