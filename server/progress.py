"""Progress notifications: engine messages become MCP progress on the calling request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mcp.server.mcpserver import Context

Note = Callable[[str], Awaitable[None]]


def progress_of(ctx: Context | None) -> Note:
    """A callback that reports each message as the next progress step (no known total)."""
    count = 0

    async def report(message: str) -> None:
        nonlocal count
        count += 1
        if ctx is not None:
            await ctx.report_progress(count, None, message)

    return report
