"""MCP tasks over the server's jobs: run_ab, profile_memory, profile_cpu and build.

A task is a job (tools/jobs.py) seen through the protocol: the task id is the job id, its
status is the job record's, and its result is what get_run / get_profile / build(build_id) answer
for it. Nothing is stored beside the job records, so any server process on the workspace
can answer for a task another one created.

Two wire forms, chosen per request by its protocol version:

- 2025-11-25 (tasks in core, initialize handshake). The client opts in per call with
  `params.task`; the answer is `CreateTaskResult {task}`; `tasks/get`, `tasks/result`
  (blocks until terminal, returns the tool's result with the related-task `_meta`),
  `tasks/cancel` and `tasks/list`; the `tasks` server capability and
  `execution.taskSupport = "optional"` on the four tools.
- 2026-07-28 (the `io.modelcontextprotocol/tasks` extension). The client declares the
  extension in its per-request capabilities and the server decides: a job still running
  answers `resultType: "task"` (a flat Task); `tasks/get` inlines the final result,
  `tasks/update` and `tasks/cancel` acknowledge; no `tasks/result`, no `tasks/list`.

`TasksExtension` does the work through the SDK's Extension API (the tools/call interceptor
and the new methods). mcp 2.3 has no task support of its own, so `TaskServer` (an
`MCPServer`) adds what an extension cannot reach: the getter calls behind tasks/result,
and a middleware that writes the 2025-11-25 shapes the SDK's per-version result sieve
would otherwise reject or strip (the CreateTaskResult of a tools/call, the `tasks`
capability in the initialize result, `execution` on tools/list entries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import MCPServer, require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    CallToolRequestParams,
    CallToolResult,
    CancelTaskRequestParams,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    PaginatedRequestParams,
    RequestParams,
    Result,
    Task,
    TaskStatus,
    TextContent,
)
from mcp_types.methods import serialize_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from autoopt.server.jobs_view import MAX_WAIT_S
from autoopt.tools.engine import Engine
from autoopt.tools.errors import AutooptError
from autoopt.tools.jobs import JobRecord

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
RELATED_TASK = "io.modelcontextprotocol/related-task"
IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"
LEGACY = "2025-11-25"  # the one handshake revision with tasks in core
LEGACY_VERSIONS = frozenset({LEGACY})
MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
POLL_INTERVAL_MS = 2000
LIST_PAGE = 50
# Job records are kept on the workspace with no expiry, so tasks live unlimited (ttl null).
TTL_MS: int | None = None
# The interceptor's 2025-11-25 answer rides a CallToolResult `_meta` under this key (the
# only shape the SDK's sieve lets through); the middleware turns it into CreateTaskResult.
_CREATED = "autoopt/created-task"

LEGACY_CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}


@dataclass(frozen=True)
class JobTool:
    """A tool that runs as a job: the key of its job id, and the tool that answers for it."""

    id_key: str
    getter: str


JOB_TOOLS: dict[str, JobTool] = {
    "run_ab": JobTool("run_id", "get_run"),
    "profile_memory": JobTool("profile_id", "get_profile"),
    "profile_cpu": JobTool("profile_id", "get_profile"),
    "build": JobTool("build_id", "build"),
    "query_trace_log": JobTool("job_id", "query_trace_log"),
}

# (ctx, tool name, arguments) -> exactly what tools/call would answer (no interceptors).
ToolCaller = Callable[[ServerRequestContext[Any, Any], str, dict[str, Any]], Awaitable[Any]]


# -- 2026-07-28 extension shapes (mcp_types has only the 2025-11-25 ones) -------------------
class ExtTask(BaseModel):
    """A task as the 2026-07-28 tasks extension spells it (ttlMs / pollIntervalMs)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class ExtCreateTaskResult(Result, ExtTask):
    """A tools/call answered with a task handle (2026-07-28): `resultType: "task"`."""

    result_type: Literal["task"] = "task"


class ExtGetTaskResult(Result, ExtTask):
    """tasks/get (2026-07-28): the task, with the final result inlined once completed."""

    result_type: str = "complete"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    input_requests: dict[str, Any] | None = None


class UpdateTaskRequestParams(RequestParams):
    """tasks/update (2026-07-28): responses to a task's outstanding inputRequests."""

    task_id: str
    input_responses: dict[str, Any] = Field(default_factory=dict)


# -- helpers -------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def _wire(model: BaseModel, **keep_null: Any) -> dict[str, Any]:
    """The model's wire dict; `keep_null` re-adds keys the spec wants present even if null."""
    data = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    data.update(keep_null)
    return data


def _legacy_status(record: JobRecord) -> tuple[TaskStatus, str | None]:
    """2025-11-25: a failed tool call (isError) is a failed task; so is an interrupted job."""
    if record.status == "running":
        return "working", record.progress_text() or "started"
    if record.status == "done":
        return "completed", None
    if record.status == "cancelled":
        return "cancelled", record.error or "cancelled"
    if record.status == "interrupted":
        return "failed", f"interrupted: {record.error or 'the server stopped'}"
    return "failed", record.error or "failed"


def _modern_status(record: JobRecord) -> tuple[TaskStatus, str | None]:
    """2026-07-28: `failed` is only for JSON-RPC errors; a tool answer with isError (a failed
    or interrupted job) is `completed` with that answer as the result."""
    if record.status == "running":
        return "working", record.progress_text() or "started"
    if record.status == "cancelled":
        return "cancelled", record.error or "cancelled"
    if record.status == "done":
        return "completed", None
    return "completed", f"{record.status}: {record.error or ''}".strip()


def _legacy_task(record: JobRecord) -> dict[str, Any]:
    status, message = _legacy_status(record)
    task = Task(
        task_id=record.id,
        status=status,
        status_message=message,
        created_at=_iso(record.created),
        last_updated_at=_iso(record.updated),
        ttl=TTL_MS,
        poll_interval=POLL_INTERVAL_MS,
    )
    return _wire(task, ttl=TTL_MS)


def _modern_task(record: JobRecord, cls: type[ExtTask] = ExtTask, **extra: Any) -> dict[str, Any]:
    status, message = _modern_status(record)
    task = cls(
        task_id=record.id,
        status=status,
        status_message=message,
        created_at=_iso(record.created),
        last_updated_at=_iso(record.updated),
        ttl_ms=TTL_MS,
        poll_interval_ms=POLL_INTERVAL_MS,
        **extra,
    )
    return _wire(task, ttlMs=TTL_MS)


def _text(result: CallToolResult) -> str | None:
    for block in result.content:
        if isinstance(block, TextContent):
            return block.text
    return None


def _as_tools_call(result: CallToolResult, version: str) -> dict[str, Any]:
    """The result exactly as tools/call sends it at `version` (the SDK's per-version sieve)."""
    data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return serialize_server_result("tools/call", version, data)


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client declared the tasks extension (2026-07-28)."""
    capabilities = ctx.session.client_capabilities
    declared = capabilities.extensions if capabilities else None
    return bool(declared and TASKS_EXTENSION in declared)


def _unknown(task_id: str, why: str = "no job with that id on this workspace") -> MCPError:
    return MCPError(
        code=INVALID_PARAMS,
        message=f"Failed to retrieve task: unknown task {task_id!r} ({why})",
        data={"taskId": task_id},
    )


# -- the extension ---------------------------------------------------------------------------
class TasksExtension(Extension):
    """Tasks for the job tools, in the 2025-11-25 core form and the 2026-07-28 extension."""

    identifier = TASKS_EXTENSION

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._call_tool: ToolCaller | None = None

    def attach(self, call_tool: ToolCaller) -> None:
        """Give the extension the server's tool call (TaskServer does this)."""
        self._call_tool = call_tool

    # -- contributions ---------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {}  # the 2026-07-28 extension defines no settings

    def methods(self) -> Sequence[MethodBinding]:
        both, legacy = LEGACY_VERSIONS | MODERN, LEGACY_VERSIONS
        return (
            MethodBinding("tasks/get", GetTaskRequestParams, self._get, both),
            MethodBinding("tasks/cancel", CancelTaskRequestParams, self._cancel, both),
            MethodBinding("tasks/result", GetTaskPayloadRequestParams, self._result, legacy),
            MethodBinding("tasks/list", PaginatedRequestParams, self._list, legacy),
            MethodBinding("tasks/update", UpdateTaskRequestParams, self._update, MODERN),
        )

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        legacy = ctx.protocol_version == LEGACY
        if legacy:
            wanted = params.task is not None  # requestor-driven
        elif ctx.protocol_version in MODERN:
            wanted = _declared(ctx)  # server-directed; a `task` param is ignored
        else:
            wanted = False  # revisions before tasks: process normally
        job = JOB_TOOLS.get(params.name)
        if not wanted:
            return await call_next(ctx)
        if job is None:
            if legacy:  # no execution.taskSupport on the tool means "forbidden"
                raise MCPError(
                    code=METHOD_NOT_FOUND,
                    message=f"tool {params.name!r} does not support task-augmented execution; "
                    f"only {', '.join(JOB_TOOLS)} do",
                )
            return await call_next(ctx)
        params.arguments = {**(params.arguments or {}), "wait_s": 0}
        result = await call_next(ctx)
        if not isinstance(result, CallToolResult) or result.is_error:
            return result  # refused before a job existed: bad arguments, unknown target, ...
        job_id = (result.structured_content or {}).get(job.id_key)
        record = self.engine.jobs.get(job_id) if isinstance(job_id, str) else None
        if record is None or record.finished:
            return result  # nothing left to poll for: the answer itself
        immediate = _text(result)
        if legacy:
            meta: dict[str, Any] = {_CREATED: _legacy_task(record)}
            if immediate:
                meta[IMMEDIATE_RESPONSE] = immediate
            return CallToolResult(content=[], _meta=meta)
        return _modern_task(record, ExtCreateTaskResult)

    # -- shared ----------------------------------------------------------------------------
    def _record(self, task_id: str) -> JobRecord:
        try:
            record = self.engine.jobs.get(task_id)
        except AutooptError as exc:  # not a valid job id at all
            raise _unknown(task_id, str(exc)) from exc
        if record is None:
            raise _unknown(task_id)
        return record

    async def _answer(
        self, ctx: ServerRequestContext[Any, Any], record: JobRecord, wait_s: float
    ) -> CallToolResult:
        """What the job's getter tool answers, waiting up to wait_s."""
        if self._call_tool is None:
            raise MCPError(code=INTERNAL_ERROR, message="tasks extension not attached to a server")
        job = JOB_TOOLS.get(record.kind)
        if job is None:
            raise MCPError(code=INTERNAL_ERROR, message=f"job {record.id} has kind {record.kind!r}")
        result = await self._call_tool(ctx, job.getter, {job.id_key: record.id, "wait_s": wait_s})
        if not isinstance(result, CallToolResult):
            raise MCPError(code=INTERNAL_ERROR, message=f"{job.getter} gave no tool result")
        return result

    @staticmethod
    def _modern_only(ctx: ServerRequestContext[Any, Any]) -> bool:
        if ctx.protocol_version in MODERN:
            require_client_extension(ctx, TASKS_EXTENSION)
            return True
        return False

    # -- methods ---------------------------------------------------------------------------
    async def _get(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskRequestParams
    ) -> HandlerResult:
        modern = self._modern_only(ctx)
        record = self._record(params.task_id)
        if not modern:
            return _legacy_task(record)
        status, _ = _modern_status(record)
        if status != "completed":
            return _modern_task(record, ExtGetTaskResult)
        answer = await self._answer(ctx, record, 0)
        result = _as_tools_call(answer, ctx.protocol_version)
        return _modern_task(record, ExtGetTaskResult, result=result)

    async def _result(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskPayloadRequestParams
    ) -> HandlerResult:
        """Block until the task is terminal; then exactly what the tool call would have
        answered (an isError result for a failed job), tagged with the related task."""
        record = self._record(params.task_id)
        while True:
            finished = record.finished
            answer = await self._answer(ctx, record, 0 if finished else MAX_WAIT_S)
            status = (answer.structured_content or {}).get("status")
            if finished or answer.is_error or status != "running":
                break
            record = self._record(record.id)
        data = _as_tools_call(answer, ctx.protocol_version)
        data["_meta"] = {**data.get("_meta", {}), RELATED_TASK: {"taskId": record.id}}
        return data

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: CancelTaskRequestParams
    ) -> HandlerResult:
        modern = self._modern_only(ctx)
        record = self._record(params.task_id)
        if not record.finished:
            try:
                record = await self.engine.cancel(record.id)
            except AutooptError:  # it finished meanwhile
                record = self._record(record.id)
        elif not modern:
            status, _ = _legacy_status(record)
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"Cannot cancel task {record.id!r}: already in terminal status "
                f"{status!r} (job {record.status})",
                data={"taskId": record.id},
            )
        if modern:
            return {}  # an acknowledgement; the status shows in tasks/get
        return _legacy_task(record)

    async def _list(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams
    ) -> HandlerResult:
        start = 0
        if params.cursor is not None:
            if not params.cursor.isdigit():
                raise MCPError(code=INVALID_PARAMS, message=f"invalid cursor {params.cursor!r}")
            start = int(params.cursor)
        records = [r for r in self.engine.jobs.list() if r.kind in JOB_TOOLS]
        page = records[start : start + LIST_PAGE]
        data: dict[str, Any] = {"tasks": [_legacy_task(r) for r in page]}
        if start + LIST_PAGE < len(records):
            data["nextCursor"] = str(start + LIST_PAGE)
        return data

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskRequestParams
    ) -> HandlerResult:
        """Jobs never ask for input (no task is ever input_required): every response is for
        a key that is not outstanding, which the spec says to ignore. An acknowledgement."""
        self._modern_only(ctx)
        self._record(params.task_id)
        return {}

    # -- the 2025-11-25 wire shapes ----------------------------------------------------------
    async def wire_middleware(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Server middleware (innermost): shapes the 2025-11-25 answers after the SDK's sieve.

        - tools/call: the interceptor's marker becomes `CreateTaskResult {task}`;
        - initialize at 2025-11-25: adds the `tasks` server capability;
        - tools/list at 2025-11-25: `execution.taskSupport = "optional"` on the job tools.
        """
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        if ctx.method == "tools/call":
            meta = result.get("_meta")
            if isinstance(meta, dict) and _CREATED in meta:
                rest = {k: v for k, v in meta.items() if k != _CREATED}
                created: dict[str, Any] = {"task": meta[_CREATED]}
                if rest:
                    created["_meta"] = rest
                return created
        elif ctx.method == "initialize":
            capabilities = result.get("capabilities")
            if result.get("protocolVersion") == LEGACY and isinstance(capabilities, dict):
                return {**result, "capabilities": {**capabilities, "tasks": LEGACY_CAPABILITY}}
        elif ctx.method == "tools/list" and ctx.protocol_version == LEGACY:
            tools = result.get("tools")
            if isinstance(tools, list):
                return {
                    **result,
                    "tools": [
                        {**t, "execution": {"taskSupport": "optional"}}
                        if isinstance(t, dict) and t.get("name") in JOB_TOOLS
                        else t
                        for t in tools
                    ],
                }
        return result


class TaskServer(MCPServer):
    """An MCPServer that wires a TasksExtension among its `extensions` to itself."""

    def __init__(
        self, *args: Any, extensions: Sequence[Extension] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, extensions=extensions, **kwargs)
        for extension in extensions or ():
            if isinstance(extension, TasksExtension):
                extension.attach(self._call_for_task)
                self.middleware.append(extension.wire_middleware)

    async def _call_for_task(
        self, ctx: ServerRequestContext[Any, Any], name: str, arguments: dict[str, Any]
    ) -> Any:
        """tools/call's own handling (errors become isError results), minus interceptors."""
        return await self._handle_call_tool(
            ctx, CallToolRequestParams(name=name, arguments=arguments)
        )


__all__ = [
    "JOB_TOOLS",
    "RELATED_TASK",
    "TASKS_EXTENSION",
    "ExtCreateTaskResult",
    "ExtGetTaskResult",
    "ExtTask",
    "TaskServer",
    "TasksExtension",
    "UpdateTaskRequestParams",
]
