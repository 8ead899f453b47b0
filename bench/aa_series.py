"""A real A/A series: `count` run_abs of pyserver with no patch, through an in-process MCP
client on a temporary workspace copy. SAME is the right answer; every KEEP is a false KEEP,
and every other verdict (DISCARD, INCONCLUSIVE, FAILED) a miss.

    python -m bench.aa_series [--count 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from autoopt.server.demo import call_until_done
from bench.common import PYSERVER, cv, log, median, read_run, table, temp_workspace

VERDICTS = ("SAME", "KEEP", "DISCARD", "INCONCLUSIVE", "FAILED")
SECONDARY = "latency_p99_ms"


@dataclass
class Series:
    """The views run_ab returned and the persisted run.json of every run."""

    count: int
    runs: int
    views: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def samples(self) -> list[dict[str, Any]]:
        """Every finished sample (warmups included: they are runs the harness did)."""
        return [s for r in self.records for s in r["samples"] if s.get("timings")]

    def verdicts(self) -> Counter[str]:
        return Counter(v.get("verdict") or "none" for v in self.views)

    def markdown(self) -> str:
        counts = self.verdicts()
        seed = sum(bool(v.get("seed_rule_keep")) for v in self.views)
        n = len(self.views)
        rows = []
        cvs: dict[str, list[float]] = {"peak_rss_mb": [], SECONDARY: []}
        for view, rec in zip(self.views, self.records, strict=True):
            primary = ((view.get("report") or {}).get("decision") or {}).get("primary") or {}
            lo, hi = primary.get("ci_low"), primary.get("ci_high")
            ci = "-" if lo is None else f"{(lo - 1) * 100:+.2f}% .. {(hi - 1) * 100:+.2f}%"
            arm_cv: dict[str, str] = {}
            for metric in cvs:
                per_arm = [_values(rec, arm, metric) for arm in ("A", "B")]
                values = [cv(xs) for xs in per_arm if len(xs) >= 2]
                cvs[metric] += [x for x in values if not math.isnan(x)]
                arm_cv[metric] = " / ".join(f"{100 * x:.1f}" for x in values) or "-"
            change = primary.get("change_pct")
            rows.append(
                [
                    view["run_id"],
                    view.get("verdict") or "-",
                    "yes" if view.get("seed_rule_keep") else "no",
                    "-" if change is None else f"{change:+.2f}%",
                    ci,
                    arm_cv["peak_rss_mb"],
                    arm_cv[SECONDARY],
                    _short(view.get("reason") or view.get("error") or ""),
                ]
            )
        summary = table(
            [
                "run_abs",
                "SAME (right)",
                "not SAME",
                "KEEP (false)",
                "DISCARD",
                "INCONCLUSIVE",
                "FAILED",
                "false-KEEP rate, 95% upper bound",
                "seed rule KEEP (false)",
                "seed rule, 95% upper bound",
                "median CV peak_rss_mb",
                f"median CV {SECONDARY}",
                "wall time",
            ],
            [
                [
                    n,
                    counts.get("SAME", 0),
                    n - counts.get("SAME", 0),
                    counts.get("KEEP", 0),
                    counts.get("DISCARD", 0),
                    counts.get("INCONCLUSIVE", 0),
                    counts.get("FAILED", 0),
                    f"{100 * upper_bound(counts.get('KEEP', 0), n):.0f}%",
                    seed,
                    f"{100 * upper_bound(seed, n):.0f}%",
                    f"{100 * median(cvs['peak_rss_mb']):.2f}%",
                    f"{100 * median(cvs[SECONDARY]):.1f}%",
                    f"{self.elapsed_s / 60:.1f} min",
                ]
            ],
        )
        detail = table(
            [
                "run",
                "verdict",
                "seed rule KEEP",
                "peak_rss_mb B vs A",
                "95% CI",
                "CV peak_rss_mb A / B (%)",
                f"CV {SECONDARY} A / B (%)",
                "reason",
            ],
            rows,
        )
        errors = [f"- run_ab failed: {e}" for e in self.errors]
        return "\n".join(
            [
                summary,
                "",
                "<details><summary>Each run</summary>",
                "",
                detail,
                "",
                "</details>",
                *errors,
            ]
        )


def upper_bound(k: int, n: int, level: float = 0.95) -> float:
    """One-sided exact (Clopper-Pearson) upper confidence bound of a rate seen k times in n."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(level, k + 1, n - k))


def _values(record: dict[str, Any], arm: str, metric: str) -> list[float]:
    return [
        s["metrics"][metric]
        for s in record["samples"]
        if s["arm"] == arm and s["ok"] and not s["warmup"] and metric in s["metrics"]
    ]


def _short(text: str, n: int = 140) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


Between = Callable[[int, Any], Awaitable[None]]


async def run_series(
    root: Path,
    count: int,
    runs: int,
    between: Between | None = None,
    backend: str = "local",
    warmup: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Series:
    """`count` A/A run_abs (seeds 1..count) through an in-process MCP client on `root`.

    `between(i, engine)` runs before run_ab number i and once after the last (i = count),
    with the server's engine, so that other measurements interleave with the series.
    `warmup` None leaves run_ab's default (1 pair). `extra` adds run_ab arguments (target,
    order, metric)."""
    from mcp import Client

    from autoopt.server.app import create_server
    from autoopt.tools.workspace import Workspace

    server = create_server(Workspace(root))
    async with Client(server) as client:
        return await series_on(
            client, Workspace(root), count, runs, between, server.engine,  # type: ignore[attr-defined]
            backend=backend, warmup=warmup, extra=extra,
        )


async def series_on(
    client: Any,
    ws: Any,
    count: int,
    runs: int,
    between: Between | None = None,
    engine: Any = None,
    *,
    backend: str = "local",
    warmup: int | None = None,
    extra: dict[str, Any] | None = None,
    first_seed: int = 1,
) -> Series:
    """run_series on an open client (seeds first_seed.. first_seed + count - 1)."""
    out = Series(count=count, runs=runs)
    started = time.monotonic()
    for i in range(count):
        if between is not None:
            await between(i, engine)
        t0 = time.monotonic()

        async def progress(
            done: float, total: float | None, message: str | None, i: int = i
        ) -> None:
            if message and total:
                log(f"  A/A {i + 1}/{count} [{int(done)}/{int(total)}] {message}")

        args = {"target": PYSERVER, "runs": runs, "backend": backend, "seed": first_seed + i,
                **(extra or {})}
        if warmup is not None:
            args["warmup"] = warmup
        result = await call_until_done(client, "run_ab", args, progress)
        if result.is_error:
            text = getattr(result.content[0], "text", "") if result.content else ""
            out.errors.append(text[:500])
            log(f"A/A {i + 1}/{count}: run_ab failed: {text[:300]}")
            continue
        view = result.structured_content or {}
        out.views.append(view)
        out.records.append(read_run(ws.state_dir, view["run_id"]))
        log(
            f"A/A {i + 1}/{count}: {view.get('verdict')} in {time.monotonic() - t0:.0f} s "
            f"({_short(view.get('reason') or '', 100)})"
        )
    if between is not None:
        await between(count, engine)
    out.elapsed_s = time.monotonic() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with temp_workspace() as root:
        series = anyio.run(run_series, root, args.count, args.runs)
    print(series.markdown())


if __name__ == "__main__":
    main()
