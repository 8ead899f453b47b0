"""KEEP / SAME / DISCARD / INCONCLUSIVE / FAILED for one A/B comparison plus its guardrails.

The rule (stats-anchors-report, section 3), in order of precedence:
- FAILED when an arm has no usable value at all (every run crashed, failed its health
  check or measured nothing): there is nothing to compare; the reason is the first error.
- DISCARD when a guardrail is shown broken, or when even the best plausible gain (the
  optimistic one-sided bound) is below ``min_effect_pct`` (a non-binding futility stop)
  and the change is not shown to lie within +-``min_effect_pct`` (it may be a loss).
- KEEP only when the primary metric's one-sided bound shows a gain (``gain_bound`` on the
  good side of 1), the point estimate gains at least ``min_effect_pct``, and every
  guardrail passes. This is an intersection-union test: false-KEEP stays <= alpha.
- SAME when both one-sided bounds of the ratio lie inside (1 - delta, 1 + delta), delta =
  ``min_effect_pct`` / 100: an equivalence test (TOST) on the log ratio at the same alpha,
  i.e. the two-sided 1 - 2*alpha interval (90% for 0.05) inside +-delta on the log scale.
  The change is shown too small to matter either way; an A/A run on a quiet metric ends
  here. SAME and KEEP cannot both hold (SAME bounds the best gain below delta).
- INCONCLUSIVE otherwise: add runs. At the run cap of a sequential design
  (``final_look`` and ``inconclusive_is_discard``) INCONCLUSIVE becomes DISCARD.
A guardrail that is merely not yet shown to hold (its bound straddles the limit) leaves the
experiment INCONCLUSIVE (or SAME: no KEEP needs it) — add runs; one shown broken discards.
"""

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from autoopt.tools.stats import Comparison, Direction, compare, seed_rule, summarize
from autoopt.tools.targets import Guardrail

MIN_RUNS = 3
RECOMMENDED_RUNS = 5
DRIFT_P = 0.01
_REMAIN_TOL = 1e-9

GuardrailInput = tuple[Guardrail, Sequence[float], Sequence[float]]


class Verdict(StrEnum):
    KEEP = "KEEP"
    SAME = "SAME"
    DISCARD = "DISCARD"
    INCONCLUSIVE = "INCONCLUSIVE"
    FAILED = "FAILED"


class GuardrailCheck(BaseModel):
    """One guardrail's outcome; ``violated`` means shown broken, not merely unproven."""

    guardrail: Guardrail
    passed: bool
    violated: bool
    reason: str
    observed: dict[str, Any]


class Decision(BaseModel):
    """The verdict, a plain-English reason, and the numbers behind it."""

    model_config = ConfigDict(allow_inf_nan=False)

    verdict: Verdict
    reason: str
    primary: Comparison | None
    guardrails: list[GuardrailCheck]
    min_effect_pct: float
    one_sided_alpha: float
    seed_rule_keep: bool
    warnings: list[str]
    look: int | None
    final_look: bool


def _pct(x: float) -> str:
    """Signed percentage with sensible precision: +3.1%, -0.42%, 0%."""
    if x == 0:
        return "0%"
    return f"{x:+.1f}%" if abs(x) >= 1 else f"{x:+.2g}%"


def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):.4g}%"


def _as_pct(ratio: float) -> float:
    return 100 * (ratio - 1)


def _gain_pct(ratio: float, direction: Direction) -> float:
    """How much better B is than A, in %, for a B/A ratio (negative: worse)."""
    return 100 * (1 - ratio) if direction == "lower" else 100 * (ratio - 1)


def _best_bound(c: Comparison) -> float | None:
    """The optimistic one-sided bound: the most favourable plausible ratio."""
    return c.lower_bound if c.direction == "lower" else c.upper_bound


def _fail(g: Guardrail, reason: str, violated: bool, **observed: Any) -> GuardrailCheck:
    return GuardrailCheck(
        guardrail=g, passed=False, violated=violated, reason=reason, observed=observed
    )


def check_guardrail(
    g: Guardrail,
    a_values: Sequence[float],
    b_values: Sequence[float],
    *,
    direction_of_metric: Direction = "lower",
    failed_runs_b: int = 0,
    paired: bool = False,
    one_sided_alpha: float = 0.05,
) -> GuardrailCheck:
    """Check one guardrail.

    - max_increase_pct P (non-inferiority): one-sided upper bound of B/A < 1 + P/100.
    - max_decrease_pct P: one-sided lower bound of B/A > 1 - P/100.
    - remain V: every B run equals V (within 1e-9) and no B run failed.
    A metric that is 0 in every run on both sides passes the percentage rules.
    """
    xa, xb = [float(x) for x in a_values], [float(x) for x in b_values]
    if not xb:
        why = f"all {failed_runs_b} B runs failed" if failed_runs_b else "no B values recorded"
        reason = f"{g.metric}: {why}, so '{g.text}' cannot hold"
        return _fail(g, reason, True, n_b=0, failed_runs_b=failed_runs_b)
    if g.rule == "remain":
        return _check_remain(g, xb, failed_runs_b)
    return _check_bound(g, xa, xb, direction_of_metric, paired, one_sided_alpha)


def _check_remain(g: Guardrail, xb: list[float], failed_runs_b: int) -> GuardrailCheck:
    off = [
        (i, x)
        for i, x in enumerate(xb)
        if not math.isclose(x, g.value, rel_tol=_REMAIN_TOL, abs_tol=_REMAIN_TOL)
    ]
    observed = {
        "n_b": len(xb),
        "failed_runs_b": failed_runs_b,
        "offending_runs": [i for i, _ in off],
        "offending_values": [x for _, x in off],
    }
    if not off and failed_runs_b == 0:
        reason = f"{g.metric} remained {g.value:g} in every B run ({len(xb)} runs)"
        return GuardrailCheck(
            guardrail=g, passed=True, violated=False, reason=reason, observed=observed
        )
    parts = []
    if off:
        shown = ", ".join(f"run {i}: {x:g}" for i, x in off[:5])
        parts.append(f"{len(off)} of {len(xb)} B runs differ ({shown})")
    if failed_runs_b:
        parts.append(f"{failed_runs_b} B run(s) failed, which counts against it")
    reason = f"{g.metric} must remain {g.value:g}: " + "; ".join(parts)
    return _fail(g, reason, True, **observed)


def _check_bound(
    g: Guardrail,
    xa: list[float],
    xb: list[float],
    direction: Direction,
    paired: bool,
    alpha: float,
) -> GuardrailCheck:
    if len(xa) < 2 or len(xb) < 2:
        reason = (
            f"{g.metric}: too few runs to bound the change (n_a={len(xa)}, n_b={len(xb)}; "
            "at least 2 per arm)"
        )
        return _fail(g, reason, False, n_a=len(xa), n_b=len(xb))
    if all(x == 0 for x in xa + xb):
        reason = f"{g.metric} was 0 in every run on both sides"
        return GuardrailCheck(
            guardrail=g, passed=True, violated=False, reason=reason, observed={"all_zero": True}
        )
    c = compare(
        xa,
        xb,
        metric=g.metric,
        direction=direction,
        paired=paired and len(xa) == len(xb),
        one_sided_alpha=alpha,
    )
    increase = g.rule == "max_increase_pct"
    if c.lower_bound is None or c.upper_bound is None or c.change_pct is None:
        worse = c.mean_b > c.mean_a if increase else c.mean_b < c.mean_a
        reason = (
            f"{g.metric}: the baseline mean is {c.mean_a:g}, so a percentage change is "
            f"undefined (B mean {c.mean_b:g}); use a 'remain' guardrail for counts"
        )
        return _fail(g, reason, worse, mean_a=c.mean_a, mean_b=c.mean_b, method=c.method)
    limit = 1 + g.value / 100 if increase else 1 - g.value / 100
    bound, best = (c.upper_bound, c.lower_bound) if increase else (c.lower_bound, c.upper_bound)
    passed = bound < limit if increase else bound > limit
    violated = best >= limit if increase else best <= limit
    side, sign = ("upper", "<") if increase else ("lower", ">")
    verdict_sign = sign if passed else (">=" if increase else "<=")
    reason = (
        f"{g.metric} {_pct(c.change_pct)} (one-sided {_level(alpha)} {side} bound "
        f"{_pct(_as_pct(bound))} {verdict_sign} {_pct(_as_pct(limit))} allowed)"
    )
    observed = {
        "change_pct": c.change_pct,
        "bound_pct": _as_pct(bound),
        "limit_pct": _as_pct(limit),
        "n_a": c.n_a,
        "n_b": c.n_b,
        "method": c.method,
        "one_sided_alpha": alpha,
    }
    return GuardrailCheck(
        guardrail=g, passed=passed, violated=violated, reason=reason, observed=observed
    )


def _primary_text(c: Comparison) -> str:
    if c.change_pct is None:
        return f"{c.metric} mean {c.mean_a:g} -> {c.mean_b:g} (no ratio: {c.note})"
    verb = "fell" if c.change_pct < 0 else "rose" if c.change_pct > 0 else "did not change"
    size = f" {abs(c.change_pct):.3g}%" if c.change_pct else ""
    if c.method == "exact":
        return f"{c.metric} {verb}{size} (exact ratio: no run-to-run variance)"
    assert c.ci_low is not None and c.ci_high is not None
    level = f"{100 * c.confidence:.4g}%"
    ci = f"{level} CI {_pct(_as_pct(c.ci_low))} to {_pct(_as_pct(c.ci_high))}"
    return f"{c.metric} {verb}{size} ({ci})"


def _within(c: Comparison, min_effect_pct: float) -> bool:
    """Equivalence: both one-sided bounds of the ratio inside (1 - delta, 1 + delta)."""
    lo, hi = c.lower_bound, c.upper_bound
    if lo is None or hi is None:
        return False
    delta = min_effect_pct / 100
    return (1 - delta < lo and hi < 1 + delta) or lo == hi == 1.0


def _rule_verdict(
    c: Comparison, checks: list[GuardrailCheck], min_effect_pct: float
) -> tuple[Verdict, str]:
    """Apply the rule (before any run-cap conversion); the text has no verdict in front."""
    head = _primary_text(c)
    if c.gain_bound is None or c.ratio_geomean is None:
        return Verdict.INCONCLUSIVE, f"{head}; no % change can be judged"
    failed = [k for k in checks if k.violated]
    unproven = [k for k in checks if not k.passed and not k.violated]
    level = _level(c.one_sided_alpha)
    gain = _gain_pct(c.ratio_geomean, c.direction)
    worst = _pct(_as_pct(c.gain_bound))
    best_ratio = _best_bound(c)
    assert best_ratio is not None
    best = _gain_pct(best_ratio, c.direction)
    if failed:
        names = "; ".join(k.reason for k in failed)
        return Verdict.DISCARD, f"{head}; guardrail failed: {names}"
    if _within(c, min_effect_pct):
        assert c.lower_bound is not None and c.upper_bound is not None
        if c.method == "exact":
            where = f"the exact change ({_pct(_as_pct(c.lower_bound))}) lies"
        else:
            bounds = f"{_pct(_as_pct(c.lower_bound))} and {_pct(_as_pct(c.upper_bound))}"
            where = f"both one-sided {level} bounds ({bounds}) lie"
        return Verdict.SAME, (
            f"{head}; {where} within ±{min_effect_pct:g}%: no change as large as the "
            "minimum effect"
        )
    if best < min_effect_pct:
        bound = _pct(_as_pct(best_ratio))
        loss = f"a {min_effect_pct:g}% loss" if min_effect_pct else "a loss"
        if best < -min_effect_pct:
            more = f" of more than {min_effect_pct:g}%" if min_effect_pct else ""
            why = f"even the optimistic one-sided {level} bound ({bound}) is a loss{more}"
        else:
            why = (
                f"the one-sided {level} bound ({bound}) rules out the {min_effect_pct:g}% "
                f"minimum gain and the other ({worst}) does not rule out {loss}"
            )
        return Verdict.DISCARD, f"{head}; {why}"
    shown = _gain_pct(c.gain_bound, c.direction) > 0
    if shown and gain >= min_effect_pct and not unproven:
        passes = "; ".join(k.reason for k in checks)
        tail = f"; guardrails pass: {passes}" if checks else ""
        return Verdict.KEEP, (
            f"{head}; the one-sided {level} bound ({worst}) shows a gain and the estimate "
            f"passes the {min_effect_pct:g}% minimum{tail}"
        )
    missing = []
    if not shown:
        missing.append(f"the one-sided {level} bound ({worst}) does not exclude no gain")
    elif gain < min_effect_pct:
        missing.append(f"the estimated gain {gain:.3g}% is below the {min_effect_pct:g}% minimum")
    if unproven:
        missing.append("not yet shown: " + "; ".join(k.reason for k in unproven))
    return Verdict.INCONCLUSIVE, f"{head}; " + "; ".join(missing)


def _drift_warnings(name: str, xs: list[float]) -> list[str]:
    if len(xs) < MIN_RUNS or min(xs) == max(xs):
        return []
    from scipy import stats

    fit = stats.linregress(range(len(xs)), xs)
    mean = math.fsum(xs) / len(xs)
    if not fit.pvalue < DRIFT_P or mean == 0:
        return []
    per_run = 100 * fit.slope / abs(mean)
    return [
        f"drift: {name} values trend {_pct(per_run)} per run ({_pct(per_run * (len(xs) - 1))} "
        f"over {len(xs)} runs, slope p={fit.pvalue:.2g}); interleave in ABBA or random "
        "order and consider paired=True"
    ]


def _warnings(
    xa: list[float],
    xb: list[float],
    min_effect_pct: float,
    failed_runs_a: int,
    failed_runs_b: int,
    unsettled: bool,
) -> list[str]:
    out: list[str] = []
    if failed_runs_b:
        out.append(f"B failed in {failed_runs_b} run(s); only 'remain' guardrails count them")
    if failed_runs_a:
        out.append(f"A (baseline) failed in {failed_runs_a} run(s): the baseline is unstable")
    for name, xs in (("A", xa), ("B", xb)):
        out += _drift_warnings(name, xs)
        if len(xs) >= MIN_RUNS:
            flagged = summarize(xs).outliers
            if flagged:
                vals = ", ".join(f"run {i}: {xs[i]:g}" for i in flagged)
                out.append(f"outliers in {name} (modified z > 3.5, kept in the analysis): {vals}")
    n = min(len(xa), len(xb))
    if 0 < n < RECOMMENDED_RUNS:
        out.append(
            f"n={n} per arm: at least {RECOMMENDED_RUNS} are recommended (at 3 a one-sided "
            "rank test cannot reach p < 0.05 and power is low)"
        )
    if unsettled and min_effect_pct > 0 and n >= 2:
        cvs = [summarize(xs).cv for xs in (xa, xb)]
        if all(cv is not None for cv in cvs):
            cv = math.sqrt(sum(v * v for v in cvs if v is not None) / 2)
            need = math.ceil(16 * (cv / (min_effect_pct / 100)) ** 2)
            if n < need:
                out.append(
                    f"noise: CV {100 * cv:.2g}% is high for a {min_effect_pct:g}% minimum "
                    f"effect; n={n} per arm is small: about 16*(CV/delta)^2 = {need} runs per "
                    "arm are needed to resolve it"
                )
    return out


def _failed_arm(
    xa: list[float],
    xb: list[float],
    metric: str,
    failed_runs: dict[str, int],
    errors: Mapping[str, str],
) -> str | None:
    """Why there is nothing to compare, when an arm has no usable value at all."""
    parts = []
    for arm, xs in (("A", xa), ("B", xb)):
        n, error = failed_runs[arm], errors.get(arm) or ""
        if xs or not (n or error):
            continue
        what = "A (the baseline)" if arm == "A" else "B (the patched build)"
        parts.append(
            f"{what} has no usable {metric} value"
            + (f": {n} run(s) failed" if n else "")
            + (f"; first error: {error}" if error else "")
        )
    if not parts:
        return None
    return "; ".join(parts) + "; fix the build or the crash (the runs' log tails) and rerun"


def _too_few(
    xa: list[float], xb: list[float], metric: str, failed_runs_a: int, failed_runs_b: int
) -> tuple[Verdict, str]:
    counts = f"{len(xa)} successful A run(s), {len(xb)} successful B run(s)"
    need = f"at least {MIN_RUNS} per arm are needed to compare {metric}"
    if failed_runs_b:
        return Verdict.DISCARD, f"B failed in {failed_runs_b} run(s), leaving {counts}; {need}"
    if failed_runs_a:
        return Verdict.INCONCLUSIVE, (
            f"the baseline failed in {failed_runs_a} run(s), leaving {counts}; "
            f"{need}; rerun the baseline"
        )
    return Verdict.INCONCLUSIVE, f"only {counts}; {need}"


def decide(
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric: str,
    direction: Direction,
    min_effect_pct: float = 1.0,
    guardrails: Sequence[GuardrailInput] = (),
    failed_runs_a: int = 0,
    failed_runs_b: int = 0,
    paired: bool = False,
    one_sided_alpha: float = 0.05,
    final_look: bool = True,
    inconclusive_is_discard: bool = False,
    look: int | None = None,
    resolution: float | None = None,
    errors: Mapping[str, str] | None = None,
) -> Decision:
    """Decide KEEP / SAME / DISCARD / INCONCLUSIVE / FAILED for B against A (module docstring).

    ``a``/``b`` hold the successful runs' primary values; with ``paired=True`` a[i] and
    b[i] come from the same pair (drop both when either run fails). ``guardrails`` are
    (guardrail, A values, B values). ``errors`` maps an arm to the first error of its
    failed runs (for FAILED's reason). In a sequential design pass the look's nominal alpha
    (``sequential_boundaries``), ``final_look`` for the last look and
    ``inconclusive_is_discard=True`` so that INCONCLUSIVE at the run cap is a DISCARD.
    """
    if not min_effect_pct >= 0:
        raise ValueError(f"min_effect_pct must be >= 0, got {min_effect_pct}")
    if failed_runs_a < 0 or failed_runs_b < 0:
        raise ValueError("failed run counts must be >= 0")
    xa, xb = [float(x) for x in a], [float(x) for x in b]
    notes: list[str] = []
    if paired and len(xa) != len(xb):
        notes.append(f"paired=True but n_a={len(xa)} != n_b={len(xb)}: analysed unpaired")
        paired = False
    checks = [
        check_guardrail(
            g,
            ga,
            gb,
            failed_runs_b=failed_runs_b,
            paired=paired,
            one_sided_alpha=one_sided_alpha,
        )
        for g, ga, gb in guardrails
    ]
    seed = len(xa) >= 2 and len(xb) >= 2 and seed_rule(xa, xb, direction)
    primary = None
    failed_runs = {"A": failed_runs_a, "B": failed_runs_b}
    nothing = _failed_arm(xa, xb, metric, failed_runs, errors or {})
    if nothing:
        verdict, text = Verdict.FAILED, nothing
    elif len(xa) < MIN_RUNS or len(xb) < MIN_RUNS:
        verdict, text = _too_few(xa, xb, metric, failed_runs_a, failed_runs_b)
    else:
        primary = compare(
            xa,
            xb,
            metric=metric,
            direction=direction,
            paired=paired,
            one_sided_alpha=one_sided_alpha,
            resolution=resolution,
        )
        verdict, text = _rule_verdict(primary, checks, min_effect_pct)
    reason = f"{verdict.value}: {text}"
    unsettled = verdict is Verdict.INCONCLUSIVE
    if unsettled and final_look and inconclusive_is_discard:
        verdict = Verdict.DISCARD
        reason = f"DISCARD: INCONCLUSIVE at the run cap is a DISCARD: {text}"
    elif unsettled and not final_look:
        reason += "; add runs up to the next planned look"
    warnings = notes + _warnings(xa, xb, min_effect_pct, failed_runs_a, failed_runs_b, unsettled)
    return Decision(
        verdict=verdict,
        reason=reason,
        primary=primary,
        guardrails=checks,
        min_effect_pct=min_effect_pct,
        one_sided_alpha=one_sided_alpha,
        seed_rule_keep=seed,
        warnings=warnings,
        look=look,
        final_look=final_look,
    )
