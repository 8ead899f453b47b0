"""Shared fixtures: a throwaway workspace with the real targets, and MCP clients on it."""

from __future__ import annotations

import os
import shutil
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
