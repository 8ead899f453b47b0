"""Hostile calls to the source tools through an MCP client (issue 19): a catastrophic
search pattern is stopped with a clear error while other calls go on, and a symlink out
of a target's folder never reaches read_source or search_source."""

from __future__ import annotations

import time

import anyio
import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace

pytestmark = pytest.mark.anyio
BAD = r"(.*)(.*)(.*)\3\2\1x"


async def _timed(client: Client, tool: str, args: dict) -> tuple[float, object]:
    started = time.monotonic()
    result = await client.call_tool(tool, args)
    return time.monotonic() - started, result


async def test_a_catastrophic_search_is_stopped_and_delays_no_other_call(
    client: Client,
) -> None:
    read = {"target": "pyserver", "path": "server.py", "end_line": 5}
    for tool, args in [("list_targets", {}), ("read_source", read)]:  # imports the source
        _, warm = await _timed(client, tool, args)
        assert not warm.is_error, warm.content[0].text
    searched: list[tuple[float, object]] = []
    others: list[tuple[str, float, bool]] = []

    async def bad() -> None:
        searched.append(await _timed(client, "search_source", {"target": "pyserver",
                                                               "pattern": BAD}))

    async with anyio.create_task_group() as tg:
        for _ in range(6):  # more than the search threads: the rest wait, nothing else does
            tg.start_soon(bad)
        await anyio.sleep(1)
        for tool, args in [("list_targets", {}), ("read_source", read)] * 2:
            took, result = await _timed(client, tool, args)
            others.append((tool, took, result.is_error))  # type: ignore[attr-defined]
        assert not searched, "the search should still be running"
    assert all(took < 1 and not err for _, took, err in others), others
    for _, result in searched:
        text = result.content[0].text  # type: ignore[attr-defined]
        assert result.is_error and "took over 5 s and was stopped: simplify it" in text, text  # type: ignore[attr-defined]
    assert min(took for took, _ in searched) < 6.5


async def test_a_link_out_of_the_target_never_reaches_the_tools(
    client: Client, workspace: Workspace
) -> None:
    (workspace.root / "outside.txt").write_text("SECRET-TOKEN\n")
    src = workspace.targets_dir / "pyserver" / "src"
    (src / "leak").symlink_to("/etc/passwd")
    (src / "secret").symlink_to("../../../outside.txt")
    for tool, args in [
        ("read_source", {"target": "pyserver", "path": "leak"}),
        ("read_source", {"target": "pyserver", "path": "secret"}),
        ("search_source", {"target": "pyserver", "pattern": "root|SECRET"}),
    ]:
        result = await client.call_tool(tool, args)
        text = result.content[0].text
        assert result.is_error and "links outside it (to " in text, text
        assert "root:" not in text and "SECRET-TOKEN" not in text
    (src / "leak").unlink()
    (src / "secret").unlink()
    result = await client.call_tool("search_source", {"target": "pyserver", "pattern": "def "})
    assert not result.is_error, result.content[0].text
    listing = await client.call_tool("list_targets", {})
    assert not listing.is_error
