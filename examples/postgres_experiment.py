"""The postgres experiment through a real MCP client session (stdio `autoopt serve`).

Run from the checkout with the venv's python; the workspace is this checkout, so the record
lands in results/postgres/local/ and the build cache in .autoopt/buildcache/postgres:
    .venv/bin/python examples/postgres_experiment.py profile
    .venv/bin/python examples/postgres_experiment.py ab PATCH EXP_ID DESCRIPTION HYPOTHESIS \
        EVIDENCE [PROFILE_LABEL]
`profile` builds the baseline (a clean build the first time) and profiles its CPU with perf
under the workload; `ab` times an incremental B build, then runs run_ab (runs=5) and
records the experiment whatever the verdict.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
from experiment_session import call, say, serve
from mcp import Client


async def profile(client: Client) -> None:
    build = await call(client, "build", target="postgres")
    say(f"baseline build {build['build_id']}: {build['duration_s']} s, {build.get('progress')}")
    await call(client, "teardown", build_id=build["build_id"])  # frees its slot for the profile
    prof = await call(client, "profile_cpu", target="postgres", label="baseline", tool="perf",
                      top=12)
    for key in ("top", "top_self", "scope"):
        for line in prof.get(key) or []:
            say(f"  {key}: {line}")
    say(f"profile {prof.get('profile_id')}: {prof.get('files', {})}")


async def ab(client: Client, patch_file: str, exp_id: str, description: str, hypothesis: str,
             evidence: str, label: str | None) -> None:
    patch = Path(patch_file).read_text()
    built = await call(client, "build", target="postgres", patch=patch)
    say(f"B build alone {built['build_id']}: {built['duration_s']} s, {built.get('progress')}")
    await call(client, "teardown", build_id=built["build_id"])
    t0 = time.monotonic()
    run = await call(client, "run_ab", target="postgres", patch=patch, runs=5)
    say(f"run_ab {run['run_id']} ({time.monotonic() - t0:.0f} s): {run['verdict']}: "
        f"{run['reason']}")
    rec = await call(client, "record_experiment", run_id=run["run_id"], exp_id=exp_id,
                     description=description, hypothesis=hypothesis, evidence=evidence,
                     **({"profile": label} if label else {}))
    say(f"recorded: {rec}")


async def main(argv: list[str]) -> None:
    params = serve()
    async with Client(params) as client:
        listed = await call(client, "list_targets")
        info = next(t for t in listed["targets"] if t["name"] == "postgres")
        say(f"postgres: {info.get('readiness') or info}")
        if argv[0] == "profile":
            await profile(client)
        else:
            await ab(client, *argv[1:6], argv[6] if len(argv) > 6 else None)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
