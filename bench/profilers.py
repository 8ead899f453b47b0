"""Profiler overhead on pyserver's workload: memray, py-spy, tracemalloc vs no profiler.

Rounds of (bare, memray, py-spy, tracemalloc), the order rotated each round, all through
the profiling engine on the local backend (tools/profiling/run.py): profile_memory with
tool="memray" / "tracemalloc", profile_cpu with tool="py-spy" (100 Hz), and for the bare
arm the engine's build -> deploy -> run_workload -> teardown. The workload time is the
`duration_s` that workload.py prints (its own clock around the requests, so the client's
interpreter start is excluded); the profile keeps it in `Profile.workload_metrics`.

    python -m bench.profilers [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench.common import (
    PYSERVER,
    bare_local_workload,
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

TOOLS = ("bare", "memray", "py-spy", "tracemalloc")
BY_HAND = "python -X tracemalloc=25 (by hand)"


@dataclass
class Measurement:
    tool: str
    round: int
    duration_s: float  # workload.py's own clock
    wall_s: float  # the workload process, as the backend timed it
    p99_ms: float | None
    call_s: float  # the whole call: build, deploy, workload, parse, store
    error: str | None = None


@dataclass
class Result:
    rounds: int
    measurements: list[Measurement] = field(default_factory=list)

    def ratios(self, tool: str) -> list[float]:
        """Per-round workload duration of `tool` over bare's in the same round."""
        return round_ratios(self.measurements, tool, self.rounds, "duration_s")

    def markdown(self) -> str:
        by: dict[tuple[str, int], Measurement] = {
            (m.tool, m.round): m for m in self.measurements if m.error is None
        }
        rows = []
        for tool in (*TOOLS, BY_HAND):
            ratios, walls, p99s = [], [], []
            for r in range(self.rounds):
                m, b = by.get((tool, r)), by.get(("bare", r))
                if m is None or b is None:
                    continue
                ratios.append(m.duration_s / b.duration_s)
                walls.append(m.wall_s / b.wall_s)
                if m.p99_ms and b.p99_ms:
                    p99s.append(m.p99_ms / b.p99_ms)
            mine = [m for m in self.measurements if m.tool == tool and m.error is None]
            if not mine:
                continue
            rows.append(
                [
                    tool,
                    len(mine),
                    f(median([m.duration_s for m in mine]), 3),
                    f"**{geomean(ratios):.2f}x**" if ratios else "-",
                    f"{min(ratios):.2f} .. {max(ratios):.2f}" if ratios else "-",
                    f"{geomean(walls):.2f}x" if walls else "-",
                    f"{geomean(p99s):.2f}x" if p99s else "-",
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
            "workload duration_s (median)",
            "ratio to bare (geomean of per-round ratios)",
            "per-round range",
            "workload wall ratio",
            "latency_p99 ratio",
            "whole call s (median)",
        ]
        return "\n".join([table(head, rows), *errors])


async def _bare(engine: Any, r: int) -> Measurement:
    result, call_s = await bare_run(engine, PYSERVER)
    return Measurement(
        "bare",
        r,
        result.metrics["duration_s"],
        result.duration_s,
        result.metrics.get("latency_p99_ms"),
        call_s,
    )


async def _by_hand(root: Path, r: int) -> Measurement:
    """tracemalloc without the engine's runner: no snapshots, only the tracing."""
    t0 = time.monotonic()
    wall, metrics = await anyio.to_thread.run_sync(
        bare_local_workload, root, ["-X", "tracemalloc=25"]
    )
    return Measurement(
        BY_HAND,
        r,
        metrics["duration_s"],
        wall,
        metrics.get("latency_p99_ms"),
        time.monotonic() - t0,
    )


async def _profiled(engine: Any, tool: str, r: int) -> Measurement:
    from autoopt.tools.profiling.run import profile_cpu, profile_memory

    t0 = time.monotonic()
    label = f"bench-{tool}-{r}"
    if tool == "py-spy":
        run = await profile_cpu(engine, PYSERVER, tool="py-spy", label=label)
    else:
        run = await profile_memory(engine, PYSERVER, tool=tool, label=label)  # type: ignore[arg-type]
    p = run.profile
    return Measurement(
        tool,
        r,
        p.workload_metrics["duration_s"],
        p.workload_s or float("nan"),
        p.workload_metrics.get("latency_p99_ms"),
        time.monotonic() - t0,
    )


async def measure(root: Path, rounds: int, by_hand: bool = False) -> Result:
    """`rounds` rounds of TOOLS (plus BY_HAND when asked), the order rotated per round."""
    from autoopt.tools.engine import Engine
    from autoopt.tools.workspace import Workspace

    engine = Engine(Workspace(root))
    out = Result(rounds)
    try:
        for r in range(rounds):
            for tool in rotated([*TOOLS, BY_HAND] if by_hand else TOOLS, r):
                try:
                    if tool == "bare":
                        m = await _bare(engine, r)
                    elif tool == BY_HAND:
                        m = await _by_hand(root, r)
                    else:
                        m = await _profiled(engine, tool, r)
                except Exception as exc:  # keep the other measurements; say what failed
                    out.measurements.append(
                        Measurement(tool, r, 0, 0, None, 0, f"{type(exc).__name__}: {exc}"[:300])
                    )
                    log(f"profilers round {r + 1}/{rounds}: {tool} failed: {exc}")
                    continue
                out.measurements.append(m)
                log(
                    f"profilers round {r + 1}/{rounds}: {tool}: workload {m.duration_s:.2f} s "
                    f"(call {m.call_s:.1f} s)"
                )
    finally:
        await engine.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--by-hand", action="store_true", help=f"add {BY_HAND!r}")
    args = parser.parse_args()
    with temp_workspace() as root:
        print(anyio.run(measure, root, args.rounds, args.by_hand).markdown())


if __name__ == "__main__":
    main()
