"""The server as one-shot clients see it: the MCP Inspector CLI, one process per call.

Checks, as a user of the Inspector CLI (or of Claude Desktop, which also gives up at about
60 s) would:
1. a run_ab that takes over 90 s (a batch target that sleeps 12 s per run) answers in
   under 60 s with a run id; repeated one-shot get_run calls then give the decision, and
   it is the one an in-process client that waited got (same values);
2. build, deploy, run_workload and teardown, each in its own Inspector process (stdio:
   each call starts and ends its own `autoopt serve`);
3. resources/read autoopt://program.md on a fresh workspace with no program.md.
It also measures the cost of running run_ab as a job against a direct engine call.

    python -m bench.inspector [--sleep 12] [--out docs/inspector.md]

Needs node/npx (the Inspector installs from npm). Not part of the test suite: it takes
about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from tests.fixtures.sleeper import add_sleeper

REPO = Path(__file__).resolve().parent.parent
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
CLIENT_LIMIT_S = 60.0

def make_workspace(root: Path, sleep: float, *, with_pyserver: bool) -> Path:
    add_sleeper(root, sleep)
    if with_pyserver:
        import shutil

        shutil.copytree(REPO / "targets" / "pyserver", root / "targets" / "pyserver",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


class Inspector:
    """Runs one Inspector CLI process per call and keeps count of calls and bytes."""

    def __init__(self, target: list[str], env: dict[str, str]) -> None:
        self.target, self.env = target, env
        self.calls: list[dict[str, Any]] = []

    def __call__(self, method: str, *args: str) -> tuple[float, dict[str, Any]]:
        env_args = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        argv = ["npx", "-y", INSPECTOR, "--cli", *self.target, *env_args, "--method", method,
                *args]
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        took = time.monotonic() - t0
        self.calls.append({"method": method, "args": args, "s": took,
                           "bytes": len(proc.stdout.encode()), "exit": proc.returncode})
        if proc.returncode != 0:
            raise RuntimeError(f"inspector {method} {args} exit {proc.returncode}: "
                               f"{proc.stderr[-1500:]}{proc.stdout[-500:]}")
        return took, json.loads(proc.stdout)

    def tool(self, name: str, **args: object) -> tuple[float, dict[str, Any]]:
        pairs = [f"{k}={v}" for k, v in args.items()]
        took, out = self("tools/call", "--tool-name", name, *(["--tool-arg", *pairs] if pairs
                                                               else []))
        if out.get("isError"):
            raise RuntimeError(f"{name} failed: {out['content'][0]['text']}")
        return took, out["structuredContent"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def long_run_ab(root: Path, sleep: float) -> dict[str, Any]:
    """Check 1 against `autoopt serve --http` (a server that outlives each Inspector)."""
    port = free_port()
    env = {**os.environ, "AUTOOPT_WORKSPACE": str(root)}
    server = subprocess.Popen([sys.executable, "-m", "autoopt.server.cli", "serve", "--http",
                               "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        cli = Inspector([url], {})
        t0 = time.monotonic()
        first_s, first = cli.tool("run_ab", target="sleeper", runs=3, warmup=1, seed=11)
        polls = []
        view = first
        while view["status"] == "running":
            took, view = cli.tool("get_run", run_id=first["run_id"], wait_s=40)
            polls.append(took)
        total = time.monotonic() - t0
        waited = anyio.run(_waited_view, root, first["run_id"])
    finally:
        server.terminate()
        server.wait(timeout=20)
    return {
        "first_s": first_s, "first_status": first["status"], "polls": polls,
        "total_s": total, "verdict": view["verdict"], "values": view["values"],
        "same_as_waiting_client": {k: v for k, v in view.items() if k != "plot"}
        == {k: v for k, v in waited.items() if k != "plot"},
        "calls": len(cli.calls), "bytes": sum(c["bytes"] for c in cli.calls),
        "max_call_s": max(c["s"] for c in cli.calls),
    }


async def _waited_view(root: Path, run_id: str) -> dict[str, Any]:
    """The view an in-process client gets by waiting on the run."""
    from mcp import Client

    from autoopt.server.app import create_server
    from autoopt.server.demo import call_until_done
    from autoopt.tools.workspace import Workspace

    async with Client(create_server(Workspace(root))) as client:
        result = await call_until_done(client, "get_run", {"run_id": run_id, "wait_s": 40})
    return dict(result.structured_content)


def one_shot_chain(root: Path) -> dict[str, Any]:
    """Check 2: build -> deploy -> run_workload -> teardown, one stdio server per call."""
    cli = Inspector([sys.executable, "-m", "autoopt.server.cli", "serve"],
                    {"AUTOOPT_WORKSPACE": str(root), "PATH": os.environ["PATH"]})
    _, build = cli.tool("build", target="pyserver")
    _, dep = cli.tool("deploy", build_id=build["build_id"])
    _, run = cli.tool("run_workload", deployment_id=dep["deployment_id"])
    _, down = cli.tool("teardown", deployment_id=dep["deployment_id"])
    return {"calls": len(cli.calls), "workload_exit": run["exit_code"],
            "metrics": sorted(run["metrics"]), "torn_down": down["torn_down"],
            "max_call_s": max(c["s"] for c in cli.calls)}


def program_on_fresh(root: Path) -> dict[str, Any]:
    """Check 3: program.md where the workspace has none; and the tool list, --strict."""
    cli = Inspector([sys.executable, "-m", "autoopt.server.cli", "serve"],
                    {"AUTOOPT_WORKSPACE": str(root), "PATH": os.environ["PATH"]})
    _, out = cli("resources/read", "--uri", "autoopt://program.md")
    _, listed = cli("tools/list", "--strict")  # exit 6 on a portability error: raises
    return {"chars": len(out["contents"][0]["text"]), "has_own": (root / "program.md").exists(),
            "tools": len(listed["tools"]),
            "tools_list_bytes": len(json.dumps(listed, separators=(",", ":"))),
            "tools_list_printed": cli.calls[-1]["bytes"]}


async def job_overhead(root: Path, rounds: int) -> dict[str, Any]:
    """run_ab as a job (the tool) against the engine called directly, same target, rounds
    interleaved; the sleeper sleeps 0 s so the harness dominates."""
    from mcp import Client

    from autoopt.server.app import create_server
    from autoopt.tools.workspace import Workspace

    server = create_server(Workspace(root))
    engine = server.engine  # type: ignore[attr-defined]
    tool_s, direct_s = [], []
    args = {"target": "sleeper", "runs": 3, "warmup": 0}
    async with Client(server) as client:
        for i in range(rounds):
            for kind in (("tool", "direct") if i % 2 == 0 else ("direct", "tool")):
                t0 = time.monotonic()
                if kind == "tool":
                    result = await client.call_tool("run_ab", {**args, "seed": i})
                    assert result.structured_content["status"] == "done"
                    tool_s.append(time.monotonic() - t0)
                else:
                    await engine.run_ab("sleeper", runs=3, warmup=0, seed=i)
                    direct_s.append(time.monotonic() - t0)
    ratio = statistics.median(tool_s) / statistics.median(direct_s)
    return {"rounds": rounds, "tool_median_s": statistics.median(tool_s),
            "direct_median_s": statistics.median(direct_s), "ratio": ratio}


def report(results: dict[str, Any], sleep: float) -> str:
    a, b, c, d = (results[k] for k in ("long", "chain", "program", "overhead"))
    ok = "yes" if a["same_as_waiting_client"] else "NO"
    return "\n".join([
        "# One-shot clients: the MCP Inspector CLI, one process per call",
        "",
        f"Generated by `python -m bench.inspector --sleep {sleep:g}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} cores). Clients such as the "
        f"Inspector CLI and Claude Desktop give up on a call after about {CLIENT_LIMIT_S:.0f} s.",
        "",
        f"## run_ab of a batch target that sleeps {sleep:g} s per run (3 runs per arm + 1 "
        "warmup pair)",
        "",
        "| what | value |",
        "| --- | --- |",
        f"| first call (run_ab) answered in | {a['first_s']:.1f} s, status {a['first_status']} |",
        f"| get_run calls until the decision | {len(a['polls'])} "
        f"({', '.join(f'{p:.1f}' for p in a['polls'])} s) |",
        f"| longest single call | {a['max_call_s']:.1f} s |",
        f"| whole run, first call to decision | {a['total_s']:.1f} s |",
        f"| client calls / bytes returned to the client | {a['calls']} / {a['bytes']:,} |",
        f"| decision | {a['verdict']} |",
        f"| same decision and values as an in-process client that waited | {ok} |",
        "",
        "## build, deploy, run_workload, teardown: one `autoopt serve` (stdio) per call",
        "",
        f"{c_calls(b)}",
        "",
        "## autoopt://program.md on a workspace without one, and the tool list",
        "",
        f"Read {c['chars']:,} characters (the installed package's copy; the workspace has "
        f"{'one' if c['has_own'] else 'none'}). `tools/list --strict` passed: {c['tools']} "
        f"tools, {c['tools_list_bytes']:,} bytes of JSON ({c['tools_list_printed']:,} as the "
        "Inspector prints it, indented).",
        "",
        "## Job overhead",
        "",
        f"run_ab through the tool (a job, awaited) against `engine.run_ab` called directly, "
        f"on the sleeper with 0 s sleep, {d['rounds']} interleaved rounds each: median "
        f"{d['tool_median_s']:.2f} s against {d['direct_median_s']:.2f} s, ratio "
        f"{d['ratio']:.3f}.",
        "",
    ])


def c_calls(b: dict[str, Any]) -> str:
    return (f"{b['calls']} Inspector processes, each starting its own server: the workload ran "
            f"(exit {b['workload_exit']}, metrics {', '.join(b['metrics'])}) on the deployment "
            f"made by the previous process, and teardown stopped it (torn_down "
            f"{b['torn_down']}). Longest call {b['max_call_s']:.1f} s.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=12.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5, help="job-overhead rounds")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "inspector.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoopt-inspector-") as tmp:
        base = Path(tmp)
        results = {
            "long": long_run_ab(make_workspace(base / "long", args.sleep, with_pyserver=False),
                                args.sleep),
            "chain": one_shot_chain(make_workspace(base / "chain", 0, with_pyserver=True)),
            "program": program_on_fresh(make_workspace(base / "fresh", 0, with_pyserver=False)),
            "overhead": anyio.run(job_overhead,
                                  make_workspace(base / "over", 0, with_pyserver=False),
                                  args.rounds),
        }
    text = report(results, args.sleep)
    args.out.write_text(text)
    print(text)
    print(json.dumps(results, indent=1, default=str), file=sys.stderr)
    long = results["long"]
    fine = (long["first_s"] < CLIENT_LIMIT_S and long["max_call_s"] < CLIENT_LIMIT_S
            and long["same_as_waiting_client"] and long["total_s"] > 90)
    return 0 if fine else 1


if __name__ == "__main__":
    raise SystemExit(main())
