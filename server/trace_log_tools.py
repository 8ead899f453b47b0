"""The query_trace_log tool: ClickHouse's system.trace_log as a stored, diffable profile."""

from __future__ import annotations

from typing import Annotated

import anyio
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from autoopt.server.errors import tool_errors
from autoopt.tools import trace_log
from autoopt.tools.engine import Engine
from autoopt.tools.errors import NotFound
from autoopt.tools.trace_log import (
    DEFAULT_TIMEOUT_S,
    MAX_LIMIT,
    MAX_TIMEOUT_S,
    LiveEndpoint,
    MemoryContext,
    TraceLogResult,
    TraceType,
)
from autoopt.tools.workspace import Workspace

# Reads a ClickHouse server (open world) and, given a target, stores the stacks as a profile.
QUERIES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


def live_endpoints(engine: Engine, target: str) -> list[LiveEndpoint]:
    """The target's running deployments with an HTTP endpoint, newest first."""
    out = []
    for dep in sorted(engine.deployments.values(), key=lambda d: -d.started):
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
                description="the target (e.g. 'clickhouse'): its live deployment is queried and "
                "the stacks are stored as its profile",
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
            ),
        ] = None,
        url: Annotated[
            str | None,
            Field(
                description="http(s)://host:port of a ClickHouse server (credentials from "
                "AUTOOPT_CLICKHOUSE_USER/_PASSWORD), or chdb://<dir> for a chdb "
                "session directory inside the workspace; default: the target's "
                "deployment, else AUTOOPT_CLICKHOUSE_URL",
                max_length=500,
            ),
        ] = None,
        trace_type: Annotated[
            TraceType,
            Field(
                description="Memory (allocations crossing memory_profiler_step), MemorySample, "
                "MemoryPeak, CPU, Real or JemallocSample"
            ),
        ] = "Memory",
        since: Annotated[
            str | None,
            Field(
                description="ISO datetime, inclusive (UTC unless it has an offset)", max_length=40
            ),
        ] = None,
        until: Annotated[
            str | None,
            Field(
                description="ISO datetime, exclusive (UTC unless it has an offset)", max_length=40
            ),
        ] = None,
        query_id: Annotated[
            str | None,
            Field(
                description="only this query's traces",
                pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
                max_length=128,
            ),
        ] = None,
        query_like: Annotated[
            str | None,
            Field(
                description="only queries whose text matches this LIKE pattern (query_log)",
                min_length=1,
                max_length=500,
            ),
        ] = None,
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_LIMIT,
                description=(
                    f"top stacks returned (at most {MAX_LIMIT}; the stored profile keeps up to "
                    f"{trace_log.STORE_LIMIT})"
                ),
            ),
        ] = 20,
        memory_context: Annotated[
            MemoryContext | None,
            Field(description="only one memory-tracker level (Process = the query)"),
        ] = None,
        database: Annotated[
            str,
            Field(
                description="database holding trace_log and query_log (a copy, e.g. in chdb)",
                pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                max_length=64,
            ),
        ] = "system",
        lines: Annotated[
            bool,
            Field(description="also resolve file:line (addressToLine; slow on big debug builds)"),
        ] = False,
        timeout_s: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_TIMEOUT_S,
                description=("server-side max_execution_time; the client waits 5 s longer"),
            ),
        ] = DEFAULT_TIMEOUT_S,
        label: Annotated[
            str | None,
            Field(
                description="profile label (default tracelog-<type>); diff two labels to compare",
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
            ),
        ] = None,
        env: Annotated[
            str | None,
            Field(
                description="results environment (default: the deployment's backend, else local)",
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=32,
            ),
        ] = None,
    ) -> TraceLogResult:
        """Top stacks from ClickHouse's system.trace_log (symbolized with addressToSymbol),
        with bytes or samples, % of the selection's total, the share of frames that did not
        symbolize, and per-query peak memory from system.query_log. With a target, the stacks
        are stored as its profile (results/<target>/<env>/profiles/<label>-*), so two runs
        diff like any other profile."""
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
        return await anyio.to_thread.run_sync(
            lambda: trace_log.query_trace_log(
                ws, req, url=url, target=target, live=live, env=env, label=label
            )
        )
