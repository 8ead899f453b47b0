"""Native heap profilers on an allocation-heavy C program: heaptrack and jemalloc's own
profiler vs no profiler, and how close each one's peak comes to the program's own count.

bench/native/churn.c (4 million malloc/free pairs of 64..1024 bytes, one 64 MiB buffer
held in the middle round; it counts its live bytes and prints their peak) is built against
Debian's libjemalloc, dynamically, so heaptrack's preload sees every call too. Rounds of
(bare, heaptrack, jemalloc), the order rotated each round, through the profiling engine on
the local backend: bare is build -> deploy -> run_workload -> teardown, the others
profile_memory(tool=...). Times are the batch program's wall time as the backend measured
it; "whole call" adds the build and the profiler's post-processing.

    python -m bench.native_profilers [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench.common import (
    ROOT,
    bare_run,
    f,
    geomean,
    log,
    median,
    rotated,
    round_ratios,
    table,
    temp_workspace,
)

TARGET = "churn"
TOOLS = ("bare", "heaptrack", "jemalloc")
SOURCE = ROOT / "bench" / "native" / "churn.c"
TARGET_MD = """# Target: churn

## Source
repo: local
branch: main
path: targets/churn/src

## Build
build_timeout: 120

## Primary Metric
name: peak_rss_mb
direction: lower
unit: MiB

## Workload
description: one run of the program (it is the measured process)

## Scope
editable:
  - churn.c

## Local
kind: batch
build: gcc -O1 -g -o churn churn.c -ljemalloc
workload: ./churn
"""


def add_target(root: Path) -> None:
    """targets/churn in the benchmark's workspace."""
    folder = root / "targets" / TARGET
    (folder / "src").mkdir(parents=True)
    shutil.copy2(SOURCE, folder / "src" / "churn.c")
    (folder / "target.md").write_text(TARGET_MD)


@dataclass
class Measurement:
    tool: str
    round: int
    wall_s: float  # the program's wall time, as the backend measured it
    call_s: float  # the whole call: build, run, post-processing, store
    peak_bytes: float  # the program's own count of its heap peak
    profiled_bytes: float | None = None  # the profile's total at the peak
    error: str | None = None


@dataclass
class Result:
    rounds: int
    measurements: list[Measurement] = field(default_factory=list)

    def ratios(self, tool: str) -> list[float]:
        """Per-round wall time of `tool` over bare's in the same round."""
        return round_ratios(self.measurements, tool, self.rounds, "wall_s")

    def accuracy(self, tool: str) -> list[float]:
        """The profile's peak over the program's own peak, per run."""
        return [
            m.profiled_bytes / m.peak_bytes
            for m in self.measurements
            if m.tool == tool and m.error is None and m.profiled_bytes and m.peak_bytes
        ]

    def markdown(self) -> str:
        rows = []
        for tool in TOOLS:
            mine = [m for m in self.measurements if m.tool == tool and m.error is None]
            if not mine:
                continue
            ratios, acc = self.ratios(tool), self.accuracy(tool)
            rows.append(
                [
                    tool,
                    len(mine),
                    f(median([m.wall_s for m in mine]), 3),
                    f"**{geomean(ratios):.2f}x**" if ratios else "-",
                    f"{min(ratios):.2f} .. {max(ratios):.2f}" if ratios else "-",
                    f"{min(acc):.3f} .. {max(acc):.3f}" if acc else "-",
                    f(median([m.call_s for m in mine]), 1),
                ]
            )
        errors = [
            f"- {m.tool} round {m.round + 1} failed: {m.error}"
            for m in self.measurements
            if m.error
        ]
        head = [
            "profiler",
            "rounds",
            "program wall s (median)",
            "ratio to bare (geomean of per-round ratios)",
            "per-round range",
            "profiled peak / program's own peak",
            "whole call s (median)",
        ]
        return "\n".join([table(head, rows), *errors])


async def _bare(engine: Any, r: int) -> Measurement:
    result, call_s = await bare_run(engine, TARGET)
    return Measurement("bare", r, result.duration_s, call_s, result.metrics["heap_peak_bytes"])


async def _profiled(engine: Any, tool: str, r: int) -> Measurement:
    from autoopt.tools.profiling.run import profile_memory

    t0 = time.monotonic()
    run = await profile_memory(engine, TARGET, tool=tool, label=f"bench-{tool}-{r}")  # type: ignore[arg-type]
    p = run.profile
    return Measurement(
        tool,
        r,
        p.workload_s or float("nan"),
        time.monotonic() - t0,
        p.workload_metrics["heap_peak_bytes"],
        p.total,
    )


async def measure(root: Path, rounds: int) -> Result:
    """`rounds` rounds of TOOLS, the order rotated per round."""
    from autoopt.tools.engine import Engine
    from autoopt.tools.workspace import Workspace

    add_target(root)
    engine = Engine(Workspace(root))
    out = Result(rounds)
    try:
        for r in range(rounds):
            for tool in rotated(TOOLS, r):
                try:
                    m = await (_bare(engine, r) if tool == "bare" else _profiled(engine, tool, r))
                except Exception as exc:  # keep the other measurements; say what failed
                    out.measurements.append(
                        Measurement(tool, r, 0, 0, 0, None, f"{type(exc).__name__}: {exc}"[:300])
                    )
                    log(f"native profilers round {r + 1}/{rounds}: {tool} failed: {exc}")
                    continue
                out.measurements.append(m)
                log(
                    f"native profilers round {r + 1}/{rounds}: {tool}: program {m.wall_s:.2f} s "
                    f"(call {m.call_s:.1f} s)"
                )
    finally:
        await engine.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with temp_workspace() as root:
        print(anyio.run(measure, root, args.rounds).markdown())


if __name__ == "__main__":
    main()
