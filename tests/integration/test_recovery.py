"""What a crashed server leaves behind is found and cleaned up by the next one."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.tools.abrun import ABRun
from autoopt.tools.state import save_model
from autoopt.tools.workspace import Workspace

pytestmark = pytest.mark.anyio


async def test_leftover_deployment_is_torn_down_and_run_marked_crashed(
    workspace: Workspace,
) -> None:
    # a "service" a previous server started in its own process group, then crashed
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    state = workspace.state("")
    (state / "deployments.json").write_text(json.dumps({"dep-orphan": {
        "id": "dep-orphan", "build_id": "b-x", "target": "pyserver", "backend": "local",
        "kind": "service", "pid": orphan.pid,
        "pid_start": psutil.Process(orphan.pid).create_time(),
    }}))
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    run = ABRun(id="run-crashed", target="pyserver", backend="local", base="0" * 40, runs=5,
                warmup=1, order="abba", seed=1, sequential=False, metric="peak_rss_mb",
                direction="lower", min_effect_pct=1.0, server_pid=dead_pid.pid)
    save_model(workspace.state("runs", "run-crashed") / "run.json", run)

    async with Client(create_server(workspace)) as client:
        status = await client.call_tool("experiment_status", {"target": "pyserver"})
    deadline = time.monotonic() + 5
    while orphan.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert orphan.poll() is not None, "the orphaned service is still running"
    interrupted = status.structured_content["interrupted_runs"]
    assert interrupted[0]["run_id"] == "run-crashed"
    assert interrupted[0]["status"] == "crashed"
    assert json.loads((state / "deployments.json").read_text()) == {}


async def test_reused_pid_is_not_killed(workspace: Workspace) -> None:
    """A recorded pid whose start time differs belongs to someone else: left alone."""
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (workspace.state("") / "deployments.json").write_text(json.dumps({"dep-old": {
            "id": "dep-old", "build_id": "b-x", "target": "pyserver", "backend": "local",
            "kind": "service", "pid": bystander.pid, "pid_start": 1.0,
        }}))
        async with Client(create_server(workspace)):
            pass
        assert bystander.poll() is None
    finally:
        os.killpg(bystander.pid, 9)
        bystander.wait()


async def test_a_leftover_that_resists_does_not_stop_the_server(workspace: Workspace) -> None:
    """A dead server's build the next one cannot discard (here: a backend that does not
    exist) is left for later; the server starts and answers."""
    folder = workspace.state("builds", "b-resists")
    (folder / "build.json").write_text(json.dumps({
        "id": "b-resists", "target": "pyserver", "backend": "no-such-backend", "base": "0" * 40,
        "commit": "0" * 40, "tree": str(folder / "tree"),
    }))
    async with Client(create_server(workspace)) as client:
        listed = await client.call_tool("list_targets", {})
    assert not listed.is_error
    assert (folder / "build.json").is_file()


async def test_corrupt_state_files_are_moved_aside_not_fatal(workspace: Workspace) -> None:
    """A truncated deployments.json, job, build and run record (a disk that filled, a kill
    mid-copy): a real server process starts, answers, and moves each aside with a warning."""
    import sys

    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    state = workspace.state("")
    corrupt = {
        state / "deployments.json": b'{"dep-1": {"deployment": {"id": "dep-1", "bui',
        workspace.state("jobs") / "b-cut.json": b'{"id": "b-cut", "kind": "build"',
        workspace.state("builds", "b-cut") / "build.json": b'{"id": "b-cut", "tar',
        workspace.state("runs", "run-cut") / "run.json": b"\xff\xfe{not json",
        workspace.state("runs", "run-odd") / "run.json": b'{"status": "running", "samples": 7}',
        workspace.state("runs", "run-bad") / "run.json":
            b'{"target": "pyserver", "status": "crashed", "samples": 3}',
    }
    for path, raw in corrupt.items():
        path.write_bytes(raw)
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "autoopt.server.cli", "serve"],
        env={"AUTOOPT_WORKSPACE": str(workspace.root), "PATH": os.environ["PATH"]})
    errlog = (workspace.root / "stderr.log").open("w+")
    async with Client(stdio_client(server, errlog=errlog)) as client:
        listed = await client.call_tool("list_targets", {})
        status = await client.call_tool("experiment_status", {"target": "pyserver"})
        run = await client.call_tool("get_run", {"run_id": "run-cut"})
        build = await client.call_tool("build", {"build_id": "b-cut"})
    assert not listed.is_error and not status.is_error, status.content[0].text
    assert run.is_error and "unknown run" in run.content[0].text
    assert build.is_error and "b-cut" in build.content[0].text
    for path, raw in corrupt.items():
        assert not path.exists(), path
        [aside] = path.parent.glob(f"{path.name}.corrupt-*")
        assert aside.read_bytes() == raw
    errlog.seek(0)
    assert "deployments.json is corrupt" in errlog.read()
    async with Client(create_server(workspace)) as client:  # the next one: nothing to move
        assert not (await client.call_tool("list_targets", {})).is_error
    assert len(list(state.rglob("*.corrupt-*"))) == len(corrupt)
