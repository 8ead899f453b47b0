"""targets/clickhouse on local through MCP: Debian's clickhouse-server 18.16 started by the
local backend on a free port as the unprivileged clickhouse user, its config and data in the
deployment's folder; the target's workload runs against it and its queries reach
system.query_log (peak_query_memory_mb); query_trace_log says 18.16 has no trace_log.

The workspace lives in a folder the clickhouse user can traverse (pytest's tmp_path is
0700). Skips when clickhouse-server is not installed (scripts/test.sh installs it)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.tools.workspace import Workspace
from tests.conftest import REPO, call_done

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not Path("/usr/sbin/clickhouse-server").exists(),
                       reason="needs clickhouse-server (apt-get install clickhouse-server)"),
]


@pytest.fixture
def open_workspace(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    root = Path(tempfile.mkdtemp(prefix="autoopt-ch-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    shutil.copytree(REPO / "targets" / "clickhouse", root / "targets" / "clickhouse")
    shutil.copy2(REPO / "program.md", root / "program.md")
    monkeypatch.delenv("AUTOOPT_STATE_DIR", raising=False)
    monkeypatch.setenv("AUTOOPT_WORKSPACE", str(root))
    try:
        yield Workspace(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def ok(client: Client, tool: str, args: dict) -> dict:
    result = await call_done(client, tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


@pytest.mark.timeout(600)
async def test_local_deploy_runs_the_workload_as_clickhouse(open_workspace: Workspace) -> None:
    async with Client(create_server(open_workspace)) as client:
        listed = await client.call_tool("list_targets", {})
        target = {t["name"]: t for t in listed.structured_content["targets"]}["clickhouse"]
        assert target["readiness"]["local"] == "ready", target["readiness"]
        build = await ok(client, "build", {"target": "clickhouse"})
        dep = await ok(client, "deploy", {"build_id": build["build_id"]})
        try:
            servers = [p for p in psutil.process_iter(["name", "uids", "cmdline"])
                       if "clickhouse-server" in " ".join(p.info["cmdline"] or [])
                       and str(open_workspace.root) in " ".join(p.info["cmdline"] or [])]
            assert len(servers) == 1, servers
            assert servers[0].info["uids"].effective == pwd.getpwnam("clickhouse").pw_uid
            run = await ok(client, "run_workload", {"deployment_id": dep["deployment_id"]})
            m = run["metrics"]
            assert run["exit_code"] == 0 and m["error_rate"] == 0 and m["requests"] == 32, run
            assert m["peak_query_memory_mb"] > 1, "this run's queries are in system.query_log"
            assert m["peak_rss_mb"] > 50 and m["latency_p99_ms"] > 0, m
            checks = [line for line in run["output"] if line.startswith("check: ")]
            assert len(checks) == 4 and all(len(c.split()) == 3 for c in checks), checks
            trace = await call_done(client, "query_trace_log", {"target": "clickhouse",
                                                                 "trace_type": "Memory"})
            assert trace.is_error and "trace_log" in trace.content[0].text, trace.content
        finally:
            await client.call_tool("teardown", {"deployment_id": dep["deployment_id"]})
        assert not any(p.is_running() for p in servers), "teardown stops the server"
