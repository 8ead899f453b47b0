"""The recorded RocksDB experiment, as a user drives it: one stdio MCP session against
`autoopt serve` on this checkout (local backend). Out of the test suite: the first build
of db_bench from Debian's source takes minutes.

    .venv/bin/python examples/rocksdb_experiment.py PATCH EXP_ID [--hypothesis TEXT]
        [--description TEXT] [--runs N] [--profile-only | --build-only]

1. list_targets: rocksdb must be ready on local;
2. profile_memory(tool='heaptrack') of the baseline, label rocksdb-baseline-heap (skipped
   when that profile is already stored);
3. run_ab of PATCH (runs >= 5), printing each arm's build time;
4. record_experiment with the verdict it gave, whatever it is, and the profile.
Everything the session prints goes to stdout; tee it into the record's folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from autoopt.server.demo import call_until_done

ROOT = Path(__file__).resolve().parent.parent
TARGET = "rocksdb"
PROFILE = "rocksdb-baseline-heap"


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


async def progress(done: float, total: float | None, message: str | None) -> None:
    say(f"  [{done:.0f}/{total or 0:.0f}] {message}")


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    say(f"-> {tool} {json.dumps({k: v for k, v in args.items() if k != 'patch'})}")
    result = await call_until_done(client, tool, args, progress_callback=progress)
    text = "\n".join(c.text for c in result.content if c.type == "text")
    print(text, flush=True)
    if result.is_error:
        raise SystemExit(f"{tool} failed")
    return result.structured_content or {}


async def main(ns: argparse.Namespace) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "autoopt.server.cli", "serve"],
        env={"AUTOOPT_WORKSPACE": str(ROOT), "PATH": "/usr/local/bin:/usr/bin:/bin",
             "HOME": str(Path.home())},
    )
    async with Client(server) as client:
        listed = await call(client, "list_targets", {})
        target = {t["name"]: t for t in listed["targets"]}[TARGET]
        if target["readiness"]["local"] != "ready":
            raise SystemExit(f"rocksdb is not ready on local: {target['readiness']['local']}")
        stored = ROOT / "results" / TARGET / "local" / "profiles" / f"{PROFILE}-stacks.txt"
        if not stored.exists():
            await call(client, "profile_memory",
                       {"target": TARGET, "tool": "heaptrack", "label": PROFILE, "top": 8})
        if ns.profile_only:
            return
        if ns.build_only:  # one build of PATCH in a build-cache slot: how long B's build takes
            built = await call(client, "build", {"target": TARGET, "patch": ns.patch.read_text()})
            say(f"build {built['build_id']}: {built.get('duration_s')} s")
            await call(client, "teardown", {"build_id": built["build_id"]})
            return
        run = await call(client, "run_ab", {"target": TARGET, "patch": ns.patch.read_text(),
                                            "runs": ns.runs})
        state = ROOT / ".autoopt" / "runs" / run["run_id"] / "run.json"
        for step in json.loads(state.read_text())["journal"]["steps"]:
            if step["phase"] in ("source", "build"):
                say(f"arm {step.get('arm')} {step['phase']}: {step['shell'][:100]} "
                    f"({step.get('elapsed_s') or 0:.1f} s) {step.get('note') or ''}")
        await call(client, "record_experiment", {
            "run_id": run["run_id"], "exp_id": ns.exp_id, "profile": PROFILE,
            "description": ns.description, "hypothesis": ns.hypothesis,
        })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch", type=Path)
    parser.add_argument("exp_id")
    parser.add_argument("--description", default=None)
    parser.add_argument("--hypothesis", default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile-only", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="build PATCH, no A/B")
    anyio.run(main, parser.parse_args())
