"""`autoopt demo`: the whole loop on pyserver through a real MCP client session.

It starts `autoopt serve` as a stdio subprocess, exactly as a desktop client would, and
drives it: targets, a workload check, a baseline profile, an A/A baseline (SAME when the
metric is quiet), then three experiments (cap history + shallow copy; list -> set for
membership; generators for the statistics), each run_ab'd and recorded; a KEEP's profile
diff is appended to its record as an addendum. The summary table shows each verdict as
run_ab returned it. The workspace is a fresh copy of this checkout's
targets (default: demo-runs/<timestamp>/), so the demo can run again and again.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = [
    (
        "exp001",
        "pyserver-history-cap.patch",
        "peak_rss_mb",
        "cap HISTORY and keep shallow copies",
        "HISTORY keeps a deep copy of the whole store on every /process and is never trimmed; "
        "capping it and storing shallow copies removes most of the peak",
    ),
    (
        "exp002",
        "pyserver-set-membership.patch",
        "latency_p50_ms",
        "set for membership checks in /ingest",
        "ingest checks membership with `in` on a list (O(n) per item); a set makes it O(1) and "
        "cuts the typical request's latency",
    ),
    (
        "exp003",
        "pyserver-generator-stats.patch",
        "peak_rss_mb",
        "generators instead of intermediate lists in /stats",
        "the statistics materialise several full lists; streaming them may lower the peak",
    ),
]


def say(message: str) -> None:
    print(message, flush=True)


class Session:
    """A thin helper over the MCP client that fails loudly on tool errors."""

    def __init__(self, client: Any, tally: list[dict[str, Any]] | None = None) -> None:
        self.client = client
        self.tally = tally

    async def call(self, tool: str, **args: Any) -> dict[str, Any]:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            if message:
                where = f"[{int(done)}/{int(total)}] " if total else ""
                say(f"    {where}{message}")

        result = await call_until_done(self.client, tool, args, progress, self.tally)
        if result.is_error:
            raise SystemExit(f"{tool} failed: {result.content[0].text}")
        return result.structured_content or {}


WAITERS = {
    "run_ab": ("get_run", "run_id"),
    "profile_memory": ("get_profile", "profile_id"),
    "profile_cpu": ("get_profile", "profile_id"),
    "explain_query": ("get_profile", "profile_id"),
    "build": ("build", "build_id"),
}


async def call_until_done(
    client: Any,
    tool: str,
    args: dict[str, Any],
    progress_callback: Any = None,
    tally: list[dict[str, Any]] | None = None,
) -> Any:
    """Call a tool; while it answers status=running, wait with its get_* tool (each call
    stays well under a client's 60 s limit). `tally` gets the size of every answer."""
    progress = progress_callback
    result = await client.call_tool(tool, args, progress_callback=progress)
    _count(tally, tool, result)
    waiter = WAITERS.get(tool)
    while waiter and not result.is_error and (result.structured_content or {}).get(
        "status"
    ) == "running":
        get, key = waiter
        result = await client.call_tool(
            get, {key: result.structured_content[key], "wait_s": 40}, progress_callback=progress
        )
        _count(tally, get, result)
    return result


def _count(tally: list[dict[str, Any]] | None, tool: str, result: Any) -> None:
    """What a client hands the model for one answer: text, structured content, images."""
    if tally is None:
        return
    import json

    text = sum(len(c.text) for c in result.content if c.type == "text")
    images = sum(len(c.data) for c in result.content if c.type == "image")
    structured = len(json.dumps(result.structured_content)) if result.structured_content else 0
    tally.append({"tool": tool, "text": text, "structured": structured, "images": images})


def prepare_workspace(dest: Path | None) -> Path:
    root = dest or REPO / "demo-runs" / time.strftime("%Y%m%d-%H%M%S")
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty; give a new --workspace")
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        REPO / "targets", root / "targets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in ("program.md", "program-reference.md"):
        shutil.copy2(REPO / name, root / name)
    return root


async def demo(
    root: Path, runs: int, backend: str, tally: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    import os

    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "autoopt.server.cli", "serve"],
        env={
            "AUTOOPT_WORKSPACE": str(root),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
        },
    )
    patches = REPO / "examples" / "patches"
    rows: list[dict[str, Any]] = []
    async with Client(params) as client:
        s = Session(client, tally)
        if tally is not None:
            import json

            listed = await client.list_tools()
            tools = [t.model_dump(mode="json", by_alias=True, exclude_none=True)
                     for t in listed.tools]
            tally.append({"tool": "tools/list", "text": 0, "images": 0,
                          "structured": len(json.dumps({"tools": tools}))})
        say(f"autoopt demo: workspace {root}, backend {backend}, {runs} runs per arm")
        targets = await s.call("list_targets")
        info = next(t for t in targets["targets"] if t["name"] == "pyserver")
        say(f"[setup] pyserver: {info['metric']}, editable {info['editable']}")
        say("[phase 0] workload check: build, deploy, one workload run, teardown")
        build = await s.call("build", target="pyserver", backend=backend)
        dep = await s.call("deploy", build_id=build["build_id"])
        run = await s.call("run_workload", deployment_id=dep["deployment_id"])
        await s.call("teardown", deployment_id=dep["deployment_id"])
        say(f"    workload metrics: {run['metrics']}")
        say("[phase 1] memory profile of the baseline at its peak (memray)")
        prof = await s.call("profile_memory", target="pyserver", label="baseline", backend=backend)
        for line in prof["top"][:3]:
            say(f"    {line}")
        say("[phase 2] candidates from the profile")
        for exp_id, _, _, description, hypothesis in EXPERIMENTS:
            evidence = (
                f"top path at the peak: {prof['top'][0]}"
                if exp_id == "exp001"
                else "profile_cpu / latency: see hints.md"
            )
            await s.call(
                "record_candidate",
                target="pyserver",
                env=backend,
                title=description,
                evidence=evidence,
                root_cause=hypothesis,
                fix=description,
                targeted_workload="workload.sh (full mix)",
            )
        say("[baseline] A/A run: the noise floor")
        aa = await s.call("run_ab", target="pyserver", runs=3, warmup=0, backend=backend, seed=1)
        await s.call(
            "record_experiment",
            run_id=aa["run_id"],
            exp_id="baseline",
            description="baseline (A/A, unmodified)",
            output_type="report",
            hypothesis="A/A: both arms are the same commit; measures the noise floor",
            profile="baseline",
        )
        rows.append(_row("baseline", aa))
        for exp_id, patch_name, metric, description, hypothesis in EXPERIMENTS:
            say(f"[phase 3] {exp_id}: {description} (primary metric {metric})")
            patch = (patches / patch_name).read_text()
            result = await s.call(
                "run_ab", target="pyserver", patch=patch, runs=runs, backend=backend, metric=metric
            )
            say(f"    {result['verdict']}: {result['reason']}")
            record = await s.call(
                "record_experiment",
                run_id=result["run_id"],
                exp_id=exp_id,
                description=description,
                hypothesis=hypothesis,
                output_type="pr" if result["verdict"] == "KEEP" else "report",
                **({"profile": "baseline"} if exp_id == "exp001" else {}),
            )
            say(f"    recorded {record['directory']} (frontier moved: {record['frontier_moved']})")
            rows.append(_row(exp_id, result))
            if exp_id == "exp001" and result["verdict"] == "KEEP":
                say("[phase 1 again] profile at the new frontier, diffed against the baseline")
                await s.call(
                    "profile_memory", target="pyserver", label="after-exp001", backend=backend
                )
                diff = await s.call(
                    "diff_profiles",
                    target="pyserver",
                    env=backend,
                    before="baseline",
                    after="after-exp001",
                )
                say(f"    heap at the peak: {diff['total']}")
                changes = "\n".join(f"- {c}" for c in diff.get("changes", [])[:5])
                await s.call(
                    "record_experiment",
                    run_id=result["run_id"],
                    exp_id=exp_id,
                    addendum=f"diff_profiles(before='baseline', after='after-exp001'): heap at "
                    f"the peak {diff['total']}\n\n{changes}",
                )
                say(f"    addendum (the profile diff) appended to {exp_id}'s README")
    return rows


def _row(exp_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "exp_id": exp_id,
        "metric": result["metric"],
        "verdict": result["verdict"],
        "change": result.get("change_pct"),
        "ci": result.get("ci_pct") or (None, None),
    }


def summary(rows: list[dict[str, Any]]) -> str:
    out = [
        "",
        "| experiment | metric | decision | change | 95% CI of B/A |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        change = "-" if r["change"] is None else f"{r['change']:+.1f}%"
        lo, hi = r["ci"]
        ci = "-" if lo is None else f"{lo:+.1f}% .. {hi:+.1f}%"
        out.append(f"| {r['exp_id']} | {r['metric']} | {r['verdict']} | {change} | {ci} |")
    return "\n".join(out)


def run_demo(runs: int = 5, backend: str = "local", workspace: Path | None = None) -> int:
    if runs < 3:
        raise SystemExit("--runs must be at least 3 (the methodology's N >= 3 rule)")
    started = time.monotonic()
    root = prepare_workspace(workspace)
    rows = anyio.run(demo, root, runs, backend)
    say(summary(rows))
    say(f"\nresults: {root / 'results' / 'pyserver' / backend}")
    say(f"demo wall time: {time.monotonic() - started:.1f} s")
    return 0
