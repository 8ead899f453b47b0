"""Tests for autoopt.tools.decision: verdicts, guardrails, failures, warnings, reasons."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoopt.tools.decision import Decision, Verdict, check_guardrail, decide
from autoopt.tools.stats import sequential_boundaries
from autoopt.tools.targets import Guardrail

A = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8, 100.9, 99.1, 100.0]  # CV ~0.7%


def _scaled(xs: list[float], factor: float, shift: int = 3) -> list[float]:
    """B = factor * A, rotated so the arms are not paired copies."""
    return [factor * x for x in xs[shift:] + xs[:shift]]


def _noisy(n: int, scale: float, cv: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(scale * (1 + cv * rng.standard_normal(n)))


P99 = Guardrail(metric="latency_p99_ms", rule="max_increase_pct", value=50, text="p99 +50% max")
THROUGHPUT = Guardrail(metric="rps", rule="max_decrease_pct", value=5, text="rps -5% max")
ERRORS = Guardrail(metric="error_rate", rule="remain", value=0, text="error rate stays 0")
RESTARTS = Guardrail(metric="restarts", rule="remain", value=0, text="no restarts")


def _assert_json(d: Decision) -> None:
    text = d.model_dump_json()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["verdict"] == d.verdict.value


# --- verdicts ------------------------------------------------------------------------------


def test_keep_clear_gain_with_guardrails():
    b = _scaled(A, 0.69)
    p99_a, p99_b = _noisy(10, 50, 0.05, 1), _noisy(10, 51, 0.05, 2)
    d = decide(
        A,
        b,
        metric="peak_rss_mb",
        direction="lower",
        guardrails=[(P99, p99_a, p99_b), (ERRORS, [0.0] * 10, [0.0] * 10)],
    )
    assert d.verdict is Verdict.KEEP
    assert d.reason.startswith("KEEP: peak_rss_mb fell 31")
    assert f"{abs(d.primary.change_pct):.3g}%" in d.reason
    assert "latency_p99_ms" in d.reason and "error_rate remained 0" in d.reason
    assert "95% CI" in d.reason and "passes the 1% minimum" in d.reason
    assert all(g.passed for g in d.guardrails)
    assert d.seed_rule_keep is True
    _assert_json(d)


def test_keep_higher_is_better():
    d = decide(A, _scaled(A, 1.2), metric="rps", direction="higher")
    assert d.verdict is Verdict.KEEP
    assert "rps rose 20" in d.reason


def test_discard_when_b_is_worse():
    d = decide(A, _scaled(A, 1.1), metric="peak_rss_mb", direction="lower")
    assert d.verdict is Verdict.DISCARD
    assert "rose 10" in d.reason and "is a loss of more than 1%" in d.reason


def test_discard_when_the_gain_is_ruled_out_and_a_loss_is_not():
    d = decide(A, _scaled(A, 1.008), metric="peak_rss_mb", direction="lower")
    assert d.verdict is Verdict.DISCARD
    assert "rules out the 1% minimum gain" in d.reason
    assert "does not rule out a 1% loss" in d.reason


def test_same_when_a_tiny_change_is_bounded_within_the_minimum():
    d = decide(A, _scaled(A, 0.998), metric="wall_s", direction="lower", min_effect_pct=2.0)
    assert d.verdict is Verdict.SAME
    assert "lie within ±2%" in d.reason and d.reason.count("SAME") == 1


def test_inconclusive_when_noise_hides_the_effect():
    a, b = _noisy(5, 100, 0.10, 3), _noisy(5, 95, 0.10, 4)
    d = decide(a, b, metric="p99_ms", direction="lower")
    assert d.verdict is Verdict.INCONCLUSIVE
    assert "does not exclude no gain" in d.reason
    assert any("16*(CV/delta)^2" in w for w in d.warnings)


def test_inconclusive_at_the_cap_is_a_discard_only_when_asked():
    a, b = _noisy(5, 100, 0.10, 3), _noisy(5, 95, 0.10, 4)
    capped = decide(a, b, metric="p99_ms", direction="lower", inconclusive_is_discard=True)
    assert capped.verdict is Verdict.DISCARD
    assert capped.reason.startswith("DISCARD: INCONCLUSIVE at the run cap is a DISCARD: p99_ms")
    assert capped.reason.count("INCONCLUSIVE") == 1
    interim = decide(
        a, b, metric="p99_ms", direction="lower", inconclusive_is_discard=True, final_look=False
    )
    assert interim.verdict is Verdict.INCONCLUSIVE
    assert "next planned look" in interim.reason


def test_real_gain_below_minimum_is_inconclusive_not_keep():
    d = decide(A, _scaled(A, 0.99), metric="wall_s", direction="lower", min_effect_pct=5.0)
    assert d.verdict is Verdict.SAME  # within ±5%: a real 1% gain, too small to matter
    d = decide(A, _scaled(A, 0.985), metric="wall_s", direction="lower", min_effect_pct=1.6)
    assert d.verdict is Verdict.INCONCLUSIVE
    assert "below the 1.6% minimum" in d.reason


def test_exact_zero_variance_keep_and_resolution():
    d = decide([100.0] * 5, [70.0] * 5, metric="peak_rss_mb", direction="lower")
    assert d.verdict is Verdict.KEEP and "exact ratio" in d.reason
    same = decide(
        [100.0] * 5, [99.996] * 5, metric="peak_rss_mb", direction="lower", resolution=0.004
    )
    assert same.verdict is Verdict.SAME and "the exact change (0%) lies within ±1%" in same.reason
    _assert_json(same)
    exact_zero = decide([100.0] * 5, [100.0] * 5, metric="m", direction="lower", min_effect_pct=0)
    assert exact_zero.verdict is Verdict.SAME  # identical, even with no margin


def test_a_strict_look_level_blocks_a_keep_that_a_single_test_allows():
    a, b = A[:5], [0.98 * x for x in A[2:7]]
    single = decide(a, b, metric="m", direction="lower")
    assert single.verdict is Verdict.KEEP
    first = sequential_boundaries([5, 10, 15, 20])[0]
    early = decide(a, b, metric="m", direction="lower", one_sided_alpha=first, final_look=False)
    assert early.verdict is Verdict.INCONCLUSIVE and early.one_sided_alpha == first
    assert "one-sided 99.99% bound" in early.reason


# --- failures and small n ------------------------------------------------------------------


def test_b_crashes_leaving_too_few_runs_is_discard():
    d = decide(A[:5], A[:2], metric="m", direction="lower", failed_runs_b=3)
    assert d.verdict is Verdict.DISCARD
    assert d.reason.startswith("DISCARD: B failed in 3 run(s)") and d.primary is None
    _assert_json(d)


def test_a_failures_leaving_too_few_runs_is_inconclusive():
    d = decide(A[:2], A[:5], metric="m", direction="lower", failed_runs_a=3)
    assert d.verdict is Verdict.INCONCLUSIVE and "rerun the baseline" in d.reason


def test_too_few_runs_without_failures():
    d = decide(A[:2], A[:2], metric="m", direction="lower")
    assert d.verdict is Verdict.INCONCLUSIVE and "at least 3 per arm" in d.reason


def test_remain_zero_with_a_crashed_b_run_discards():
    b = _scaled(A, 0.7)[:9]
    g = [(ERRORS, [0.0] * 10, [0.0] * 9), (RESTARTS, [0.0] * 10, [0.0] * 9)]
    d = decide(A, b, metric="peak_rss_mb", direction="lower", guardrails=g, failed_runs_b=1)
    assert d.verdict is Verdict.DISCARD
    assert "1 B run(s) failed" in d.reason
    assert all(not c.passed and c.violated for c in d.guardrails)
    assert any("B failed in 1 run(s)" in w for w in d.warnings)


# --- guardrails ----------------------------------------------------------------------------


def test_non_inferiority_passes_when_the_bound_is_inside_the_margin():
    c = check_guardrail(P99, _noisy(10, 50, 0.05, 7), _noisy(10, 52, 0.05, 8))
    assert c.passed and not c.violated
    assert c.observed["bound_pct"] < 50
    assert "latency_p99_ms" in c.reason and "upper bound" in c.reason


def test_non_inferiority_fails_when_clearly_worse():
    c = check_guardrail(P99, _noisy(10, 50, 0.05, 7), _noisy(10, 80, 0.05, 8))
    assert not c.passed and c.violated
    assert c.observed["change_pct"] > 50


def test_no_significant_regression_is_not_enough():
    # +10% estimate but the bound is wide: not shown to hold, yet not shown broken
    a, b = _noisy(3, 50, 0.4, 9), _noisy(3, 55, 0.4, 10)
    c = check_guardrail(P99, a, b)
    assert not c.passed and not c.violated
    primary_b = _scaled(A, 0.7)
    # unproven is not KEEP: add runs (and at a sequential cap it becomes DISCARD)
    final = decide(A, primary_b, metric="rss", direction="lower", guardrails=[(P99, a, b)])
    assert final.verdict is Verdict.INCONCLUSIVE and "not yet shown" in final.reason
    assert "latency_p99_ms" in final.reason
    capped = decide(
        A,
        primary_b,
        metric="rss",
        direction="lower",
        guardrails=[(P99, a, b)],
        inconclusive_is_discard=True,
    )
    assert capped.verdict is Verdict.DISCARD
    assert "INCONCLUSIVE at the run cap is a DISCARD" in capped.reason


def test_max_decrease_guardrail():
    ok = check_guardrail(THROUGHPUT, A, _scaled(A, 1.0), direction_of_metric="higher")
    assert ok.passed and "lower bound" in ok.reason
    bad = check_guardrail(THROUGHPUT, A, _scaled(A, 0.8), direction_of_metric="higher")
    assert not bad.passed and bad.violated


def test_all_zero_metric_passes_percentage_guardrail():
    g = Guardrail(metric="restarts", rule="max_increase_pct", value=0, text="no more restarts")
    c = check_guardrail(g, [0.0] * 5, [0.0] * 5)
    assert c.passed


def test_increase_from_a_zero_baseline_fails():
    g = Guardrail(metric="errors", rule="max_increase_pct", value=10, text="errors +10% max")
    c = check_guardrail(g, [0.0] * 5, [0.0, 2.0, 0.0, 1.0, 0.0])
    assert not c.passed and c.violated and "undefined" in c.reason


def test_remain_reports_offending_runs():
    c = check_guardrail(ERRORS, [0.0] * 3, [0.0, 0.0, 0.02])
    assert not c.passed and c.observed["offending_runs"] == [2]
    assert "run 2: 0.02" in c.reason
    assert check_guardrail(ERRORS, [], [0.0, 1e-12, 0.0]).passed  # within 1e-9


def test_all_b_runs_crashed():
    c = check_guardrail(P99, [50.0] * 3, [], failed_runs_b=3)
    assert not c.passed and c.violated and "all 3 B runs failed" in c.reason


# --- seed rule, warnings -------------------------------------------------------------------


def test_seed_rule_reference_values():
    d = decide([10.0, 11.0, 12.0], [7.0, 8.0, 9.0], metric="m", direction="lower")
    assert d.seed_rule_keep is True
    # N=10 with ~2% CV and a real 5% gain: ours keeps, the seed's rule often does not
    a, b = _noisy(10, 100, 0.02, 21), _noisy(10, 95, 0.02, 22)
    d = decide(a, b, metric="m", direction="lower")
    assert d.verdict is Verdict.KEEP and d.seed_rule_keep is False


def test_drift_and_outlier_warnings():
    trend = [100.0 * (1 + 0.01 * i) + (0.05 if i % 2 else -0.05) for i in range(10)]
    d = decide(trend, _noisy(10, 100, 0.01, 12), metric="m", direction="lower")
    assert any(w.startswith("drift: A values trend +0.96% per run") for w in d.warnings)
    spiky = [*A[:9], 140.0]
    d = decide(spiky, _scaled(A, 0.8), metric="m", direction="lower")
    assert any("outliers in A" in w and "run 9: 140" in w for w in d.warnings)
    assert d.verdict is Verdict.KEEP  # flagged, not dropped, and the gain still shows


def test_paired_with_unequal_lengths_falls_back_to_unpaired():
    d = decide(A, _scaled(A, 0.7)[:8], metric="m", direction="lower", paired=True)
    assert d.primary is not None and not d.primary.paired
    assert any("analysed unpaired" in w for w in d.warnings)


def test_paired_decision_uses_paired_comparison():
    d = decide(A, _scaled(A, 0.9, shift=0), metric="m", direction="lower", paired=True)
    assert d.primary.method == "exact" or d.primary.method == "paired-log"
    assert d.verdict is Verdict.KEEP


@pytest.mark.parametrize(("kwargs"), [{"min_effect_pct": -1.0}, {"failed_runs_b": -1}])
def test_decide_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        decide(A, A, metric="m", direction="lower", **kwargs)


# --- properties ----------------------------------------------------------------------------

values = st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=0, max_size=10)


@settings(max_examples=150, deadline=None)
@given(
    a=st.lists(st.floats(min_value=0, max_value=1e5), min_size=3, max_size=10),
    direction=st.sampled_from(["lower", "higher"]),
    delta=st.sampled_from([0.0, 1.0]),
    paired=st.booleans(),
)
def test_identical_samples_never_keep(a, direction, delta, paired):
    d = decide(a, list(a), metric="m", direction=direction, min_effect_pct=delta, paired=paired)
    assert d.verdict is not Verdict.KEEP
    _assert_json(d)


@settings(max_examples=150, deadline=None)
@given(
    a=values,
    b=values,
    ga=values,
    gb=values,
    failed=st.integers(0, 3),
    direction=st.sampled_from(["lower", "higher"]),
)
def test_decide_never_crashes_and_serialises(a, b, ga, gb, failed, direction):
    g = [(P99, ga, gb), (ERRORS, ga, gb), (THROUGHPUT, ga, gb)]
    d = decide(a, b, metric="m", direction=direction, guardrails=g, failed_runs_b=failed)
    _assert_json(d)
    if failed:
        assert d.verdict is not Verdict.KEEP  # the 'remain' guardrail counts the crash
