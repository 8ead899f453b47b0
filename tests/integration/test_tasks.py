"""MCP tasks over the job tools, in both protocol eras, on the real batchdemo/pyserver targets.

2025-11-25 (mode="legacy"): task-augmented tools/call (params.task), tasks/get, tasks/result,
tasks/cancel, tasks/list. 2026-07-28 (the io.modelcontextprotocol/tasks extension, declared by
the client): resultType "task", tasks/get with the result inlined, tasks/cancel, tasks/update.

The SDK client validates every tools/call answer as a CallToolResult, so the 2025-11-25
CreateTaskResult is read through the session's dispatcher (`raw`); the 2026 one arrives
through a client extension's result claim, as the SDK intends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
import psutil
import pytest
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.exceptions import MCPError

from autoopt.server.app import create_server
from autoopt.server.tasks import (
    RELATED_TASK,
    TASKS_EXTENSION,
    ExtCreateTaskResult,
    ExtGetTaskResult,
)
from autoopt.tools.workspace import Workspace
from tests.conftest import processes_under

pytestmark = pytest.mark.anyio

JOB_TOOLS = {"run_ab", "profile_memory", "profile_cpu", "build", "query_trace_log"}
QUICK_AB = {"target": "batchdemo", "runs": 3, "warmup": 0, "seed": 1}
LONG_AB = {"target": "batchdemo", "runs": 30, "warmup": 0, "seed": 1}


# -- clients -----------------------------------------------------------------------------------
class TasksClient(ClientExtension):
    """A 2026-07-28 client of the tasks extension: a `resultType: "task"` answer is polled
    with tasks/get until it is terminal (the statuses seen are kept)."""

    identifier = TASKS_EXTENSION

    def __init__(self) -> None:
        self.seen: list[str] = []

    def claims(self) -> list[ResultClaim[Any]]:
        async def resolve(created: ExtCreateTaskResult, ctx: ClaimContext) -> types.CallToolResult:
            self.seen.append(created.status)
            while True:
                task = await get_modern(ctx.session, created.task_id)
                self.seen.append(task.status)
                if task.status != "working":
                    assert task.result is not None, task
                    return types.CallToolResult.model_validate(task.result)
                await anyio.sleep(0.25)

        return [ResultClaim(result_type="task", model=ExtCreateTaskResult, resolve=resolve)]


@pytest.fixture
async def legacy(workspace: Workspace) -> AsyncIterator[Client]:
    async with Client(create_server(workspace), mode="legacy") as c:
        yield c


@pytest.fixture
async def modern(workspace: Workspace) -> AsyncIterator[Client]:
    async with Client(create_server(workspace), extensions=[TasksClient()]) as c:
        assert c.protocol_version == "2026-07-28"
        yield c


async def raw(client: Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One request through the session's stamp and dispatcher, its answer unvalidated."""
    session = client.session
    data: dict[str, Any] = {"method": method, "params": params}
    opts: dict[str, Any] = {}
    session._stamp(data, opts)  # the version header, or the 2026 per-request envelope
    return await session._dispatcher.send_raw_request(method, data["params"], opts)


async def get_legacy(client: Client, task_id: str) -> types.GetTaskResult:
    params = types.GetTaskRequestParams(task_id=task_id)
    return await client.session.send_request(
        types.GetTaskRequest(params=params), types.GetTaskResult
    )


async def get_modern(session: Any, task_id: str) -> ExtGetTaskResult:
    params = types.GetTaskRequestParams(task_id=task_id)
    return await session.send_request(types.GetTaskRequest(params=params), ExtGetTaskResult)


async def task_result(client: Client, task_id: str) -> types.CallToolResult:
    params = types.GetTaskPayloadRequestParams(task_id=task_id)
    return await client.session.send_request(
        types.GetTaskPayloadRequest(params=params), types.CallToolResult
    )


async def cancel_legacy(client: Client, task_id: str) -> types.CancelTaskResult:
    params = types.CancelTaskRequestParams(task_id=task_id)
    return await client.session.send_request(
        types.CancelTaskRequest(params=params), types.CancelTaskResult
    )


async def start_legacy(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    created = await raw(
        client, "tools/call", {"name": tool, "arguments": arguments, "task": {"ttl": 600_000}}
    )
    assert set(created) <= {"task", "_meta"}, created
    return created["task"]


async def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.2)


def leftovers(workspace: Workspace) -> list[psutil.Process]:
    """Target processes still alive: running in the workspace, or named after it."""
    found = processes_under(workspace.root)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(workspace.root) in cmdline and proc not in found:
            found.append(proc)
    return found


def decision(result: types.CallToolResult) -> dict[str, Any]:
    s = result.structured_content or {}
    return {k: s.get(k) for k in ("run_id", "status", "verdict", "reason", "values", "commits")}


# -- capabilities ------------------------------------------------------------------------------
async def test_2025_advertises_the_tasks_capability_and_task_support(legacy: Client) -> None:
    assert legacy.protocol_version == "2025-11-25"
    tasks = legacy.server_capabilities.tasks
    assert tasks is not None
    assert tasks.list is not None and tasks.cancel is not None
    assert tasks.requests and tasks.requests.tools and tasks.requests.tools.call is not None
    for tool in (await legacy.list_tools()).tools:
        support = tool.execution.task_support if tool.execution else None
        assert support == ("optional" if tool.name in JOB_TOOLS else None), tool.name


async def test_2026_advertises_the_extension_only(modern: Client) -> None:
    capabilities = modern.server_capabilities
    assert capabilities.extensions == {TASKS_EXTENSION: {}}
    assert capabilities.tasks is None  # the core capability is 2025-11-25's
    assert all(t.execution is None for t in (await modern.list_tools()).tools)


# -- 2025-11-25 ----------------------------------------------------------------------------------
async def test_2025_task_lifecycle(legacy: Client) -> None:
    start = time.monotonic()
    task = await start_legacy(legacy, "run_ab", QUICK_AB)
    assert time.monotonic() - start < 5, "the task must be created at once"
    assert task["status"] == "working" and task["ttl"] is None and task["pollInterval"] > 0
    task_id = task["taskId"]
    assert task_id.startswith("run-")

    polled = await get_legacy(legacy, task_id)
    assert polled.task_id == task_id and polled.status == "working"
    assert polled.created_at == task["createdAt"]
    listed = await legacy.session.send_request(types.ListTasksRequest(), types.ListTasksResult)
    assert task_id in [t.task_id for t in listed.tasks]

    result = await task_result(legacy, task_id)  # blocks until the run is decided
    assert not result.is_error, result.content
    assert result.meta and result.meta[RELATED_TASK] == {"taskId": task_id}
    assert result.structured_content and result.structured_content["status"] == "done"
    assert result.structured_content["verdict"] in ("KEEP", "DISCARD", "INCONCLUSIVE", "SAME")

    done = await get_legacy(legacy, task_id)
    assert done.status == "completed" and done.last_updated_at >= done.created_at
    direct = await legacy.call_tool("get_run", {"run_id": task_id, "wait_s": 0})
    assert decision(direct) == decision(result)
    assert len(result.structured_content["values"]["A"]) == 3

    with pytest.raises(MCPError) as refused:  # a terminal task cannot be cancelled
        await cancel_legacy(legacy, task_id)
    assert refused.value.code == types.INVALID_PARAMS and "completed" in refused.value.message


async def test_2025_cancel_from_another_server_stops_the_run(
    legacy: Client, workspace: Workspace
) -> None:
    task_id = (await start_legacy(legacy, "run_ab", LONG_AB))["taskId"]

    async def measuring() -> bool:
        task = await get_legacy(legacy, task_id)
        assert task.status == "working", task
        return "run " in (task.status_message or "")

    await wait_for(measuring, 60, "the first measured run")
    async with Client(create_server(workspace), mode="legacy") as other:  # another server
        seen = await get_legacy(other, task_id)
        assert seen.status == "working"
        cancelled = await cancel_legacy(other, task_id)
        assert cancelled.task_id == task_id and cancelled.status == "cancelled"
        assert cancelled.status_message
    assert (await get_legacy(legacy, task_id)).status == "cancelled"
    await wait_for(lambda: _none_left(workspace), 15, "the run's processes to end")

    result = await task_result(legacy, task_id)  # what get_run answers for a cancelled run
    assert result.meta and result.meta[RELATED_TASK] == {"taskId": task_id}
    assert result.structured_content and result.structured_content["status"] == "cancelled"


async def _none_left(workspace: Workspace) -> bool:
    return not leftovers(workspace)


async def test_2025_another_server_answers_for_a_task(
    legacy: Client, workspace: Workspace
) -> None:
    task_id = (await start_legacy(legacy, "build", {"target": "batchdemo"}))["taskId"]
    async with Client(create_server(workspace), mode="legacy") as other:
        result = await task_result(other, task_id)
        assert not result.is_error, result.content
        assert result.structured_content and result.structured_content["build_id"] == task_id
        assert result.structured_content["status"] == "done"
        assert (await get_legacy(other, task_id)).status == "completed"
        listed = await other.session.send_request(types.ListTasksRequest(), types.ListTasksResult)
        assert task_id in [t.task_id for t in listed.tasks]


async def test_2025_protocol_errors(legacy: Client) -> None:
    for method, request in (
        ("tasks/get", lambda p: get_legacy(legacy, p)),
        ("tasks/result", lambda p: task_result(legacy, p)),
        ("tasks/cancel", lambda p: cancel_legacy(legacy, p)),
    ):
        for task_id in ("no-such-task", "../etc"):
            with pytest.raises(MCPError) as unknown:
                await request(task_id)
            assert unknown.value.code == types.INVALID_PARAMS, method
            assert task_id in unknown.value.message, method

    with pytest.raises(MCPError) as forbidden:  # no execution.taskSupport: forbidden
        await raw(legacy, "tools/call", {"name": "list_targets", "arguments": {}, "task": {}})
    assert forbidden.value.code == types.METHOD_NOT_FOUND
    assert "list_targets" in forbidden.value.message

    refused = await raw(  # bad arguments: no task is created, the tool error comes back
        legacy, "tools/call", {"name": "run_ab", "arguments": {**QUICK_AB, "runs": 2}, "task": {}}
    )
    assert refused.get("isError") is True and "task" not in refused

    with pytest.raises(MCPError) as update:  # tasks/update is the 2026 extension's
        await raw(legacy, "tasks/update", {"taskId": "x", "inputResponses": {}})
    assert update.value.code == types.METHOD_NOT_FOUND


# -- 2026-07-28 ----------------------------------------------------------------------------------
async def test_2026_task_lifecycle(modern: Client) -> None:
    start = time.monotonic()
    created = await modern.session.call_tool("run_ab", QUICK_AB, allow_claimed=True)
    assert time.monotonic() - start < 5, "the task must be created at once"
    assert isinstance(created, ExtCreateTaskResult), created
    assert created.status == "working" and created.ttl_ms is None and created.poll_interval_ms

    statuses = []
    while True:
        task = await get_modern(modern.session, created.task_id)
        statuses.append(task.status)
        if task.status != "working":
            break
        assert task.result is None
        await anyio.sleep(0.5)
    assert statuses[0] == "working" and statuses[-1] == "completed", statuses
    assert task.result is not None
    inlined = types.CallToolResult.model_validate(task.result)
    direct = await modern.call_tool("get_run", {"run_id": created.task_id, "wait_s": 0})
    assert not inlined.is_error and decision(inlined) == decision(direct)
    assert decision(inlined)["verdict"] in ("KEEP", "DISCARD", "INCONCLUSIVE", "SAME")

    ack = await raw(modern, "tasks/cancel", {"taskId": created.task_id})  # finished: a no-op
    assert ack["resultType"] == "complete"
    assert (await get_modern(modern.session, created.task_id)).status == "completed"

    # A client that lets its extension resolve the task gets the final answer transparently.
    client_ext = modern.extensions[0]
    assert isinstance(client_ext, TasksClient)
    built = await modern.call_tool("build", {"target": "batchdemo"})
    assert not built.is_error and built.structured_content["status"] == "done"
    assert client_ext.seen[0] == "working" and client_ext.seen[-1] == "completed"


async def test_2026_cancel_stops_a_running_profile(modern: Client, workspace: Workspace) -> None:
    slow = workspace.targets_dir / "pyserver" / "workload-slow.sh"
    slow.write_text('#!/usr/bin/env bash\nsleep 30\nexec bash "$(dirname "$0")/workload.sh" "$@"\n')
    created = await modern.session.call_tool(
        "profile_cpu", {"target": "pyserver", "workload": "workload-slow.sh"}, allow_claimed=True
    )
    assert isinstance(created, ExtCreateTaskResult), created
    task_id = created.task_id
    assert task_id.startswith("prof-")

    async def profiling() -> bool:
        task = await get_modern(modern.session, task_id)
        assert task.status == "working", task
        return "workload" in (task.status_message or "") and bool(leftovers(workspace))

    await wait_for(profiling, 60, "the profiled workload to start")
    ack = await raw(modern, "tasks/cancel", {"taskId": task_id})
    assert ack["resultType"] == "complete" and set(ack) <= {"resultType", "_meta"}

    async def cancelled() -> ExtGetTaskResult | None:
        task = await get_modern(modern.session, task_id)
        return task if task.status == "cancelled" else None

    task = await wait_for(cancelled, 30, "status cancelled")
    assert task.result is None and task.status_message
    await wait_for(lambda: _none_left(workspace), 15, "the profile's processes to end")
    answer = await modern.call_tool("get_profile", {"profile_id": task_id, "wait_s": 0})
    assert answer.is_error and "cancelled" in answer.content[0].text


async def test_2026_protocol_errors(modern: Client, workspace: Workspace) -> None:
    for method, params in (
        ("tasks/get", {"taskId": "no-such-task"}),
        ("tasks/cancel", {"taskId": "no-such-task"}),
        ("tasks/update", {"taskId": "no-such-task", "inputResponses": {}}),
    ):
        with pytest.raises(MCPError) as unknown:
            await raw(modern, method, params)
        assert unknown.value.code == types.INVALID_PARAMS, method
        assert "no-such-task" in unknown.value.message, method
    for method in ("tasks/result", "tasks/list"):  # 2025-11-25 only
        with pytest.raises(MCPError) as missing:
            await raw(modern, method, {"taskId": "no-such-task"})
        assert missing.value.code == types.METHOD_NOT_FOUND, method

    async with Client(create_server(workspace)) as plain:  # did not declare the extension
        with pytest.raises(MCPError) as undeclared:
            await raw(plain, "tasks/get", {"taskId": "no-such-task"})
        assert undeclared.value.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY
        answer = await plain.call_tool("build", {"target": "batchdemo", "wait_s": 0})
        assert isinstance(answer, types.CallToolResult)  # never a task for this client
        assert answer.structured_content and answer.structured_content["build_id"]
