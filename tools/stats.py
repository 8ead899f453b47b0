"""Pure statistics for A/B benchmark runs: summaries, comparisons and sequential boundaries.

Conventions (see docs: stats-anchors-report, section 3):
- A is the baseline, B the candidate; every ratio is B/A.
- ``direction`` says which way is better: "lower" (RSS, latency) or "higher" (throughput).
- One value per process run. Comparisons work on log(value), so the effect is a ratio.
- Results cross the MCP boundary as JSON, so the models refuse NaN and inf; a value that
  does not exist is None and ``note`` says why.
- scipy and numpy are imported inside the functions that need them (fast server start).
"""

import itertools
import math
import statistics
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import numpy as np

Direction = Literal["lower", "higher"]
Method = Literal["welch-log", "paired-log", "welch-diff", "paired-diff", "exact"]
SpendingKind = Literal["obrien-fleming", "pocock"]

_FINITE = ConfigDict(allow_inf_nan=False)
_MAD_Z = 3.5  # modified z-score cut-off (Iglewicz & Hoaglin)
_RELATIVE_RESOLUTION = 1e-9
_EXACT_MWU_MAX_N = 50
_PERMUTATION_MAX = 20_000
_MAX_ABS = 1e150  # keeps squares and sums of values inside the float range
_LOG_FLOAT_MAX = math.log(sys.float_info.max)
_GRID_SPAN = 10.0  # W(t) has sd <= 1, so [-10, boundary] holds all the mass


class Summary(BaseModel):
    """Descriptive statistics of one arm's run values (outliers flagged, never dropped)."""

    model_config = _FINITE

    n: int
    mean: float
    median: float
    stddev: float
    cv: float | None
    min: float
    max: float
    mad: float
    outliers: list[int]


class Comparison(BaseModel):
    """B versus A for one metric; ratios are B/A.

    ``ci_low``/``ci_high`` form the two-sided ``confidence`` interval of the ratio.
    ``lower_bound``/``upper_bound`` are one-sided bounds at level 1 - ``one_sided_alpha``.
    ``gain_bound`` is the one-sided bound that must sit on the good side of 1 to claim a
    gain: ``upper_bound`` for lower-is-better, ``lower_bound`` for higher-is-better.
    ``regression_bound`` is the worst plausible ratio in the bad direction, which is the
    same one-sided bound; it is read against a non-inferiority margin instead of against 1.
    """

    model_config = _FINITE

    metric: str
    direction: Direction
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    median_a: float
    median_b: float
    diff_mean: float
    ratio_geomean: float | None
    ratio_median: float | None
    change_pct: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    lower_bound: float | None
    upper_bound: float | None
    gain_bound: float | None
    regression_bound: float | None
    one_sided_alpha: float
    p_gain: float
    p_mannwhitney: float | None
    df: float | None
    method: Method
    paired: bool
    note: str | None


class _Estimate(NamedTuple):
    d: float  # mean difference B - A on the analysis scale
    se: float
    df: float | None


def _floats(values: Sequence[float], name: str) -> list[float]:
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError(f"{name}: no values")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"{name}: every value must be finite (got NaN or inf)")
    if any(abs(x) > _MAX_ABS for x in xs):
        raise ValueError(f"{name}: values beyond +-{_MAX_ABS:g} are not measurements")
    return xs


def _is_constant(xs: Sequence[float]) -> bool:
    return min(xs) == max(xs)


def _mean(xs: Sequence[float]) -> float:
    return xs[0] if _is_constant(xs) else math.fsum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    """Sample variance (ddof=1); exactly 0 for constant data or n < 2."""
    if len(xs) < 2 or _is_constant(xs):
        return 0.0
    m = _mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


P_FLOOR = 1e-6


def format_p(p: float | None) -> str:
    """A p-value for people: two significant digits, '<1e-6' below that (never a bare 0)."""
    if p is None:
        return "-"
    return "<1e-6" if p < P_FLOOR else f"{p:.2g}"


def summarize(values: Sequence[float]) -> Summary:
    """Describe one arm; outliers have a modified z-score 0.6745*|x-median|/MAD > 3.5."""
    xs = _floats(values, "values")
    mean = _mean(xs)
    median = statistics.median(xs)
    sd = math.sqrt(_var(xs))
    mad = statistics.median(abs(x - median) for x in xs)
    outliers = []
    if mad > 0:
        outliers = [i for i, x in enumerate(xs) if 0.6745 * abs(x - median) / mad > _MAD_Z]
    return Summary(
        n=len(xs),
        mean=mean,
        median=median,
        stddev=sd,
        cv=_clip(sd / abs(mean)) if mean != 0 else None,
        min=min(xs),
        max=max(xs),
        mad=mad,
        outliers=outliers,
    )


def drift_slope(values: Sequence[float]) -> float | None:
    """Least-squares slope over run order as a fraction of |mean| per run (None if n < 3)."""
    xs = _floats(values, "values")
    n = len(xs)
    mean = _mean(xs)
    if n < 3 or mean == 0:
        return None
    centre = (n - 1) / 2
    sxx = math.fsum((i - centre) ** 2 for i in range(n))
    sxy = math.fsum((i - centre) * (x - mean) for i, x in enumerate(xs))
    return sxy / sxx / abs(mean)


def seed_rule(a: Sequence[float], b: Sequence[float], direction: Direction) -> bool:
    """The seed's rule: mean better by > 1 pooled SD (ddof=1) AND the ranges do not overlap."""
    xa, xb = _floats(a, "a"), _floats(b, "b")
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError("seed_rule needs at least 2 values per arm")
    pooled_sd = math.sqrt((_var(xa) + _var(xb)) / 2)
    if direction == "lower":
        return _mean(xa) - _mean(xb) > pooled_sd and max(xb) < min(xa)
    return _mean(xb) - _mean(xa) > pooled_sd and min(xb) > max(xa)


def _welch(ta: list[float], tb: list[float]) -> _Estimate:
    d = _mean(tb) - _mean(ta)
    sa, sb = _var(ta) / len(ta), _var(tb) / len(tb)
    if sa + sb == 0:
        return _Estimate(d, 0.0, None)
    top = max(sa, sb)  # scale before squaring so tiny variances cannot underflow
    ra, rb = sa / top, sb / top
    df = (ra + rb) ** 2 / (ra**2 / (len(ta) - 1) + rb**2 / (len(tb) - 1))
    return _Estimate(d, math.sqrt(sa + sb), df)


def _paired(ta: list[float], tb: list[float]) -> _Estimate:
    diffs = [y - x for x, y in zip(ta, tb, strict=True)]
    return _Estimate(_mean(diffs), math.sqrt(_var(diffs) / len(diffs)), len(diffs) - 1.0)


def _exp(x: float) -> float:
    """exp, saturating at the largest float (an interval end beyond ~1e308; noted)."""
    return math.exp(x) if x < _LOG_FLOAT_MAX else sys.float_info.max


def _clip(x: float) -> float:
    """Saturate an overflowed result at +-max float so that no inf escapes (noted)."""
    return x if math.isfinite(x) else math.copysign(sys.float_info.max, x)


def _saturated(effect: dict[str, Any]) -> bool:
    big = sys.float_info.max
    return any(isinstance(v, float) and abs(v) == big for v in effect.values())


def _check_args(
    xa: list[float], xb: list[float], paired: bool, confidence: float, alpha: float
) -> None:
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError(f"need at least 2 values per arm (got n_a={len(xa)}, n_b={len(xb)})")
    if paired and len(xa) != len(xb):
        raise ValueError(f"paired=True needs equal lengths (got {len(xa)} and {len(xb)})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"one_sided_alpha must be in (0, 0.5), got {alpha}")


def _mannwhitney(xa: list[float], xb: list[float], direction: Direction) -> float | None:
    """One-sided U-test p for "B better than A": exact without ties, permutation with ties."""
    from scipy import stats

    pooled = xa + xb
    if _is_constant(pooled):
        return 1.0  # every arrangement gives the same U: no evidence either way
    alternative = "less" if direction == "lower" else "greater"
    ties = len(set(pooled)) < len(pooled)
    if not ties and max(len(xa), len(xb)) <= _EXACT_MWU_MAX_N:
        method: object = "exact"
    elif ties and math.comb(len(pooled), len(xa)) <= _PERMUTATION_MAX:
        method = stats.PermutationMethod(n_resamples=_PERMUTATION_MAX)
    else:
        method = "asymptotic"
    p = float(stats.mannwhitneyu(xb, xa, alternative=alternative, method=method).pvalue)
    return min(max(p, 0.0), 1.0) if math.isfinite(p) else None


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric: str,
    direction: Direction,
    paired: bool = False,
    confidence: float = 0.95,
    one_sided_alpha: float = 0.05,
    resolution: float | None = None,
) -> Comparison:
    """Compare B with A on the log scale (Welch t, or paired t on log differences).

    ``confidence`` sets the two-sided CI; ``one_sided_alpha`` sets the one-sided bounds
    and so the KEEP/guardrail decisions (pass a sequential look's nominal alpha here).
    Values <= 0 make logs undefined: the ratio is then mean(B)/mean(A) with a Welch
    interval of the raw difference divided by mean(A) (None when mean(A) <= 0).
    When both arms are constant (or the paired differences are), the ratio is exact;
    arms within ``resolution`` (absolute, in metric units; default 1e-9 relative) are equal.
    Raises ValueError for empty, non-finite or too-short (< 2 per arm) input.
    """
    xa, xb = _floats(a, "a"), _floats(b, "b")
    _check_args(xa, xb, paired, confidence, one_sided_alpha)
    if resolution is not None and not resolution >= 0:
        raise ValueError(f"resolution must be >= 0, got {resolution}")
    log_scale = min(xa) > 0 and min(xb) > 0
    ta = [math.log(x) for x in xa] if log_scale else xa
    tb = [math.log(x) for x in xb] if log_scale else xb
    est = _paired(ta, tb) if paired else _welch(ta, tb)
    mean_a, mean_b = _mean(xa), _mean(xb)
    median_a, median_b = statistics.median(xa), statistics.median(xb)
    if est.se == 0:
        effect = _exact(xa, xb, est, log_scale, direction, paired, resolution)
    else:
        effect = _t_based(xa, xb, est, log_scale, direction, paired, confidence, one_sided_alpha)
    effect["ratio_median"] = _clip(median_b / median_a) if median_a > 0 else None
    if _saturated(effect):
        notes = [effect["note"]] if effect["note"] else []
        effect["note"] = "; ".join([*notes, "values beyond the float range are saturated"])
    return Comparison(
        metric=metric,
        direction=direction,
        n_a=len(xa),
        n_b=len(xb),
        mean_a=mean_a,
        mean_b=mean_b,
        median_a=median_a,
        median_b=median_b,
        diff_mean=mean_b - mean_a,
        confidence=confidence,
        one_sided_alpha=one_sided_alpha,
        p_mannwhitney=_mannwhitney(xa, xb, direction),
        paired=paired,
        **effect,
    )


def _ratio(d: float, log_scale: bool, mean_a: float) -> float | None:
    """B/A ratio for a difference d on the analysis scale (None if it does not exist)."""
    if log_scale:
        return _exp(d)
    return _clip(1 + d / mean_a) if mean_a > 0 else None


def _method(log_scale: bool, paired: bool) -> Method:
    if log_scale:
        return "paired-log" if paired else "welch-log"
    return "paired-diff" if paired else "welch-diff"


def _raw_note(mean_a: float) -> str:
    if mean_a > 0:
        return (
            "values <= 0 present, so logs are undefined: ratio_geomean is mean(B)/mean(A) "
            "and the intervals are Welch intervals of the raw difference divided by mean(A)"
        )
    return (
        f"values <= 0 present and mean(A) = {mean_a:g}, so no ratio exists; "
        "p_gain comes from the raw difference of means"
    )


def _bounds(
    direction: Direction, ratio: float | None, lower: float | None, upper: float | None
) -> dict[str, Any]:
    side = upper if direction == "lower" else lower
    return {
        "ratio_geomean": ratio,
        "change_pct": _clip(100 * (ratio - 1)) if ratio is not None else None,
        "lower_bound": lower,
        "upper_bound": upper,
        "gain_bound": side,
        "regression_bound": side,
    }


def _t_based(
    xa: list[float],
    xb: list[float],
    est: _Estimate,
    log_scale: bool,
    direction: Direction,
    paired: bool,
    confidence: float,
    alpha: float,
) -> dict[str, Any]:
    from scipy import stats

    df = est.df if est.df is not None else 1.0
    q2 = float(stats.t.isf((1 - confidence) / 2, df))
    q1 = float(stats.t.isf(alpha, df))
    t_stat = est.d / est.se
    p = stats.t.cdf(t_stat, df) if direction == "lower" else stats.t.sf(t_stat, df)
    mean_a = _mean(xa)
    notes = [] if log_scale else [_raw_note(mean_a)]
    for name, xs, other in (("A", xa, len(xb)), ("B", xb, len(xa))):
        if not paired and _is_constant(xs):
            notes.append(
                f"{name} has zero variance (every run {xs[0]:g}); the interval uses the "
                f"other arm's variance only (df = {other - 1})"
            )
    return {
        **_bounds(
            direction,
            _ratio(est.d, log_scale, mean_a),
            _ratio(est.d - q1 * est.se, log_scale, mean_a),
            _ratio(est.d + q1 * est.se, log_scale, mean_a),
        ),
        "ci_low": _ratio(est.d - q2 * est.se, log_scale, mean_a),
        "ci_high": _ratio(est.d + q2 * est.se, log_scale, mean_a),
        "p_gain": min(max(float(p), 0.0), 1.0),
        "df": df,
        "method": _method(log_scale, paired),
        "note": "; ".join(notes) or None,
    }


def _exact(
    xa: list[float],
    xb: list[float],
    est: _Estimate,
    log_scale: bool,
    direction: Direction,
    paired: bool,
    resolution: float | None,
) -> dict[str, Any]:
    """Zero variance on both arms (or in every paired difference): the ratio is exact."""
    mean_a, mean_b = _mean(xa), _mean(xb)
    scale = max(abs(mean_a), abs(mean_b))
    res = _RELATIVE_RESOLUTION * scale if resolution is None else resolution
    slack = 1e-12 * scale  # so that 100.004 - 100.0 counts as one 0.004 step
    if paired:
        gap = max(abs(y - x) for x, y in zip(xa, xb, strict=True))
        what = "every paired difference is identical"
    else:
        gap = abs(mean_b - mean_a)
        what = "both arms have zero variance"
    if gap <= res + slack:
        ratio: float | None = 1.0
        p_gain = 1.0
        note = f"{what} and B is within the resolution {res:g} of A: treated as equal"
    else:
        exact_quotient = log_scale and not paired
        ratio = _clip(xb[0] / xa[0]) if exact_quotient else _ratio(est.d, log_scale, mean_a)
        better = est.d < 0 if direction == "lower" else est.d > 0
        p_gain = 0.0 if better else 1.0
        note = (
            f"{what}: the ratio is exact (CI [r, r]); B differs from A by {gap:g}, "
            f"more than the resolution {res:g}, so p_gain is {p_gain:g}"
        )
        if not log_scale:
            note += "; " + _raw_note(mean_a)
    return {
        **_bounds(direction, ratio, ratio, ratio),
        "ci_low": ratio,
        "ci_high": ratio,
        "p_gain": p_gain,
        "df": None,
        "method": "exact",
        "note": note,
    }


def _spent(t: float, alpha: float, kind: SpendingKind) -> float:
    """Cumulative one-sided alpha spent at information fraction t (Lan-DeMets)."""
    from scipy import stats

    if kind == "obrien-fleming":
        return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(t)))
    return alpha * math.log1p((math.e - 1) * t)


def sequential_boundaries(
    looks: Sequence[int], alpha: float = 0.05, kind: SpendingKind = "obrien-fleming"
) -> list[float]:
    """Nominal one-sided alpha for each planned look (n per arm at each look).

    Lan-DeMets alpha spending with the O'Brien-Fleming-type function
    2*(1 - Phi(z_{1-alpha/2}/sqrt(t))) or the Pocock-type alpha*ln(1 + (e-1)*t), where
    t = n_k / n_K is the information fraction. Boundaries come from the exact recursive
    numerical integration of the Brownian-motion sub-densities (Armitage-McPherson-Rowe)
    and are converted to nominal one-sided p-value levels; applying them to small-sample
    t statistics is the usual approximation (checked by simulation in bench/simulate.py).
    No futility boundary is spent: futility stops are non-binding.
    """
    ns = [int(n) for n in looks]
    if not ns or ns[0] < 1 or any(b <= a for a, b in itertools.pairwise(ns)):
        raise ValueError(f"looks must be strictly increasing positive run counts, got {ns}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    times = [n / ns[-1] for n in ns]
    spent = [_spent(t, alpha, kind) for t in times]
    increments = [spent[0]] + [max(b - a, 0.0) for a, b in itertools.pairwise(spent)]
    return _nominal_levels(times, increments)


def _trapezoid_grid(top: float, h: float) -> "np.ndarray":
    import numpy as np

    top = min(top, _GRID_SPAN)
    return np.linspace(-_GRID_SPAN, top, max(int((top + _GRID_SPAN) / h) + 1, 3))


def _nominal_levels(times: list[float], increments: list[float]) -> list[float]:
    """Solve each look's z boundary so that it spends exactly its alpha increment.

    Tracks the sub-density of W(t) = sqrt(t) * Z(t) over the continuation region on a
    grid; the probability of first crossing at the next look is a Gaussian integral.
    """
    import numpy as np
    from scipy import stats

    steps = [math.sqrt(b - a) for a, b in itertools.pairwise(times)]
    h = min([0.01, *(s / 8 for s in steps)])
    z = float(stats.norm.isf(increments[0]))
    levels = [increments[0]]
    grid = _trapezoid_grid(z * math.sqrt(times[0]), h)
    dens = stats.norm.pdf(grid, scale=math.sqrt(times[0]))
    for t, s, inc in zip(times[1:], steps, increments[1:], strict=True):
        weights = np.full(grid.size, grid[1] - grid[0])
        weights[[0, -1]] /= 2
        mass = weights * dens
        z = _solve_boundary(grid, mass, math.sqrt(t), s, inc)
        levels.append(float(stats.norm.sf(z)))
        new = _trapezoid_grid(z * math.sqrt(t), h)
        dens = stats.norm.pdf((new[:, None] - grid[None, :]) / s) @ mass / s
        grid = new
    return levels


def _solve_boundary(
    grid: "np.ndarray", mass: "np.ndarray", root_t: float, step: float, increment: float
) -> float:
    """The z such that P(continue so far, then Z(t) >= z) equals the increment."""
    from scipy import optimize, stats

    def excess(z: float) -> float:
        return float(mass @ stats.norm.sf((z * root_t - grid) / step)) - increment

    return float(optimize.brentq(excess, -_GRID_SPAN, 40.0, xtol=1e-10))


LatencyEstimator = Literal["p99", "median_of_windows", "trimmed"]
WINDOWS = 5


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("quantile of no values")
    pos = q * (len(xs) - 1)
    low = int(pos)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (pos - low)


def latency_estimate(
    latencies: Sequence[float], estimator: LatencyEstimator, q: float = 0.99
) -> float:
    """One run's tail latency from its requests' latencies (in completion order).

    - p99: the q-quantile of all of them.
    - median_of_windows: the requests cut into WINDOWS consecutive windows, the median of
      the windows' q-quantiles: one window hit by a hiccup (a GC, another process) moves it
      little.
    - trimmed: the mean of the windows' q-quantiles without the highest and the lowest.
    Too few requests for windows (fewer than 20 per window) fall back to p99.
    """
    xs = _floats(latencies, "latencies")
    if estimator == "p99" or len(xs) < 20 * WINDOWS:
        return quantile(xs, q)
    size = len(xs) / WINDOWS
    tails = sorted(
        quantile(xs[round(k * size) : round((k + 1) * size)], q) for k in range(WINDOWS)
    )
    if estimator == "median_of_windows":
        return statistics.median(tails)
    return math.fsum(tails[1:-1]) / (WINDOWS - 2)
