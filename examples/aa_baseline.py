"""An A/A baseline with a profile through a real MCP client session (stdio `autoopt serve`),
for the targets whose engine this machine cannot rebuild: datafusion and clickhouse.

Run from the checkout with the venv's python; the workspace is this checkout, so the record
lands in results/<target>/local/ (for clickhouse the workspace must be traversable by the
clickhouse user):
    .venv/bin/python examples/aa_baseline.py TARGET profile [LABEL]
    .venv/bin/python examples/aa_baseline.py TARGET aa EXP_ID [PROFILE_LABEL]
`profile` profiles the baseline (datafusion: memory, memray with native frames; clickhouse:
CPU with perf, since Debian's 18.16 has no trace_log for query_trace_log); `aa` runs run_ab
with no patch (A/A: both arms the same base, runs=5) and records it, with the profile,
whatever the verdict: the noise floor of the target's metrics on this machine. Settings
comparisons are not experiments: none is recorded. A code A/B of either engine needs its
source, which this machine cannot fetch (see the targets' target.md).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import anyio
from experiment_session import call, say, serve
from mcp import Client


@dataclass(frozen=True)
class Baseline:
    tool: str  # the profiling tool call
    profiler: str
    label: str  # the profile's default label
    description: str
    hypothesis: str
    evidence: str


BASELINES = {
    "datafusion": Baseline(
        "profile_memory", "memray-native", "baseline-native",
        "A/A baseline: datafusion-python 55.0.0 (PyPI wheel), 10M-row GROUP BY spilling under "
        "a 100 MiB FairSpillPool, no patch",
        "No change: both arms run the same build; the spread is the noise floor of peak_rss_mb "
        "and wall_s here, and spilled_bytes must be identical",
        "profile_memory (memray --native) of the same base",
    ),
    "clickhouse": Baseline(
        "profile_cpu", "perf", "baseline-cpu",
        "A/A baseline: Debian's clickhouse-server 18.16 on local, the 4-client GROUP BY / "
        "uniqExact / groupArray mix over 1M rows, no patch",
        "No change: both arms run the same server; the spread is the noise floor of "
        "peak_rss_mb and latency_p99_ms here, and every query's digest agrees",
        "profile_cpu (perf) of the same base",
    ),
}


async def profile(client: Client, target: str, label: str) -> None:
    b = BASELINES[target]
    prof = await call(client, b.tool, target=target, label=label, tool=b.profiler, top=8)
    for key in ("total", "top", "scope"):
        value = prof.get(key)
        for line in value if isinstance(value, list) else [value] if value else []:
            say(f"  {key}: {line}")
    say(f"profile {prof.get('profile_id')}")


async def aa(client: Client, target: str, exp_id: str, label: str | None) -> None:
    b = BASELINES[target]
    t0 = time.monotonic()
    run = await call(client, "run_ab", target=target, runs=5)
    say(f"run_ab {run['run_id']} ({time.monotonic() - t0:.0f} s): {run['verdict']}: "
        f"{run['reason']}")
    rec = await call(
        client, "record_experiment", run_id=run["run_id"], exp_id=exp_id,
        description=b.description, hypothesis=b.hypothesis,
        evidence=b.evidence if label else None, **({"profile": label} if label else {}))
    say(f"recorded: {rec}")


async def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in BASELINES or argv[1] not in ("profile", "aa") or (
            argv[1] == "aa" and len(argv) < 3):
        raise SystemExit(__doc__)
    target, what, rest = argv[0], argv[1], argv[2:]
    async with Client(serve()) as client:
        listed = await call(client, "list_targets")
        info = next(t for t in listed["targets"] if t["name"] == target)
        say(f"{target}: {info.get('readiness') or info}")
        if what == "profile":
            await profile(client, target, rest[0] if rest else BASELINES[target].label)
        else:
            await aa(client, target, rest[0], rest[1] if len(rest) > 1 else None)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
