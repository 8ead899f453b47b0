"""The postgres-sql experiment through a real MCP client session (stdio `autoopt serve`).

Run from the checkout with the venv's python; the workspace is this checkout, so profiles
and records land in results/postgres-sql/local/:
    .venv/bin/python examples/postgres_sql_experiment.py explain QUERY LABEL [PATCH]
    .venv/bin/python examples/postgres_sql_experiment.py top LABEL
    .venv/bin/python examples/postgres_sql_experiment.py diff BEFORE AFTER
    .venv/bin/python examples/postgres_sql_experiment.py ab PATCH EXP_ID DESCRIPTION \
        HYPOTHESIS EVIDENCE [PROFILE_LABEL]
`explain` is explain_query (a deployment of the frontier, or of PATCH, torn down after);
`top` stores pg_stat_statements' top statements over the workload; `diff` is diff_profiles
of two stored plans; `ab` runs run_ab (runs=5) and records the experiment whatever the verdict.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from autoopt.server.demo import call_until_done

ROOT = Path(__file__).resolve().parent.parent
TARGET = "postgres-sql"


def say(text: str) -> None:
    print(text, flush=True)


async def progress(done: float, total: float | None, message: str | None) -> None:
    if message:
        say(f"  [{done:.0f}/{total or 0:.0f}] {message}")


async def call(client: Client, name: str, **args: Any) -> tuple[dict[str, Any], str]:
    t0 = time.monotonic()
    result = await call_until_done(client, name, args, progress)
    if result.is_error:
        raise SystemExit(f"{name} failed: {result.content[0].text}")
    say(f"{name}: {time.monotonic() - t0:.1f} s")
    return result.structured_content or {}, result.content[0].text


async def main(argv: list[str]) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "autoopt.server.cli", "serve"],
        env={"AUTOOPT_WORKSPACE": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "HOME": os.environ.get("HOME", "/root")},
    )
    async with Client(params) as client:
        what, args = argv[0], argv[1:]
        if what == "explain":
            patch = Path(args[2]).read_text() if len(args) > 2 else None
            _, text = await call(client, "explain_query", target=TARGET, query_name=args[0],
                                 label=args[1], **({"patch": patch} if patch else {}))
            say(text)
        elif what == "top":
            _, text = await call(client, "explain_query", target=TARGET, query_name="top",
                                 label=args[0])
            say(text)
        elif what == "diff":
            _, text = await call(client, "diff_profiles", target=TARGET, before=args[0],
                                 after=args[1])
            say(text)
        else:
            patch = Path(args[0]).read_text()
            t0 = time.monotonic()
            run, _ = await call(client, "run_ab", target=TARGET, patch=patch, runs=5)
            say(f"run_ab {run['run_id']} ({time.monotonic() - t0:.0f} s): {run['verdict']}: "
                f"{run['reason']}")
            label = args[5] if len(args) > 5 else None
            rec, _ = await call(client, "record_experiment", run_id=run["run_id"],
                                exp_id=args[1], description=args[2], hypothesis=args[3],
                                evidence=args[4], **({"profile": label} if label else {}))
            say(f"recorded: {rec}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
