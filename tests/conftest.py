"""Shared fixtures: a throwaway workspace with the real targets, and MCP clients on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.server.demo import call_until_done as call_done
from autoopt.tools.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
PATCHES = REPO / "examples" / "patches"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A copy of the repository's targets and program.md in a temporary directory."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(
        REPO / "targets", root / "targets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.copy2(REPO / "program.md", root / "program.md")
    monkeypatch.delenv("AUTOOPT_STATE_DIR", raising=False)
    monkeypatch.setenv("AUTOOPT_WORKSPACE", str(root))
    return Workspace(root)


@pytest.fixture
async def client(workspace: Workspace) -> AsyncIterator[Client]:
    async with Client(create_server(workspace)) as c:
        yield c


__all__ = ["call_done"]  # run_ab & co. through their get_* tool until they are done


async def full_view(client: Client, result: object) -> dict:
    """The whole answer behind a lean one: get_run / get_profile with detail=true."""
    view = result.structured_content  # type: ignore[attr-defined]
    if "profile_id" in view:
        tool, key = "get_profile", "profile_id"
    else:
        tool, key = "get_run", "run_id"
    detailed = await client.call_tool(tool, {key: view[key], "wait_s": 0, "detail": True})
    assert not detailed.is_error, detailed.content[0].text
    return {**view, **detailed.structured_content["full"]}


def patch_text(name: str) -> str:
    return (PATCHES / name).read_text()


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose working directory is below `root` (targets started by tests)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            continue
        if cwd.startswith(str(root)) and proc.pid != os.getpid():
            found.append(proc)
    return found


class Rpc:
    """Newline-delimited JSON-RPC on a server's stdio (to keep the process in hand)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.next = proc, 0

    @classmethod
    def serve(cls, workspace: Workspace) -> Rpc:
        """A real server process on `workspace`, initialized (kill it with .proc)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoopt.server.cli", "serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env={**os.environ, "AUTOOPT_WORKSPACE": str(workspace.root)})
        rpc = cls(proc)
        rpc.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                "clientInfo": {"name": "t", "version": "0"}})
        rpc.notify("notifications/initialized")
        return rpc

    def tool(self, name: str, arguments: dict) -> dict:
        return self.call("tools/call", {"name": name, "arguments": arguments})

    def notify(self, method: str) -> None:
        self._send({"jsonrpc": "2.0", "method": method})

    def call(self, method: str, params: dict) -> dict:
        self.next += 1
        self._send({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            message = json.loads(self.proc.stdout.readline())
            if message.get("id") == self.next:
                assert "result" in message, message
                return message["result"]

    def _send(self, message: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
