"""Pictures of an A/B run: each arm's values in run order, and a strip + box plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoopt.tools.abrun import ABRun

COLORS = {"A": "#1f77b4", "B": "#ff7f0e"}


def plot_run(run: ABRun, dest: Path) -> Path:
    """Save a PNG of the primary metric for both arms; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    series: dict[str, list[float]] = {"A": [], "B": []}
    for sample in run.samples:
        value = sample.metrics.get(run.metric)
        color = COLORS[sample.arm]
        if not sample.ok or value is None:
            left.axvline(sample.run, color=color, linestyle=":", alpha=0.6)
            continue
        left.scatter(
            sample.run,
            value,
            color=color,
            marker="o",
            facecolors="none" if sample.warmup else color,
            zorder=3,
        )
        if not sample.warmup:
            series[sample.arm].append(value)
    unit = f" ({run.unit})" if run.unit else ""
    left.set_xlabel("run (execution order; hollow = warmup, dotted = failed)")
    left.set_ylabel(run.metric + unit)
    left.set_title(f"{run.target}: {run.metric} by run")
    for arm in ("A", "B"):
        left.scatter([], [], color=COLORS[arm], label=f"{arm} {'base' if arm == 'A' else 'patch'}")
    left.legend(loc="best")
    data = [series["A"] or [float("nan")], series["B"] or [float("nan")]]
    right.boxplot(data, tick_labels=["A", "B"], widths=0.5, showfliers=False)
    for i, arm in enumerate(("A", "B"), start=1):
        xs = [i + 0.08 * ((k % 5) - 2) for k in range(len(series[arm]))]
        right.scatter(xs, series[arm], color=COLORS[arm], zorder=3)
    verdict = run.report.decision.get("verdict") if run.report else "no decision"
    right.set_title(str(verdict))
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=90)
    plt.close(fig)
    return dest
