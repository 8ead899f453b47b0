"""The chroma experiment through a real MCP client session (stdio `autoopt serve`).

Run from the checkout with the venv's python; the workspace is this checkout, so the record
lands in results/<target>/local/:
    .venv/bin/python examples/chroma_experiment.py smoke [TARGET]
    .venv/bin/python examples/chroma_experiment.py profile [TARGET]
    .venv/bin/python examples/chroma_experiment.py ab TARGET PATCH EXP_ID DESCRIPTION \
        HYPOTHESIS EVIDENCE|@FILE [PROFILE_LABEL]
TARGET is chroma (default; chromadb 1.5.9's Python layer) or chroma-hnswlib (the C++ index
under chromadb 0.6.3). `smoke` builds, deploys and runs the workload once; `profile` takes
a memory profile (memray; CHROMA_MEMORY_TOOL=memray-native adds the C/C++ frames, much slower
to read) and a CPU profile (py-spy; CHROMA_PROFILES=memory or cpu for one) of the baseline under the
workload; `ab` runs run_ab (runs=5) and records the experiment whatever the verdict.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
from experiment_session import call, say, serve
from mcp import Client


async def smoke(client: Client, target: str) -> None:
    build = await call(client, "build", target=target)
    say(f"build {build['build_id']}: {build['duration_s']} s")
    dep = await call(client, "deploy", build_id=build["build_id"])
    try:
        run = await call(client, "run_workload", deployment_id=dep["deployment_id"])
        say(f"metrics: {run.get('metrics')}")
        for line in run.get("output") or []:
            say(f"  {line}")
    finally:
        await call(client, "teardown", deployment_id=dep["deployment_id"])


async def profile(client: Client, target: str) -> None:
    tool = os.environ.get("CHROMA_MEMORY_TOOL", "memray")  # memray-native: C/C++ frames too
    kinds = os.environ.get("CHROMA_PROFILES", "memory,cpu").split(",")
    for kind, args in (("profile_memory", {"tool": tool}), ("profile_cpu", {})):
        if kind[8:] not in kinds:
            continue
        label = f"baseline-{kind[8:]}" + (f"-{tool}" if kind == "profile_memory" and
                                           tool != "memray" else "")
        prof = await call(client, kind, target=target, label=label, top=12, **args)
        for key in ("top", "top_self", "scope", "note"):
            value = prof.get(key)
            for line in value if isinstance(value, list) else [value] if value else []:
                say(f"  {key}: {line}")
        say(f"{kind} {prof.get('profile_id')}: {prof.get('files', {})}")


async def ab(client: Client, target: str, patch_file: str, exp_id: str, description: str,
             hypothesis: str, evidence: str, label: str | None) -> None:
    patch = Path(patch_file).read_text()
    t0 = time.monotonic()
    run = await call(client, "run_ab", target=target, patch=patch, runs=5)
    say(f"run_ab {run['run_id']} ({time.monotonic() - t0:.0f} s): {run['verdict']}: "
        f"{run['reason']}")
    if evidence.startswith("@"):  # a file, read when the run is done (a profile may finish first)
        evidence = Path(evidence[1:]).read_text().strip()
    rec = await call(client, "record_experiment", run_id=run["run_id"], exp_id=exp_id,
                     description=description, hypothesis=hypothesis, evidence=evidence,
                     **({"profile": label} if label else {}))
    say(f"recorded: {rec}")


async def main(argv: list[str]) -> None:
    params = serve()
    target = argv[1] if len(argv) > 1 else "chroma"
    async with Client(params) as client:
        listed = await call(client, "list_targets")
        info = next(t for t in listed["targets"] if t["name"] == target)
        say(f"{target}: {info.get('readiness') or info}")
        if argv[0] == "smoke":
            await smoke(client, target)
        elif argv[0] == "profile":
            await profile(client, target)
        else:
            await ab(client, target, *argv[2:7], argv[7] if len(argv) > 7 else None)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
