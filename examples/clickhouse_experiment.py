"""The clickhouse A/A baseline through a real MCP client session (stdio `autoopt serve`).

Run from the checkout with the venv's python; the workspace is this checkout (it must be
traversable by the clickhouse user), so the record lands in results/clickhouse/local/:
    .venv/bin/python examples/clickhouse_experiment.py profile [LABEL]
    .venv/bin/python examples/clickhouse_experiment.py aa EXP_ID [PROFILE_LABEL]
`profile` profiles the CPU of Debian's clickhouse-server 18.16 with perf under the workload
(18.16 has no trace_log for query_trace_log); `aa` runs run_ab with no patch (A/A: both
arms the same base, runs=5) and records it, with the profile, whatever the verdict: the
noise floor of peak_rss_mb and latency on this machine. A code A/B needs ClickHouse's
source, which this machine cannot fetch (see targets/clickhouse/target.md).
"""

from __future__ import annotations

import sys
import time

import anyio
from experiment_session import call, say, serve
from mcp import Client

TARGET = "clickhouse"




async def profile(client: Client, label: str) -> None:
    prof = await call(client, "profile_cpu", target=TARGET, label=label, tool="perf", top=8)
    for key in ("total", "top", "scope"):
        value = prof.get(key)
        for line in value if isinstance(value, list) else [value] if value else []:
            say(f"  {key}: {line}")
    say(f"profile {prof.get('profile_id')}")


async def aa(client: Client, exp_id: str, label: str | None) -> None:
    t0 = time.monotonic()
    run = await call(client, "run_ab", target=TARGET, runs=5)
    say(f"run_ab {run['run_id']} ({time.monotonic() - t0:.0f} s): {run['verdict']}: "
        f"{run['reason']}")
    rec = await call(
        client, "record_experiment", run_id=run["run_id"], exp_id=exp_id,
        description="A/A baseline: Debian's clickhouse-server 18.16 on local, the 4-client "
                    "GROUP BY / uniqExact / groupArray mix over 1M rows, no patch",
        hypothesis="No change: both arms run the same server; the spread is the noise floor "
                   "of peak_rss_mb and latency_p99_ms here, and every query's digest agrees",
        evidence="profile_cpu (perf) of the same base" if label else None,
        **({"profile": label} if label else {}))
    say(f"recorded: {rec}")


async def main(argv: list[str]) -> None:
    params = serve()
    async with Client(params) as client:
        listed = await call(client, "list_targets")
        info = next(t for t in listed["targets"] if t["name"] == TARGET)
        say(f"{TARGET}: {info.get('readiness') or info}")
        if argv[0] == "profile":
            await profile(client, argv[1] if len(argv) > 1 else "baseline-cpu")
        else:
            await aa(client, argv[1], argv[2] if len(argv) > 2 else None)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
