"""The query_trace_log tool: ClickHouse's system.trace_log as a stored, diffable profile."""

from __future__ import annotations

import time
from typing import Annotated, Any
from uuid import uuid4

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from autoopt.server.errors import tool_errors
from autoopt.server.jobs_view import WaitS, capped, forward, pending
from autoopt.tools import trace_log
from autoopt.tools.engine import Engine
from autoopt.tools.errors import NotFound
from autoopt.tools.jobs import JobRecord, Report
from autoopt.tools.profiling.model import Unit, human_value
from autoopt.tools.trace_log import (
    DEFAULT_TIMEOUT_S,
    MAX_LIMIT,
    MAX_TIMEOUT_S,
    LiveEndpoint,
    MemoryContext,
    TraceLogResult,
    TraceType,
)
from autoopt.tools.workspace import Workspace, check_name

# Reads a ClickHouse server (open world) and, given a target, stores the stacks as a profile.
QUERIES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


def live_endpoints(engine: Engine, target: str) -> list[LiveEndpoint]:
    """The target's running deployments with an HTTP endpoint (of any server on the
    workspace), newest first."""
    out = []
    live = {e.deployment.id: e.deployment for e in engine.registry.entries().values()}
    live.update(engine.deployments)
    for dep in sorted(live.values(), key=lambda d: -d.started):
        if dep.target != target or not dep.endpoint:
            continue
        try:
            revision: str | None = engine.get_build(dep.build_id).commit
        except NotFound:
            revision = None
        out.append(LiveEndpoint(url=dep.endpoint, env=dep.backend, revision=revision))
    return out


def register(mcp: MCPServer, engine: Engine, ws: Workspace) -> None:
    """Declare query_trace_log on `mcp`."""

    @mcp.tool(annotations=QUERIES)
    @tool_errors
    async def query_trace_log(
        target: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
            ),
        ] = None,
        url: Annotated[
            str | None,
            Field(
                description="http(s)://host:port or chdb://<dir>",
                max_length=500,
            ),
        ] = None,
        trace_type: TraceType = "Memory",
        since: Annotated[
            str | None,
            Field( max_length=40),
        ] = None,
        until: Annotated[
            str | None,
            Field(max_length=40),
        ] = None,
        query_id: Annotated[
            str | None,
            Field(
                pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
                max_length=128,
            ),
        ] = None,
        query_like: Annotated[
            str | None,
            Field(
                description="LIKE on the query",
                min_length=1,
                max_length=500,
            ),
        ] = None,
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_LIMIT,
            ),
        ] = 20,
        memory_context: MemoryContext | None = None,
        database: Annotated[
            str,
            Field(
                pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                max_length=64,
            ),
        ] = "system",
        lines: Annotated[
            bool,
            Field(description="resolve file:line (slow)"),
        ] = False,
        timeout_s: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_TIMEOUT_S,
            ),
        ] = DEFAULT_TIMEOUT_S,
        label: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
            ),
        ] = None,
        env: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=32,
            ),
        ] = None,
        detail: bool = False,
        wait_s: WaitS = 40,
        job_id: str | None = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, TraceLogView]:
        """ClickHouse system.trace_log top stacks (% of total), per-query peak memory; stored
        as a profile. After wait_s: status=running; job_id waits."""
        if job_id is not None:
            engine.jobs.require(check_name(job_id, "job id"), "query")
            return _answer(await engine.jobs.wait(job_id, wait_s, forward(ctx)), detail)
        req = trace_log.validate(
            trace_type,
            database=database,
            since=since,
            until=until,
            query_id=query_id,
            query_like=query_like,
            memory_context=memory_context,
            limit=limit,
            timeout_s=timeout_s,
            lines=lines,
        )
        live: list[LiveEndpoint] = []
        if target:
            engine.spec(target)  # an unknown target is a clear error before any connection
            live = live_endpoints(engine, target)
        new_id = f"tl-{time.strftime('%Y%m%d-%H%M%S')}-{uuid4().hex[:6]}"

        async def work(report: Report) -> TraceLogResult:
            await report(0, None, f"querying {url or 'the target'}'s trace_log")
            # a thread no cancel can stop: cancel_run leaves it to end at its timeout_s
            return await anyio.to_thread.run_sync(
                lambda: trace_log.query_trace_log(
                    ws, req, url=url, target=target, live=live, env=env, label=label
                ),
                abandon_on_cancel=True,
            )

        engine.jobs.start(new_id, "query_trace_log", target or "", work,
                          render=lambda r: r.model_dump(mode="json"))
        return _answer(await engine.jobs.wait_started(new_id, wait_s, forward(ctx)), detail)


def _answer(record: JobRecord, detail: bool) -> CallToolResult:
    """The query's stacks, or its progress; a query that failed is the error it would be."""
    still = pending(record, "query_trace_log", "job_id")
    if still is None:
        result = TraceLogResult.model_validate(record.result)
        view = _view(result, detail)
        view.job_id = record.id
        text = _text(view, result)
    else:
        view = TraceLogView(job_id=record.id, status="running", **still.model_dump())
        text = still.text(record.id)
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=view.model_dump(mode="json", exclude_none=True),
    )


class TraceLogView(BaseModel):
    """The answer first: one line per top stack; `full` only with detail=true."""

    job_id: str | None = None
    status: str = "done"
    endpoint: str | None = None
    total: str | None = None
    stacks: list[str] = Field(default_factory=list)
    progress: str | None = None
    next_call: str | None = None
    profile_label: str | None = None
    full: dict[str, Any] | None = None


def _view(r: TraceLogResult, detail: bool) -> TraceLogView:
    unit: Unit = r.unit

    def v(x: float) -> str:
        return human_value(x, unit)

    return TraceLogView(
        endpoint=r.endpoint,
        total=v(r.total),
        stacks=[f"#{s.rank} {s.percent:.1f}% {v(s.value)}: "
                + " < ".join([s.leaf, *list(reversed(s.frames[:-1]))[:4]])
                for s in r.stacks],
        profile_label=r.profile_label,
        full=r.model_dump(mode="json") if detail else None,
    )


def _text(view: TraceLogView, r: TraceLogResult) -> str:
    """The stacks, then the top queries' peak memory and the notes (in the text only)."""

    def v(x: float) -> str:
        return human_value(x, r.unit)

    head = (f"{view.endpoint}: {r.measure}, total {view.total} in {r.rows} rows; "
            f"{r.symbolization.unresolved_share:.0%} of frames unresolved")
    queries = [f"query {q.query_id}: {v(q.value)}"
               + (f", peak {q.peak_memory_mb:.0f} MiB" if q.peak_memory_mb is not None else "")
               + (f": {q.query[:80]}" if q.query else "") for q in r.queries[:5]]
    label = [f"Stored as profile {view.profile_label}"] if view.profile_label else []
    detail = f"Detail: query_trace_log(job_id='{view.job_id}', detail=true)"
    return capped([head, *view.stacks, *queries, *label, *(f"Note: {n}" for n in r.notes),
                   detail], 4000)
