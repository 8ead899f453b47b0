"""Nothing a run starts outlives it, on real processes: setsid daemons forked by a batch
workload, by a service and by a workload die with their run; after kill -9 of a server in
the middle of a batch workload, or of a build (before the first sample), the next server
kills what it left, marks the run crashed and removes its build trees."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.tools import contain
from autoopt.tools.workspace import Workspace
from tests.conftest import Rpc, call_done

pytestmark = pytest.mark.anyio

TARGET_MD = """# Target: {name}

## Source
repo: local
path: targets/{name}/src

## Primary Metric
name: peak_rss_mb
direction: lower

## Workload
description: forks daemons that try to outlive the run

## Scope
editable:
  - job.py

## Local
{local}
"""

# Two daemons per process: one in a session of its own, one that also clears its environment
# (only a cgroup can hold that one).
FORK = """import subprocess, sys
subprocess.Popen(["sleep", sys.argv[1]], start_new_session=True)
subprocess.Popen(["env", "-i", "setsid", "sleep", sys.argv[1]])
"""
JOB_PY = FORK + "print('done')\n"
SERVE_PY = FORK + """import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
HIT_PY = FORK + """import urllib.request
urllib.request.urlopen(sys.argv[2]).read()
print("check: served")
"""


def add_target(workspace: Workspace, name: str, local: str, files: dict[str, str]) -> Path:
    folder = workspace.targets_dir / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "job.py").write_text(JOB_PY)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    (folder / "target.md").write_text(TARGET_MD.format(name=name, local=local))
    return folder


def sleepers(marker: str) -> list[psutil.Process]:
    """Live (not zombie) `sleep <marker>` processes."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", marker] and proc.info["status"] != "zombie":
            found.append(proc)
    return found


def marker() -> str:
    return f"{7000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"


async def test_setsid_daemons_die_with_their_run(client: Client, workspace: Workspace) -> None:
    """Before containment: 12 daemons left after these two 3-run run_abs (one per run of the
    batch job, per service start and per service workload)."""
    batch, service = marker(), marker()
    add_target(workspace, "forker", f"kind: batch\nworkload: python3 job.py {batch}", {})
    add_target(workspace, "forkserver", (
        f"kind: service\nrun: python3 {{target_dir}}/serve.py {service}\nhealth: /\n"
        f"workload: python3 {{target_dir}}/hit.py {service} {{endpoint}}"
    ), {"serve.py": SERVE_PY, "hit.py": HIT_PY})
    for target in ("forker", "forkserver"):
        result = await call_done(client, "run_ab", {"target": target, "runs": 3, "warmup": 0})
        assert not result.is_error, result.content[0].text
        view = result.structured_content
        assert view["failed"] == {"A": 0, "B": 0}, view
    run = json.loads((workspace.state_dir / "runs" / view["run_id"] / "run.json").read_text())
    deploy = [s["shell"] for s in run["journal"]["steps"] if s["phase"] == "deploy"]
    assert any('"$WORKLOAD_DIR"/serve.py' in shell for shell in deploy), deploy  # replayable
    assert "targets/forkserver/serve.py" in run["workload_files"]
    left = sleepers(batch) + sleepers(service)
    for proc in left:
        proc.kill()
    assert not left, [p.info["cmdline"] for p in left]
    if contain.cgroup_root() is not None:  # and no scope's cgroup stays behind
        assert not [g for g in contain.cgroup_root().iterdir() if contain.owner() in g.name]


async def _kill_when(rpc: Rpc, ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the run never got there"
        assert rpc.proc.poll() is None, "the server exited by itself"
        await anyio.sleep(0.1)
    rpc.proc.send_signal(signal.SIGKILL)
    rpc.proc.wait()


async def test_kill_9_during_a_batch_workload(workspace: Workspace) -> None:
    """The measured process survives its server's kill -9 (it is in a session of its own);
    the next server kills it, marks the run crashed and removes the build trees."""
    mark = marker()
    job = f"import time, subprocess\nsubprocess.run(['sleep', '{mark}'])\n"
    folder = add_target(workspace, "stuck", "kind: batch\nworkload: python3 job.py", {})
    (folder / "src" / "job.py").write_text(job)
    rpc = Rpc.serve(workspace)
    try:
        answer = rpc.tool("run_ab", {"target": "stuck", "runs": 3, "warmup": 0, "wait_s": 0})
        run_id = answer["structuredContent"]["run_id"]
        await _kill_when(rpc, lambda: bool(sleepers(mark)))
    finally:
        if rpc.proc.poll() is None:
            rpc.proc.kill()
    [measured] = sleepers(mark)
    assert (workspace.state_dir / "builds").is_dir() and any(
        (workspace.state_dir / "builds").iterdir())
    async with Client(create_server(workspace)) as client:
        got = await client.call_tool("get_run", {"run_id": run_id, "wait_s": 0})
        run = got.structured_content
    assert not measured.is_running() or measured.status() == "zombie"
    assert run["status"] == "crashed", run
    assert not any((workspace.state_dir / "builds").iterdir()), "the dead server's builds stay"
    assert json.loads((workspace.state_dir / "deployments.json").read_text()) == {}


async def test_a_run_killed_before_its_first_sample_has_a_record(workspace: Workspace) -> None:
    """kill -9 while the build runs: the run was saved (status starting) before the build,
    so the next server marks it crashed; the build process and its tree are gone."""
    mark = marker()
    local = f"kind: batch\nbuild: sleep {mark}\nworkload: python3 job.py 1"
    add_target(workspace, "slowbuild", local, {})
    rpc = Rpc.serve(workspace)
    try:
        answer = rpc.tool("run_ab", {"target": "slowbuild", "runs": 3, "wait_s": 0})
        run_id = answer["structuredContent"]["run_id"]
        await _kill_when(rpc, lambda: bool(sleepers(mark)))
    finally:
        if rpc.proc.poll() is None:
            rpc.proc.kill()
    saved = json.loads((workspace.state_dir / "runs" / run_id / "run.json").read_text())
    assert saved["status"] == "starting" and saved["samples"] == [], saved["status"]
    [build] = sleepers(mark)
    assert any((workspace.state_dir / "builds").iterdir())
    async with Client(create_server(workspace)) as client:
        got = await client.call_tool("get_run", {"run_id": run_id, "wait_s": 0})
        run = got.structured_content
        status = (await client.call_tool("experiment_status", {"target": "slowbuild"})
                  ).structured_content
    assert not build.is_running() or build.status() == "zombie"
    assert run["status"] == "crashed", run
    assert status["interrupted_runs"][0]["run_id"] == run_id
    assert "before its first sample" in status["interrupted_runs"][0]["error"]
    assert not any((workspace.state_dir / "builds").iterdir())
    repo = workspace.state_dir / "sources" / "slowbuild"
    assert not any(p for p in (repo / ".git" / "worktrees").glob("*")) if (
        repo / ".git" / "worktrees").is_dir() else True


def test_a_sweep_spares_other_scopes() -> None:
    """A scope's sweep kills its own processes only (the tag is exact, not a prefix)."""
    import subprocess

    mine, other = contain.new_scope("dep-a"), contain.new_scope("dep-ab")
    procs = [
        subprocess.Popen(["sleep", "300"], env={**os.environ, contain.ENV: scope},
                         start_new_session=True)
        for scope in (mine, other)
    ]
    try:
        swept = contain.sweep(mine)
        assert set(swept.killed) == {procs[0].pid}
        assert procs[0].wait(timeout=5) == -signal.SIGKILL
        assert procs[1].poll() is None
    finally:
        procs[1].kill()
        procs[1].wait()


async def test_a_hung_workload_fails_fast_and_stops_the_run(
    client: Client, workspace: Workspace
) -> None:
    """Before per-target timeouts: 600 s per run, 30 minutes for this run_ab. Now each run
    stops at target.md's timeout, counts as failed, and the run stops after the first two."""
    mark = marker()
    folder = add_target(workspace, "hung", "kind: batch\nworkload: python3 job.py", {})
    job = f"import subprocess\nsubprocess.run(['sleep', '{mark}'])\n"
    (folder / "src" / "job.py").write_text(job)
    md = folder / "target.md"
    md.write_text(md.read_text().replace("## Scope", "timeout: 2\n\n## Scope"))
    t0 = time.monotonic()
    result = await call_done(client, "run_ab", {"target": "hung", "runs": 5, "warmup": 0})
    elapsed = time.monotonic() - t0
    assert not result.is_error, result.content[0].text
    view = result.structured_content
    assert view["verdict"] == "FAILED" and view["failed"] == {"A": 1, "B": 1}, view
    run = json.loads((workspace.state_dir / "runs" / view["run_id"] / "run.json").read_text())
    assert "first runs of both arms failed" in run["error"]
    assert all("timed out after 2 s" in s["error"] and "timeout: in target.md" in s["error"]
               for s in run["samples"]), [s["error"] for s in run["samples"]]
    assert elapsed < 60, elapsed
    assert not sleepers(mark)


def test_recovery_spares_kept_scopes_of_any_workspace() -> None:
    """A dead server's process is swept by whichever server starts next, on any workspace,
    unless it is kept (a deployment made with the deploy tool, marked machine-wide)."""
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{gone.pid}.1"  # a server that is no longer there
    leftover, kept = f"{dead}/dep-left", f"{dead}/dep-kept"
    procs = {
        scope: subprocess.Popen(["sleep", "300"], env={**os.environ, contain.ENV: scope},
                                start_new_session=True)
        for scope in (leftover, kept)
    }
    contain.keep(kept)
    try:
        swept = {s.scope: set(s.killed) for s in contain.recover(set())}
        assert swept.get(leftover) == {procs[leftover].pid}, swept
        assert kept not in swept and procs[kept].poll() is None
        assert contain.kept(kept)
        contain.sweep(kept)
        assert procs[kept].wait(timeout=5) == -signal.SIGKILL and not contain.kept(kept)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
