"""MCP figures over stdio: cold start to initialized, list_targets round trips, tools/list size.

python -m bench.mcp_startup [--starts 5] [--calls 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent


def params() -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "autoopt.server.cli", "serve"],
        env={"AUTOOPT_WORKSPACE": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )


async def cold_start() -> float:
    started = time.perf_counter()
    async with Client(params(), mode="legacy"):
        return time.perf_counter() - started


async def round_trips(calls: int) -> tuple[list[float], int]:
    times = []
    async with Client(params()) as client:
        tools = await client.list_tools()
        size = len(tools.model_dump_json(by_alias=True, exclude_none=True))  # as on the wire
        for _ in range(calls):
            t0 = time.perf_counter()
            result = await client.call_tool("list_targets", {})
            times.append(time.perf_counter() - t0)
            assert not result.is_error
    return times, size


def percentile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(starts: int, calls: int) -> dict[str, float]:
    cold = [await cold_start() for _ in range(starts)]
    times, size = await round_trips(calls)
    return {
        "cold_start_median_s": statistics.median(cold),
        "cold_start_min_s": min(cold),
        "list_targets_p50_ms": 1000 * percentile(times, 0.5),
        "list_targets_p99_ms": 1000 * percentile(times, 0.99),
        "tools_list_bytes": float(size),
    }


def run(starts: int = 5, calls: int = 50) -> str:
    figures = anyio.run(measure, starts, calls)
    rows = [
        f"| {k} | {v:.0f} |" if k.endswith("_bytes") else f"| {k} | {v:.3f} |"
        for k, v in figures.items()
    ]
    return "\n".join(["| figure | value |", "|---|---|", *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    print(run(args.starts, args.calls))


if __name__ == "__main__":
    main()
