"""Tests for autoopt.tools.stats: scipy references, hand-computed cases, edge cases, properties."""

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from autoopt.tools.stats import (
    compare,
    drift_slope,
    seed_rule,
    sequential_boundaries,
    summarize,
)

RNG = np.random.default_rng(2024)
TOL = 1e-9


def _sample(n: int, scale: float = 100.0, cv: float = 0.05) -> list[float]:
    return list(scale * np.exp(cv * RNG.standard_normal(n)))


def _all_finite(obj: object) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_all_finite(v) for v in obj)
    return True


def _json_ok(model: object) -> None:
    text = model.model_dump_json()  # type: ignore[attr-defined]
    assert "NaN" not in text and "Infinity" not in text
    assert _all_finite(json.loads(text))


# --- summarize -------------------------------------------------------------------------


def test_summarize_hand_computed_with_outlier():
    s = summarize([1, 2, 3, 4, 100])
    assert s.n == 5
    assert s.mean == 22
    assert s.median == 3
    assert s.stddev == pytest.approx(statistics.stdev([1, 2, 3, 4, 100]))
    assert s.cv == pytest.approx(s.stddev / 22)
    assert (s.min, s.max) == (1, 100)
    assert s.mad == 1  # |x - 3| = 2, 1, 0, 1, 97
    assert s.outliers == [4]  # 0.6745 * 97 / 1 > 3.5; 0.6745 * 2 is not


def test_summarize_constant_and_single_value():
    s = summarize([5.0, 5.0, 5.0])
    assert (s.stddev, s.mad, s.cv, s.outliers) == (0.0, 0.0, 0.0, [])
    one = summarize([7.0])
    assert one.stddev == 0.0 and one.n == 1


def test_summarize_zero_mean_has_no_cv():
    assert summarize([-1.0, 1.0]).cv is None


def test_summarize_mad_zero_flags_nothing():
    assert summarize([3.0, 3.0, 3.0, 3.0, 50.0]).outliers == []


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf"), 1.0]])
def test_summarize_rejects_empty_and_non_finite(bad):
    with pytest.raises(ValueError):
        summarize(bad)


# --- compare against scipy -------------------------------------------------------------


@pytest.mark.parametrize("direction", ["lower", "higher"])
@pytest.mark.parametrize(("n_a", "n_b"), [(5, 5), (3, 8), (10, 10)])
def test_welch_log_matches_scipy(direction, n_a, n_b):
    a, b = _sample(n_a), _sample(n_b, scale=93.0, cv=0.08)
    la, lb = np.log(a), np.log(b)
    c = compare(a, b, metric="m", direction=direction)
    alt = "less" if direction == "lower" else "greater"
    ref = stats.ttest_ind(lb, la, equal_var=False, alternative=alt)
    assert c.method == "welch-log" and not c.paired
    assert c.p_gain == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.df == pytest.approx(ref.df, rel=1e-9)
    two = stats.ttest_ind(lb, la, equal_var=False).confidence_interval(0.95)
    assert c.ci_low == pytest.approx(math.exp(two.low), rel=1e-9)
    assert c.ci_high == pytest.approx(math.exp(two.high), rel=1e-9)
    upper = stats.ttest_ind(lb, la, equal_var=False, alternative="less").confidence_interval(0.95)
    lower = stats.ttest_ind(lb, la, equal_var=False, alternative="greater")
    assert c.upper_bound == pytest.approx(math.exp(upper.high), rel=1e-9)
    assert c.lower_bound == pytest.approx(math.exp(lower.confidence_interval(0.95).low), rel=1e-9)
    expected_gain_bound = c.upper_bound if direction == "lower" else c.lower_bound
    assert c.gain_bound == c.regression_bound == expected_gain_bound
    assert c.ratio_geomean == pytest.approx(math.exp(lb.mean() - la.mean()), rel=1e-12)
    assert c.change_pct == pytest.approx(100 * (c.ratio_geomean - 1))
    mwu = stats.mannwhitneyu(b, a, alternative=alt, method="exact")
    assert c.p_mannwhitney == pytest.approx(mwu.pvalue, rel=1e-12)


@pytest.mark.parametrize("direction", ["lower", "higher"])
def test_paired_log_matches_scipy(direction):
    a = _sample(8)
    b = [x * y for x, y in zip(a, np.exp(-0.03 + 0.01 * RNG.standard_normal(8)), strict=True)]
    la, lb = np.log(a), np.log(b)
    c = compare(a, b, metric="m", direction=direction, paired=True)
    alt = "less" if direction == "lower" else "greater"
    ref = stats.ttest_rel(lb, la, alternative=alt)
    assert c.method == "paired-log" and c.paired and c.df == 7
    assert c.p_gain == pytest.approx(ref.pvalue, rel=1e-9)
    ci = stats.ttest_rel(lb, la).confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))
    ci90 = stats.ttest_rel(lb, la).confidence_interval(0.90)  # one-sided 95% bounds
    assert (c.lower_bound, c.upper_bound) == pytest.approx(
        (math.exp(ci90.low), math.exp(ci90.high))
    )


def test_confidence_and_one_sided_alpha_are_independent():
    a, b = _sample(6), _sample(6, scale=97.0)
    base = compare(a, b, metric="m", direction="lower")
    strict = compare(a, b, metric="m", direction="lower", one_sided_alpha=0.001)
    assert (strict.ci_low, strict.ci_high) == (base.ci_low, base.ci_high)
    assert strict.upper_bound > base.upper_bound and strict.lower_bound < base.lower_bound
    assert strict.p_gain == base.p_gain


def test_hand_computed_geometric_mean_ratio():
    # geomean(A) = sqrt(2*8) = 4, geomean(B) = sqrt(1*4) = 2: B/A = 0.5
    c = compare([2.0, 8.0], [1.0, 4.0], metric="m", direction="lower")
    assert c.ratio_geomean == pytest.approx(0.5)
    assert c.change_pct == pytest.approx(-50.0)
    assert c.ratio_median == pytest.approx(2.5 / 5.0)
    assert (c.mean_a, c.mean_b, c.median_a, c.median_b) == (5.0, 2.5, 5.0, 2.5)
    # var of logs is 2*ln(2)^2 per arm -> se = sqrt(2)*ln 2, Welch df = 2
    se = math.sqrt(2) * math.log(2)
    q = stats.t.isf(0.025, 2)
    assert c.df == pytest.approx(2.0)
    assert c.ci_low == pytest.approx(0.5 * math.exp(-q * se))
    assert c.ci_high == pytest.approx(0.5 * math.exp(q * se))


@pytest.mark.filterwarnings("ignore:Precision loss")
def test_one_constant_arm_uses_the_other_arms_variance():
    a, b = [1.0, 2.0, 4.0], [3.0, 3.0, 3.0]  # geomean(A) = 2, B constant 3
    c = compare(a, b, metric="m", direction="lower")
    assert c.method == "welch-log"
    assert c.ratio_geomean == pytest.approx(1.5)
    assert c.df == pytest.approx(2.0)
    se = math.log(2) / math.sqrt(3)  # var(log A) = ln(2)^2
    q = stats.t.isf(0.025, 2)
    assert c.ci_low == pytest.approx(1.5 * math.exp(-q * se))
    assert c.ci_high == pytest.approx(1.5 * math.exp(q * se))
    ref = stats.ttest_ind(np.log(b), np.log(a), equal_var=False, alternative="less")
    assert c.p_gain == pytest.approx(ref.pvalue)
    assert "B has zero variance" in c.note
    _json_ok(c)


# --- zero variance -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Precision loss")
def test_both_constant_and_equal():
    scipy_p = stats.ttest_ind([5.0] * 4, [5.0] * 4, equal_var=False).pvalue
    assert math.isnan(scipy_p)  # the trap this case guards against
    c = compare([5.0] * 4, [5.0] * 4, metric="m", direction="lower")
    assert c.method == "exact"
    assert (c.ratio_geomean, c.ci_low, c.ci_high, c.gain_bound) == (1.0, 1.0, 1.0, 1.0)
    assert c.p_gain == 1.0 and c.change_pct == 0.0
    assert "resolution" in c.note
    _json_ok(c)


@pytest.mark.parametrize(("direction", "p"), [("lower", 0.0), ("higher", 1.0)])
def test_both_constant_and_different(direction, p):
    c = compare([100.0] * 5, [70.0] * 5, metric="rss", direction=direction)
    assert c.method == "exact"
    assert c.ratio_geomean == pytest.approx(0.7)
    assert c.ci_low == c.ci_high == c.lower_bound == c.upper_bound == c.ratio_geomean
    assert c.p_gain == p
    assert "exact" in c.note and c.df is None
    _json_ok(c)


def test_resolution_decides_whether_constants_differ():
    a, b = [100.0] * 3, [100.004] * 3  # one 4 KiB page in MB
    same = compare(a, b, metric="rss", direction="lower", resolution=0.004)
    assert same.ratio_geomean == 1.0 and same.p_gain == 1.0
    assert "within the resolution" in same.note
    differ = compare(a, b, metric="rss", direction="higher", resolution=0.001)
    assert differ.ratio_geomean == pytest.approx(1.00004)
    assert differ.p_gain == 0.0
    with pytest.raises(ValueError):
        compare(a, b, metric="rss", direction="lower", resolution=-1.0)


def test_paired_constant_ratio_is_exact():
    c = compare([1.0, 2.0, 4.0], [0.5, 1.0, 2.0], metric="m", direction="lower", paired=True)
    assert c.ratio_geomean == pytest.approx(0.5)
    assert c.p_gain in (0.0, 1.0) or c.p_gain < 1e-6
    _json_ok(c)


# --- non-positive values ------------------------------------------------------------------


def test_all_zero_on_both_sides():
    c = compare([0.0] * 5, [0.0] * 5, metric="error_rate", direction="lower")
    assert (c.ratio_geomean, c.ci_low, c.ci_high, c.p_gain) == (1.0, 1.0, 1.0, 1.0)
    assert c.method == "exact" and c.note
    _json_ok(c)


def test_zeros_fall_back_to_raw_difference():
    a, b = [0.0, 0.02, 0.01, 0.0], [0.0, 0.0, 0.01, 0.0]
    c = compare(a, b, metric="error_rate", direction="lower")
    assert c.method == "welch-diff"
    assert c.ratio_geomean == pytest.approx(statistics.mean(b) / statistics.mean(a))
    ref = stats.ttest_ind(b, a, equal_var=False, alternative="less")
    assert c.p_gain == pytest.approx(ref.pvalue)
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    mean_a = statistics.mean(a)
    assert c.ci_low == pytest.approx(1 + ci.low / mean_a)
    assert c.ci_high == pytest.approx(1 + ci.high / mean_a)
    assert "logs are undefined" in c.note
    _json_ok(c)


def test_zero_baseline_has_no_ratio():
    c = compare([0.0] * 4, [0.0, 0.1, 0.0, 0.2], metric="restarts", direction="lower")
    assert c.ratio_geomean is None and c.ci_low is None and c.gain_bound is None
    assert c.change_pct is None
    assert 0.5 < c.p_gain < 1.0  # B is worse, but not with certainty
    assert c.diff_mean == pytest.approx(0.075)
    assert "no ratio" in c.note
    _json_ok(c)


def test_mannwhitney_with_ties_is_an_exact_permutation_p():
    a, b = [3.0, 3.0, 4.0, 5.0], [1.0, 3.0, 3.0, 2.0]
    c = compare(a, b, metric="m", direction="lower")
    ref = stats.mannwhitneyu(
        b, a, alternative="less", method=stats.PermutationMethod(n_resamples=10**5)
    )
    assert c.p_mannwhitney == pytest.approx(ref.pvalue)


@pytest.mark.parametrize(
    ("a", "b", "kwargs"),
    [
        ([], [1.0, 2.0], {}),
        ([1.0], [1.0, 2.0], {}),
        ([1.0, float("nan")], [1.0, 2.0], {}),
        ([1.0, 2.0, 3.0], [1.0, 2.0], {"paired": True}),
        ([1.0, 2.0], [1.0, 2.0], {"confidence": 1.0}),
        ([1.0, 2.0], [1.0, 2.0], {"one_sided_alpha": 0.5}),
    ],
)
def test_compare_rejects_bad_input(a, b, kwargs):
    with pytest.raises(ValueError):
        compare(a, b, metric="m", direction="lower", **kwargs)


# --- drift, seed rule ----------------------------------------------------------------------


def test_drift_slope():
    assert drift_slope([1.0, 2.0, 3.0]) == pytest.approx(0.5)  # slope 1, mean 2
    assert drift_slope([4.0, 4.0, 4.0]) == 0.0
    assert drift_slope([1.0, 2.0]) is None
    xs = _sample(12)
    slope = np.polyfit(np.arange(12), xs, 1)[0]
    assert drift_slope(xs) == pytest.approx(slope / np.mean(xs))


def _seed_vectorised(a: list[float], b: list[float]) -> bool:
    """The research report's formula (lower is better)."""
    aa, bb = np.array([a]), np.array([b])
    sp = np.sqrt((aa.var(1, ddof=1) + bb.var(1, ddof=1)) / 2)
    return bool(((aa.mean(1) - bb.mean(1) > sp) & (bb.max(1) < aa.min(1)))[0])


def test_seed_rule_known_values():
    assert seed_rule([10, 11, 12], [7, 8, 9], "lower") is True
    assert seed_rule([10, 11, 12], [8, 9, 10.5], "lower") is False  # ranges overlap
    # no overlap, but the 19-unit gain is below one pooled SD (28.5)
    assert seed_rule([10, 10, 10, 10, 100], [9, 9, 9, 9, 9], "lower") is False
    assert seed_rule([7, 8, 9], [10, 11, 12], "higher") is True
    assert seed_rule([7, 8, 9], [10, 11, 12], "lower") is False
    with pytest.raises(ValueError):
        seed_rule([1.0], [2.0, 3.0], "lower")


def test_seed_rule_matches_report_formula():
    for _ in range(200):
        a, b = _sample(4, cv=0.02), _sample(4, scale=97.0, cv=0.02)
        assert seed_rule(a, b, "lower") is _seed_vectorised(a, b)


# --- sequential boundaries ---------------------------------------------------------------


def test_single_look_spends_everything():
    assert sequential_boundaries([20], 0.05) == pytest.approx([0.05])
    assert sequential_boundaries([20], 0.05, "pocock") == pytest.approx([0.05])


def test_obrien_fleming_matches_published_lan_demets_values():
    # gsDesign sfLDOF, K=4 equal looks, one-sided 0.025: z = 4.3326, 2.9631, 2.3590, 2.0141
    levels = sequential_boundaries([1, 2, 3, 4], 0.025)
    z = [stats.norm.isf(x) for x in levels]
    assert z == pytest.approx([4.3326, 2.9631, 2.3590, 2.0141], abs=2e-4)


@pytest.mark.parametrize("kind", ["obrien-fleming", "pocock"])
def test_boundaries_keep_overall_alpha_by_monte_carlo(kind):
    looks = [5, 10, 15, 20]
    levels = sequential_boundaries(looks, 0.05, kind)
    assert all(0 < x < 0.05 for x in levels)
    rng = np.random.default_rng(11)
    inc = rng.standard_normal((200_000, 4)) * np.sqrt(np.diff([0, *looks]))
    z = np.cumsum(inc, axis=1) / np.sqrt(looks)
    crossed = (z >= stats.norm.isf(levels)).any(axis=1).mean()
    assert crossed == pytest.approx(0.05, abs=0.0025)
    naive = (z >= stats.norm.isf(0.05)).any(axis=1).mean()
    assert naive > 0.08  # peeking without boundaries inflates the error


def test_obrien_fleming_is_strict_early_and_pocock_is_flat():
    obf = sequential_boundaries([5, 10, 15, 20], 0.05)
    poc = sequential_boundaries([5, 10, 15, 20], 0.05, "pocock")
    assert obf == sorted(obf) and obf[0] < 1e-3 and obf[-1] > 0.04
    assert max(poc) / min(poc) < 1.3


@pytest.mark.parametrize(
    ("looks", "alpha"), [([], 0.05), ([5, 5], 0.05), ([0, 5], 0.05), ([5, 10], 0.6)]
)
def test_sequential_boundaries_reject_bad_plans(looks, alpha):
    with pytest.raises(ValueError):
        sequential_boundaries(looks, alpha)


# --- properties ----------------------------------------------------------------------------

positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(positive, min_size=2, max_size=12)
directions = st.sampled_from(["lower", "higher"])


@settings(max_examples=200, deadline=None)
@given(a=samples, b=samples, direction=directions)
def test_swapping_arms_inverts_the_ratio(a, b, direction):
    ab = compare(a, b, metric="m", direction=direction)
    ba = compare(b, a, metric="m", direction=direction)
    assert ab.ratio_geomean * ba.ratio_geomean == pytest.approx(1.0, rel=1e-9)
    assert ab.ci_low * ba.ci_high == pytest.approx(1.0, rel=1e-9)
    assert ab.ci_high * ba.ci_low == pytest.approx(1.0, rel=1e-9)
    assert ab.lower_bound * ba.upper_bound == pytest.approx(1.0, rel=1e-9)
    assert ab.ci_low <= ab.ratio_geomean <= ab.ci_high
    assert ab.lower_bound <= ab.ratio_geomean <= ab.upper_bound
    if ab.method != "exact":
        assert ab.p_gain + ba.p_gain == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(a=samples, direction=directions, shuffle=st.randoms())
def test_identical_samples_never_show_a_gain(a, direction, shuffle):
    b = list(a)
    shuffle.shuffle(b)
    c = compare(a, b, metric="m", direction=direction)
    assert c.ratio_geomean == pytest.approx(1.0, rel=1e-12)
    if direction == "lower":
        assert c.gain_bound >= 1.0
    else:
        assert c.gain_bound <= 1.0
    assert c.p_gain >= 0.5


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(min_value=0, max_value=1e6),
    n=st.integers(2, 8),
    other=st.one_of(st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=8)),
    direction=directions,
    paired=st.booleans(),
)
def test_constant_samples_never_crash_or_leak_nan(value, n, other, direction, paired):
    a = [value] * n
    b = other[:n] if paired and len(other) >= n else ([value] * n if paired else other)
    for x, y in ((a, b), (b, a), (a, list(a))):
        c = compare(x, y, metric="m", direction=direction, paired=paired)
        _json_ok(c)
        assert 0.0 <= c.p_gain <= 1.0


raw = st.lists(st.integers(-1000, 1000).map(lambda i: i / 10), min_size=2, max_size=10)


@settings(max_examples=200, deadline=None)
@given(a=raw, b=raw, direction=directions)
def test_any_finite_values_give_json_without_nan(a, b, direction):
    c = compare(a, b, metric="m", direction=direction)
    _json_ok(c)
    assert summarize(a).model_dump_json()
