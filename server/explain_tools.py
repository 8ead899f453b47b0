"""explain_query: a SQL target's query plan (or pg_stat_statements' top statements) as
evidence, stored like a profile. `register(mcp, engine)` is called once from create_server."""

from __future__ import annotations

import time
from typing import Annotated, Any
from uuid import uuid4

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from autoopt.server.errors import tool_errors
from autoopt.server.jobs_view import WaitS, capped, forward, notes, pending
from autoopt.server.params import ACTS, NAME_PATTERN, TargetName
from autoopt.tools.engine import Engine
from autoopt.tools.jobs import JobRecord, Report
from autoopt.tools.pgexplain import PlanRun, explain


class PlanView(BaseModel):
    """A plan, flags first; while it runs only the id, status and next call."""

    profile_id: str
    status: str
    label: str | None = None
    flags: list[str] = Field(default_factory=list)
    plan: list[str] = Field(default_factory=list)
    next_call: str | None = None


def plan_answer(record: JobRecord) -> CallToolResult:
    """explain_query's (and get_profile's, for its job) answer: the flags, the plan lines."""
    still = pending(record, "get_profile", "profile_id")
    if still is None:
        r = record.result or {}
        view = PlanView(profile_id=record.id, status="done", label=r.get("label"),
                        flags=r.get("flags", []), plan=r.get("lines", []))
        files = r.get("files", {})
        raw = files.get("plan.json") or files.get("statements.json") or ""
        detail = (f"Diff two: diff_profiles(target='{r.get('target')}', before='"
                  f"{r.get('label')}', after=...); raw: {raw}")
        text = capped([f"{record.id} {r.get('answer', '')}", detail], 4000)
    else:
        view = PlanView(profile_id=record.id, status="running", next_call=still.next_call)
        text = still.text(record.id)
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=view.model_dump(mode="json", exclude_none=True))


def register(mcp: MCPServer, engine: Engine) -> None:
    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def explain_query(
        target: TargetName,
        query_name: Annotated[str, Field(pattern=NAME_PATTERN)],
        patch: str | None = None,
        deployment_id: str | None = None,
        label: Annotated[str | None, Field(pattern=NAME_PATTERN, max_length=64)] = None,
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, PlanView]:
        """EXPLAIN ANALYZE of queries/<query_name>.sql, slow nodes flagged first; 'top':
        pg_stat_statements. Stored as a profile."""
        engine.spec(target)
        profile_id = f"plan-{time.strftime('%Y%m%d-%H%M%S')}-{uuid4().hex[:6]}"

        async def job(report: Report) -> PlanRun:
            return await explain(engine, target, query_name, patch=patch,
                                 deployment_id=deployment_id, label=label,
                                 progress=notes(report))

        def render(r: PlanRun) -> dict[str, Any]:
            return {"kind": "plan", **r.model_dump(mode="json")}

        engine.jobs.start(profile_id, "explain_query", target, job, render=render)
        record = await engine.jobs.wait_started(profile_id, wait_s, forward(ctx))
        return plan_answer(record)
