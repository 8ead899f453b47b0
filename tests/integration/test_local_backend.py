"""The local backend through an MCP client: real builds, real processes, real /proc."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import Client

from autoopt.tools import procfs
from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, patch_text, processes_under

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, **args: object) -> dict:
    result = await call_done(client, tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_build_deploy_workload_collect_teardown(client: Client, workspace: Workspace) -> None:
    base = await call(client, "build", target="pyserver")
    patched = await call(
        client, "build", target="pyserver", patch=patch_text("pyserver-history-cap.patch")
    )
    assert patched["commit"] != base["commit"]
    parent = subprocess.run(
        ["git", "-C", str(workspace.state_dir / "sources" / "pyserver"), "rev-parse",
         f"{patched['commit']}^"], capture_output=True, text=True, check=True).stdout.strip()
    assert parent == base["commit"], "the patched arm is the base commit plus the patch"
    assert patched["patch_files"] == ["server.py"]

    deps = [await call(client, "deploy", build_id=b["build_id"]) for b in (base, patched)]
    cwds = {psutil.Process(d["pid"]).cwd() for d in deps}
    assert len(cwds) == 2, "the arms must run from different worktrees"
    for dep in deps:
        proc = psutil.Process(dep["pid"])
        assert "python" in proc.name() and "server.py" in " ".join(proc.cmdline())
        run = await call(client, "run_workload", deployment_id=dep["deployment_id"])
        assert {"latency_p99_ms", "throughput_qps", "error_rate"} <= set(run["metrics"])
        assert run["metrics"]["error_rate"] == 0
        reading = procfs.read_memory(dep["pid"])
        status = Path(f"/proc/{dep['pid']}/status").read_text()
        hwm_kb = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM"))
        assert reading.peak_rss_mb == round(hwm_kb / 1024, 3)
        await call(client, "teardown", deployment_id=dep["deployment_id"])
        assert not psutil.pid_exists(dep["pid"]) or psutil.Process(dep["pid"]).status() == "zombie"
    # teardown is idempotent at the backend; the tool reports an unknown id clearly
    again = await client.call_tool("teardown", {"deployment_id": deps[0]["deployment_id"]})
    assert again.is_error and "is gone (torn down" in again.content[0].text


async def test_patch_rules(client: Client) -> None:
    outside = "--- a/workload.py\n+++ b/workload.py\n@@ -1 +1 @@\n-x\n+y\n"
    result = await call_done(client, "build", {"target": "pyserver", "patch": outside})
    assert result.is_error and "workload.py" in result.content[0].text
    assert "editable" in result.content[0].text

    server = (Path(__file__).resolve().parents[2] / "targets/pyserver/src/server.py").read_text()
    line = next(x for x in server.splitlines() if x.startswith("def "))
    broken = f"--- a/server.py\n+++ b/server.py\n@@ -1,1 +1,1 @@\n-{line}XX\n+{line}YY\n"
    result = await call_done(client, "build", {"target": "pyserver", "patch": broken})
    assert result.is_error and "does not apply" in result.content[0].text

    number_line = next(
        x
        for x in server.splitlines()
        if any(c.isdigit() for c in x) and "=" in x and not x.startswith((" ", "#"))
    )
    import re

    bumped = re.sub(r"\d+", lambda m: str(int(m.group()) + 1), number_line, count=1)
    numeric = unified(server, server.replace(number_line, bumped, 1))
    result = await call_done(client, "build", {"target": "pyserver", "patch": numeric})
    assert result.is_error and "configuration tuning" in result.content[0].text
    ok = await call_done(
        client,
        "build", {"target": "pyserver", "patch": numeric, "allow_constant_tuning": True}
    )
    assert not ok.is_error, ok.content[0].text


async def test_failing_health_check_returns_log_tail(client: Client) -> None:
    server = (Path(__file__).resolve().parents[2] / "targets/pyserver/src/server.py").read_text()
    crash = _prepend_patch(server, "raise SystemExit('boom: refusing to start')")
    build = await call(client, "build", target="pyserver", patch=crash)
    result = await client.call_tool("deploy", {"build_id": build["build_id"]})
    assert result.is_error
    assert "boom: refusing to start" in result.content[0].text


async def test_cancel_mid_workload_leaves_no_process(client: Client, workspace: Workspace) -> None:
    build = await call(client, "build", target="pyserver")
    dep = await call(client, "deploy", build_id=build["build_id"])
    with anyio.move_on_after(0.7):
        await client.call_tool("run_workload", {"deployment_id": dep["deployment_id"]})
    await anyio.sleep(0.5)
    drivers = [p for p in processes_under(workspace.root) if "workload" in " ".join(p.cmdline())]
    assert drivers == [], f"workload left running: {drivers}"
    await call(client, "teardown", deployment_id=dep["deployment_id"])
    await anyio.sleep(0.3)
    assert processes_under(workspace.root) == []


async def test_batch_target(client: Client) -> None:
    build = await call(client, "build", target="batchdemo")
    dep = await call(client, "deploy", build_id=build["build_id"])
    assert dep.get("pid") is None  # a batch target starts nothing at deploy
    run = await call(client, "run_workload", deployment_id=dep["deployment_id"])
    assert run["exit_code"] == 0 and "elapsed_ms" in run["metrics"]
    await call(client, "teardown", deployment_id=dep["deployment_id"])


def unified(old: str, new: str, path: str = "server.py") -> str:
    import difflib

    return "".join(
        difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{path}", f"b/{path}")
    )


def _prepend_patch(text: str, statement: str) -> str:
    """A patch adding `statement` right before the first top-level function."""
    lines = text.splitlines(True)
    idx = next(i for i, x in enumerate(lines) if x.startswith("def "))
    return unified(text, "".join([*lines[:idx], statement + "\n", *lines[idx:]]))


async def test_crashing_workload_reports_and_leaves_nothing(
    client: Client, workspace: Workspace
) -> None:
    crash = workspace.targets_dir / "pyserver" / "workload-crash.sh"
    crash.write_text('#!/usr/bin/env bash\nsleep 30 &\necho "requests=1"\nkill -SEGV $$\n')
    build = await call(client, "build", target="pyserver")
    dep = await call(client, "deploy", build_id=build["build_id"])
    run = await call(
        client, "run_workload", deployment_id=dep["deployment_id"], workload="workload-crash.sh"
    )
    assert run["exit_code"] != 0
    await call(client, "teardown", deployment_id=dep["deployment_id"])
    await anyio.sleep(0.3)
    assert processes_under(workspace.root) == []
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "30"]
    ], "the workload's child survived"


async def test_read_and_search_source_at_a_revision(client: Client) -> None:
    found = await client.call_tool(
        "search_source", {"target": "pyserver", "pattern": "def _snapshot_store", "glob": "*.py"}
    )
    hits = found.structured_content
    path, line, _ = found.content[0].text.splitlines()[0].split(":", 2)
    assert path == "server.py" and not hits["truncated"] and hits["count"] == 1
    read = await client.call_tool(
        "read_source",
        {"target": "pyserver", "path": "server.py", "start_line": int(line),
         "end_line": int(line) + 2},
    )
    assert "def _snapshot_store" in read.content[0].text  # plain lines, not JSON
    assert '"text"' not in read.content[0].text and "text" not in read.structured_content
    text = await call(
        client,
        "read_source",
        target="pyserver",
        path="server.py",
        start_line=int(line),
        end_line=int(line) + 2,
    )
    assert text["revision"] == hits["revision"] and text["end_line"] == int(line) + 2
    outside = await client.call_tool("read_source", {"target": "pyserver", "path": "../target.md"})
    assert outside.is_error and "'..'" in outside.content[0].text
