"""How tools answer for jobs: the bounded wait, and the compact "still running" answer."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from autoopt.server.progress import Note
from autoopt.tools.jobs import JobRecord, Report

MAX_WAIT_S = 50

WaitS = Annotated[
    float,
    Field(ge=0, le=MAX_WAIT_S),
]


class StillRunning(BaseModel):
    progress: str = Field(description="done of planned, and the latest step")
    next_call: str = Field(description="the call that waits for the result")

    def text(self, job_id: str) -> str:
        return f"{job_id} [running] {self.progress}. Next: {self.next_call}"


def still_running(record: JobRecord, tool: str, arg: str) -> StillRunning:
    return StillRunning(
        progress=record.progress_text() or "started",
        next_call=f"{tool}({arg}='{record.id}', wait_s={MAX_WAIT_S - 10})",
    )


def pending(record: JobRecord, tool: str, arg: str) -> StillRunning | None:
    """None for a job that is done; its progress while it runs; for one that failed or was
    stopped, the tool error the call would have been."""
    if record.status == "done":
        return None
    if record.finished:
        raise ToolError(f"{record.kind} {record.id} {record.status}: {record.error}")
    return still_running(record, tool, arg)


def notes(report: Report) -> Note:
    """An engine progress callback (one message a step) that reports to a job."""
    count = 0

    async def note(message: str) -> None:
        nonlocal count
        count += 1
        await report(count, None, message)

    return note


def forward(ctx: Context | None) -> Report | None:
    """Job progress as MCP progress on this call (when the client sent a progressToken)."""
    if ctx is None:
        return None

    async def report(done: float, total: float | None, message: str) -> None:
        await ctx.report_progress(done, total, message)

    return report


def capped(lines: list[str], limit: int) -> str:
    """The lines in order while they fit in `limit` characters; the last one (where the
    detail is) always stays, and a line says how many were left out."""
    *body, last = lines
    kept: list[str] = []
    room = limit - len(last) - 60
    for line in body:
        if len(line) + 1 > room:
            kept.append(f"... {len(body) - len(kept)} more lines: ask for the detail")
            break
        kept.append(line)
        room -= len(line) + 1
    return "\n".join([*kept, last])
