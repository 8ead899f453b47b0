"""Long work as server-side jobs: bounded waits, ids that outlive a server, one-shot clients,
SIGTERM, and bad input. Real servers (in-process and `autoopt serve` subprocesses), a real
batch target whose runs sleep, and the real pyserver service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import Client, StdioServerParameters

from autoopt.server.app import create_server
from autoopt.tools.workspace import Workspace
from tests.conftest import Rpc, processes_under
from tests.fixtures.sleeper import add_sleeper

pytestmark = pytest.mark.anyio

def stdio(workspace: Workspace) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "autoopt.server.cli", "serve"],
        env={"AUTOOPT_WORKSPACE": str(workspace.root), "PATH": os.environ["PATH"]},
    )


async def one_shot(workspace: Workspace, tool: str, **args: object) -> dict:
    """One client process per call, as the Inspector CLI does: connect, call, close."""
    async with Client(stdio(workspace)) as client:
        result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_run_ab_answers_running_then_get_run_gives_the_same_decision(
    workspace: Workspace,
) -> None:
    add_sleeper(workspace.root, 2.0)
    async with Client(create_server(workspace)) as starter:
        first = await starter.call_tool(
            "run_ab", {"target": "sleeper", "runs": 3, "warmup": 0, "seed": 5, "wait_s": 1}
        )
        assert not first.is_error, first.content[0].text
        running = first.structured_content
        assert running["status"] == "running" and "verdict" not in running
        run_id = running["run_id"]
        assert running["next_call"] == f"get_run(run_id='{run_id}', wait_s=40)"
        assert "[running]" in first.content[0].text and len(first.content) == 1
        # another server on the workspace waits for it and gets the decision
        async with Client(create_server(workspace)) as other:
            polls = 0
            while True:
                polls += 1
                answer = await other.call_tool("get_run", {"run_id": run_id, "wait_s": 5})
                assert not answer.is_error, answer.content[0].text
                if answer.structured_content["status"] != "running":
                    break
            assert polls >= 2, "a 6-run job cannot finish inside one 5 s wait"
        waited = await starter.call_tool("get_run", {"run_id": run_id, "wait_s": 0})
    final = answer.structured_content
    assert final["status"] == "done" and final["verdict"] in ("SAME", "DISCARD", "INCONCLUSIVE")
    assert final["values"] == waited.structured_content["values"]
    assert len(final["values"]["A"]) == len(final["values"]["B"]) == 3
    assert {k: v for k, v in final.items() if k != "plot"} == {
        k: v for k, v in waited.structured_content.items() if k != "plot"
    }


async def test_ids_outlive_the_server_one_process_per_call(workspace: Workspace) -> None:
    """build, deploy, run_workload, teardown: each call in its own `autoopt serve`."""
    build = await one_shot(workspace, "build", target="pyserver")
    assert build["status"] == "done"
    dep = await one_shot(workspace, "deploy", build_id=build["build_id"])
    assert psutil.pid_exists(dep["pid"]), "the kept deployment died with its server"
    run = await one_shot(workspace, "run_workload", deployment_id=dep["deployment_id"])
    assert run["exit_code"] == 0 and "latency_p99_ms" in run["metrics"]
    await one_shot(workspace, "teardown", deployment_id=dep["deployment_id"])
    deadline = time.monotonic() + 5
    while psutil.pid_exists(dep["pid"]) and time.monotonic() < deadline:
        await anyio.sleep(0.1)
    assert not psutil.pid_exists(dep["pid"]) or psutil.Process(dep["pid"]).status() == "zombie"
    async with Client(stdio(workspace)) as client:
        gone = await client.call_tool("run_workload", {"deployment_id": dep["deployment_id"]})
        assert gone.is_error and "is gone (torn down" in gone.content[0].text
        again = await client.call_tool("deploy", {"build_id": build["build_id"]})
        assert not again.is_error, again.content[0].text
        removed = await client.call_tool("teardown", {"build_id": build["build_id"]})
        assert removed.structured_content["deployments"] == [
            again.structured_content["deployment_id"]
        ]
        missing = await client.call_tool("deploy", {"build_id": build["build_id"]})
        both = await client.call_tool("teardown", {})
    assert missing.is_error and "is gone: removed with teardown" in missing.content[0].text
    assert both.is_error and "deployment_id" in both.content[0].text
    assert not Path(build_tree(workspace, build["build_id"])).exists()
    assert processes_under(workspace.root) == []


def build_tree(workspace: Workspace, build_id: str) -> str:
    data = json.loads((workspace.state_dir / "builds" / build_id / "build.json").read_text())
    return data["tree"]


async def test_program_md_on_a_workspace_without_one(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    (root / "targets").mkdir(parents=True)
    add_sleeper(root, 0.1)
    async with Client(stdio(Workspace(root))) as client:
        listed = await client.list_resources()
        for resource in listed.resources:
            text = (await client.read_resource(resource.uri)).contents[0].text
            assert text, resource.uri
        program = await client.read_resource("autoopt://program.md")
        targets = await client.call_tool("list_targets", {})
    assert "profile" in program.contents[0].text.lower()
    served = targets.structured_content["program_md"]
    assert served.endswith("program.md") and not served.startswith(str(root))


async def test_sigterm_mid_run_stops_the_service_and_keeps_samples(
    workspace: Workspace,
) -> None:
    cmd = [sys.executable, "-m", "autoopt.server.cli", "serve"]
    env = {**os.environ, "AUTOOPT_WORKSPACE": str(workspace.root)}
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        rpc = Rpc(server)
        rpc.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                "clientInfo": {"name": "t", "version": "0"}})
        rpc.notify("notifications/initialized")
        answer = rpc.call("tools/call", {"name": "run_ab", "arguments": {
            "target": "pyserver", "runs": 5, "warmup": 0, "wait_s": 0}})
        run_id = answer["structuredContent"]["run_id"]
        run_file = workspace.state_dir / "runs" / run_id / "run.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for one sample and a live service
            data = json.loads(run_file.read_text())
            services = [p for p in processes_under(workspace.state_dir) if _python(p)]
            if data["samples"] and services:
                break
            await anyio.sleep(0.2)
        assert services, "no service came up"
        server.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        server.wait(timeout=20)
        _gone = psutil.wait_procs(services, timeout=max(0.1, 10 - (time.monotonic() - t0)))
        assert all(not p.is_running() or p.status() == "zombie" for p in services)
        assert time.monotonic() - t0 < 10
        data = json.loads(run_file.read_text())
        assert data["status"] == "interrupted", data["status"]
        assert len(data["samples"]) >= 1
        jobs = json.loads((workspace.state_dir / "jobs" / f"{run_id}.json").read_text())
        assert jobs["status"] == "interrupted"
    finally:
        if server.poll() is None:
            server.kill()


def _python(proc: psutil.Process) -> bool:
    try:
        return "python" in proc.name()
    except psutil.Error:  # it ended meanwhile (a batch step, a health probe)
        return False


async def test_bad_ids_and_waits(client: Client, workspace: Workspace) -> None:
    unknown = await client.call_tool("get_run", {"run_id": "run-nope"})
    assert unknown.is_error and "run-nope" in unknown.content[0].text
    bad = await client.call_tool("get_run", {"run_id": "../etc"})
    assert bad.is_error and "'../etc'" in bad.content[0].text
    for tool, arg in (("cancel_run", "run_id"), ("get_profile", "profile_id"),
                      ("build", "build_id")):
        result = await client.call_tool(tool, {arg: "x-unknown"})
        assert result.is_error and "x-unknown" in result.content[0].text, tool
    too_long = await client.call_tool("get_run", {"run_id": "run-x", "wait_s": 500})
    assert too_long.is_error and "50" in too_long.content[0].text
    add_sleeper(workspace.root, 0.1)
    done = await client.call_tool("run_ab", {"target": "sleeper", "runs": 3, "warmup": 0})
    assert done.structured_content["status"] == "done"
    again = await client.call_tool("cancel_run", {"run_id": done.structured_content["run_id"]})
    assert again.is_error and "had already finished" in again.content[0].text


async def test_cancel_run_from_another_server(workspace: Workspace) -> None:
    add_sleeper(workspace.root, 3.0)
    async with Client(create_server(workspace)) as owner:
        started = await owner.call_tool(
            "run_ab", {"target": "sleeper", "runs": 3, "warmup": 0, "wait_s": 0.5})
        run_id = started.structured_content["run_id"]
        async with Client(create_server(workspace)) as other:
            cancelled = await other.call_tool("cancel_run", {"run_id": run_id})
        assert not cancelled.is_error, cancelled.content[0].text
        assert cancelled.structured_content["status"] == "cancelled"
        run = await owner.call_tool("get_run", {"run_id": run_id, "wait_s": 0})
        assert run.structured_content["status"] == "cancelled"
        assert processes_under(workspace.root) == []


async def wait_for_run(client: Client, run_id: str) -> dict:
    while True:
        answer = await client.call_tool("get_run", {"run_id": run_id, "wait_s": 40})
        assert not answer.is_error, answer.content[0].text
        if answer.structured_content["status"] != "running":
            return answer.structured_content


def owned_by(workspace: Workspace, pid: int) -> list[dict]:
    path = workspace.state_dir / "deployments.json"
    data = json.loads(path.read_text() or "{}") if path.exists() else {}
    return [e for e in data.values() if e["owner"] and e["owner"]["pid"] == pid]


def server_pid(workspace: Workspace, run_id: str) -> int:
    job = json.loads((workspace.state_dir / "jobs" / f"{run_id}.json").read_text())
    return job["owner"]["pid"]


async def test_two_servers_share_a_workspace(workspace: Workspace) -> None:
    """A runs run_ab; B starts while A's service is up, reads the source 100 times and runs
    run_ab on the same target (it waits its turn). Then A is killed with -9 mid-run: a third
    server tears down A's leftovers and nothing of B's."""
    args = {"target": "pyserver", "runs": 3, "warmup": 0, "wait_s": 0}
    async with Client(stdio(workspace)) as a:
        run_a = (await a.call_tool("run_ab", args)).structured_content["run_id"]
        pid_a = server_pid(workspace, run_a)
        while not owned_by(workspace, pid_a):
            await anyio.sleep(0.2)
        async with Client(stdio(workspace)) as b:
            listed = await b.call_tool("list_targets", {})
            assert not listed.is_error
            for _ in range(100):
                read = await b.call_tool("read_source", {"target": "pyserver", "path": "server.py"})
                assert not read.is_error, read.content[0].text
            run_b = (await b.call_tool("run_ab", args)).structured_content["run_id"]
            final_a = await wait_for_run(a, run_a)
            final_b = await wait_for_run(b, run_b)
    for final in (final_a, final_b):
        assert final["status"] == "done" and final["failed"] == {"A": 0, "B": 0}, final
    run_b_file = json.loads((workspace.state_dir / "runs" / run_b / "run.json").read_text())
    assert run_b_file["samples"][0]["ok"]
    repo = workspace.state_dir / "sources" / "pyserver"
    trees = subprocess.run(["git", "-C", str(repo), "log", "--all", "--format=%T"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "4b825dc642cb6eb9a060e54bf8d69288fbee4904" not in trees
    assert json.loads((workspace.state_dir / "deployments.json").read_text()) == {}
    tombs = workspace.state_dir / "deployments-gone"  # only ids a user was handed get one
    assert not tombs.exists() or not any(tombs.iterdir())

    # kill -9 of A while its service is up; B holds a kept deployment and runs its own run
    async with Client(stdio(workspace)) as b:
        build = (await b.call_tool("build", {"target": "pyserver"})).structured_content
        kept = (await b.call_tool("deploy", {"build_id": build["build_id"]})).structured_content
        killed = subprocess.Popen(
            [sys.executable, "-m", "autoopt.server.cli", "serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env={**os.environ, "AUTOOPT_WORKSPACE": str(workspace.root)})
        rpc = Rpc(killed)
        rpc.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                "clientInfo": {"name": "t", "version": "0"}})
        rpc.notify("notifications/initialized")
        rpc.call("tools/call", {"name": "run_ab", "arguments": args})
        while not owned_by(workspace, killed.pid):
            await anyio.sleep(0.2)
        leftover = owned_by(workspace, killed.pid)[0]["deployment"]["pid"]
        killed.kill()
        killed.wait()
        assert psutil.pid_exists(leftover), "the service should outlive a kill -9 of its server"
        run_b = (await b.call_tool("run_ab", args)).structured_content["run_id"]
        async with Client(create_server(workspace)) as third:
            await third.call_tool("list_targets", {})
            assert not psutil.pid_exists(leftover) or psutil.Process(leftover).status() == "zombie"
            assert psutil.pid_exists(kept["pid"]), "B's kept deployment was torn down"
            final_b = await wait_for_run(b, run_b)
        assert final_b["status"] == "done" and final_b["failed"] == {"A": 0, "B": 0}, final_b
        await b.call_tool("teardown", {"deployment_id": kept["deployment_id"]})
