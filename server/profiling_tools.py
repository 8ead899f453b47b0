"""The profiling tools: profile_memory, profile_cpu, diff_profiles (+ the flame graph
resource). `register(mcp, engine, ws)` is called once from create_server."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated
from uuid import uuid4

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent
from pydantic import BaseModel, Field

from autoopt.server.errors import tool_errors
from autoopt.server.jobs_view import WaitS, forward, notes, still_running
from autoopt.server.params import ACTS, READ_ONLY, Backend, TargetName
from autoopt.server.progress import Note
from autoopt.tools.engine import Engine
from autoopt.tools.errors import NotFound
from autoopt.tools.jobs import JobRecord, Report
from autoopt.tools.journal import Step
from autoopt.tools.profiling import run as profiling
from autoopt.tools.profiling import store
from autoopt.tools.profiling.model import MemoryReadings, human_value
from autoopt.tools.profiling.views import PathEntry, ProfileDiff, TopEntry
from autoopt.tools.workspace import Workspace, check_name

Label = Annotated[
    str | None,
    Field(
        description="profile name, stored as results/<target>/<env>/profiles/<label>-*; e.g. "
        "'baseline' (the methodology's baseline-stacks.txt). Default: mem-/cpu-<time>",
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        max_length=64,
    ),
]
DeploymentId = Annotated[
    str | None,
    Field(description="profile a running deployment (from deploy) instead of building one"),
]
Patch = Annotated[
    str | None,
    Field(
        description="a unified diff applied on the frontier before building (not with "
        "deployment_id)"
    ),
]
Workload = Annotated[
    str | None,
    Field(
        description="a targeted workload file in the target's folder, e.g. 'workload-process.sh'; "
        "omit for the target's own workload"
    ),
]


class ProfileView(BaseModel):
    """A profile's summary: the tool, the top tables, the files and the commands. While
    the profile is still running, only the id, status, progress and next call are set."""

    profile_id: str = Field(description="the job id: get_profile / cancel_run take it")
    status: str = Field(description="done, or running (then call next_call)")
    target: str
    label: str | None = None
    kind: str | None = None
    env: str | None = None
    revision: str | None = None
    workload: str | None = None
    tool: str | None = Field(None, description="the profiler that produced the stacks")
    measure: str | None = Field(None, description="what the values mean")
    unit: str | None = None
    total: float | None = Field(None, description="bytes at the peak, or samples")
    overhead: str | None = Field(None, description="overhead class: none | low | moderate | high")
    overhead_note: str | None = None
    unsymbolized_frames: int | None = None
    frames: int | None = Field(None, description="distinct frames")
    stacks: int | None = Field(None, description="distinct stacks")
    memory: MemoryReadings | None = Field(
        None, description="VmHWM / VmRSS / smaps_rollup (MB), independent of the profiler"
    )
    workload_s: float | None = None
    workload_metrics: dict[str, float] = Field(default_factory=dict)
    top: list[str] = Field(
        default_factory=list, description="one line per top path: % of total, value, leaf side"
    )
    top_paths: list[PathEntry] = Field(
        default_factory=list, description="top call paths, recursion collapsed"
    )
    top_self: list[TopEntry] = Field(
        default_factory=list, description="functions by their own value (leaf)"
    )
    top_total: list[TopEntry] = Field(
        default_factory=list, description="functions by inclusive value"
    )
    table: str = Field("", description="the <label>-stacks.txt text")
    files: dict[str, str] = Field(default_factory=dict)
    flamegraph: str | None = Field(None, description="PNG path")
    resource_uri: str | None = Field(None, description="the PNG as an MCP resource")
    notes: list[str] = Field(default_factory=list)
    complete: bool | None = None
    journal: list[Step] = Field(
        default_factory=list, description="the commands that ran (phase 'profile')"
    )
    progress: str | None = Field(None, description="while running: the latest step")
    next_call: str | None = Field(None, description="while running: the call that waits")


def _line(e: PathEntry, unit: str) -> str:
    leaf = " < ".join(reversed(e.frames[-4:]))
    return f"#{e.rank} {e.pct:.1f}% {human_value(e.value, unit)}: {leaf}"  # type: ignore[arg-type]


def _view(profile_id: str, r: profiling.ProfileRun) -> ProfileView:
    p = r.profile
    png = r.files.get("flamegraph")
    return ProfileView(
        profile_id=profile_id,
        status="done",
        label=p.label,
        kind=p.kind,
        target=p.target,
        env=p.env,
        revision=p.revision,
        workload=p.workload,
        tool=p.tool,
        measure=p.measure,
        unit=p.unit,
        total=p.total,
        overhead=p.overhead,
        overhead_note=p.overhead_note,
        unsymbolized_frames=p.unsymbolized_frames,
        frames=len(p.frames),
        stacks=len(p.stacks),
        memory=p.memory,
        workload_s=p.workload_s,
        workload_metrics=p.workload_metrics,
        top=[_line(e, p.unit) for e in r.top_paths],
        top_paths=r.top_paths,
        top_self=r.top_self,
        top_total=r.top_total,
        table=r.table,
        files=r.files,
        flamegraph=png,
        resource_uri=f"autoopt://profiles/{p.target}/{p.env}/{p.label}/flamegraph.png"
        if png
        else None,
        notes=p.notes,
        complete=p.complete,
        journal=r.journal.steps,
    )


def _answer(record: JobRecord) -> CallToolResult:
    """What the profiling tool answers for its job: the profile, or its progress; a job
    that failed is the tool error it would have been."""
    if record.status == "done" and record.result:
        view = ProfileView.model_validate(record.result)
    elif record.finished:
        raise ToolError(f"{record.kind} {record.id} {record.status}: {record.error}")
    else:
        still = still_running(record, "get_profile", "profile_id")
        view = ProfileView(
            profile_id=record.id, status="running", target=record.target, **still.model_dump()
        )
        text = f"{record.id} [running] {still.progress}. Next: {still.next_call}"
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=view.model_dump(mode="json"),
        )
    png = view.flamegraph
    content: list[TextContent | ImageContent] = [
        TextContent(type="text", text=view.table),
        TextContent(type="text", text=view.model_dump_json()),
    ]
    if png and Path(png).is_file():
        data = base64.b64encode(Path(png).read_bytes()).decode()
        content.append(ImageContent(type="image", data=data, mime_type="image/png"))
    return CallToolResult(content=content, structured_content=view.model_dump(mode="json"))


def register(mcp: MCPServer, engine: Engine, ws: Workspace) -> None:
    """Declare the profiling tools and the flame graph resource on `mcp`."""

    async def run_as_job(
        kind: str,
        target: str,
        wait_s: float,
        ctx: Context | None,
        work: Callable[[Note], Awaitable[profiling.ProfileRun]],
    ) -> CallToolResult:
        engine.spec(target)  # an unknown target fails now, not in the job
        profile_id = f"prof-{time.strftime('%Y%m%d-%H%M%S')}-{uuid4().hex[:6]}"

        async def job(report: Report) -> profiling.ProfileRun:
            return await work(notes(report))

        engine.jobs.start(
            profile_id, kind, target, job,
            render=lambda r: _view(profile_id, r).model_dump(mode="json"),
        )
        return _answer(await engine.jobs.wait_started(profile_id, wait_s, forward(ctx)))

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def profile_memory(
        target: TargetName,
        deployment_id: DeploymentId = None,
        patch: Patch = None,
        workload: Workload = None,
        label: Label = None,
        tool: Annotated[
            profiling.MemoryTool,
            Field(
                description=(
                    "auto: memray for Python (tracemalloc only where memray cannot run); for "
                    "native code jemalloc's own heap profiler when the program runs on jemalloc "
                    "(linked, preloaded or built in), else heaptrack; jemalloc on a native program "
                    "without it preloads Debian's libjemalloc (sampled stacks; VmHWM is then "
                    "jemalloc's); procfs: /proc readings only"
                )
            ),
        ] = "auto",
        backend: Backend = "local",
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """Phase 1: which function holds the memory at the PEAK, through which stack, how many
        bytes and what % of the peak. Builds the target (frontier + optional patch), starts
        it under the profiler, resets VmHWM, runs the workload, reads VmHWM / VmRSS /
        smaps_rollup, tears down. Stores <label>-stacks.txt (top-10 paths), folded stacks,
        speedscope JSON and a flame graph PNG under results/<target>/<env>/profiles/.
        Still running after wait_s: answers status=running; get_profile waits for it."""
        return await run_as_job(
            "profile_memory",
            target,
            wait_s,
            ctx,
            lambda note: profiling.profile_memory(
                engine,
                target,
                deployment_id=deployment_id,
                patch=patch,
                workload=workload,
                label=label,
                tool=tool,
                backend=backend,
                progress=note,
            ),
        )

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def profile_cpu(
        target: TargetName,
        deployment_id: DeploymentId = None,
        patch: Patch = None,
        workload: Workload = None,
        label: Label = None,
        tool: Annotated[
            profiling.CpuTool,
            Field(
                description=(
                    "auto: py-spy for Python (the real Python pid), perf cpu-clock for native"
                )
            ),
        ] = "auto",
        backend: Backend = "local",
        rate_hz: Annotated[int, Field(ge=10, le=2000, description="samples per second")] = 100,
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """Where CPU time goes under the workload: sampled stacks (py-spy for Python, perf
        for native), the top functions by self and total samples, folded stacks, speedscope
        JSON and a flame graph PNG. Same build/deploy/teardown and wait_s as profile_memory."""
        return await run_as_job(
            "profile_cpu",
            target,
            wait_s,
            ctx,
            lambda note: profiling.profile_cpu(
                engine,
                target,
                deployment_id=deployment_id,
                patch=patch,
                workload=workload,
                label=label,
                tool=tool,
                backend=backend,
                rate_hz=rate_hz,
                progress=note,
            ),
        )

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def get_profile(
        profile_id: Annotated[str, Field(description="from profile_memory or profile_cpu")],
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """A profile by id, from this or an earlier server: waits up to wait_s for one still
        running, then answers as profile_memory / profile_cpu would have."""
        engine.jobs.require(check_name(profile_id, "profile id"), "profile")
        return _answer(await engine.jobs.wait(profile_id, wait_s, forward(ctx)))

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def diff_profiles(
        target: TargetName,
        before: Annotated[
            str,
            Field(
                description="label of the earlier profile, e.g. baseline",
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
            ),
        ],
        after: Annotated[
            str, Field(description="label of the later profile", pattern=r"^[a-z0-9][a-z0-9._-]*$")
        ],
        env: Annotated[
            str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="local | docker | kubernetes")
        ] = "local",
    ) -> ProfileDiff:
        """Compare two stored profiles: call paths that grew, shrank, appeared or disappeared
        (signed bytes or samples), the same for functions (inclusive), and the totals."""
        return profiling.diff_profiles(engine, target, env, before, after)

    @mcp.resource("autoopt://profiles/{target}/{env}/{label}/flamegraph.png", mime_type="image/png")
    def flamegraph_png(target: str, env: str, label: str) -> bytes:
        """A stored profile's flame graph (icicle: root on top)."""
        path = store.file_of(
            ws, check_name(target, "target name"), check_name(env, "env"), label, "flamegraph"
        )
        if not path.is_file():
            raise NotFound(f"no flame graph for profile {label} of {target}/{env}")
        return path.read_bytes()
