"""The profiling tools: profile_memory, profile_cpu, diff_profiles (+ the flame graph
resource). `register(mcp, engine, ws)` is called once from create_server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, ImageContent, TextContent
from pydantic import BaseModel, Field

from autoopt.server.errors import tool_errors
from autoopt.server.params import ACTS, READ_ONLY, Backend, TargetName
from autoopt.server.progress import progress_of
from autoopt.tools.engine import Engine
from autoopt.tools.errors import NotFound
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
    """A profile's summary: the tool, the top tables, the files and the commands."""

    label: str
    kind: str
    target: str
    env: str
    revision: str | None
    workload: str | None
    tool: str = Field(description="the profiler that produced the stacks")
    measure: str = Field(description="what the values mean")
    unit: str
    total: float = Field(description="bytes at the peak, or samples")
    overhead: str = Field(description="overhead class: none | low | moderate | high")
    overhead_note: str
    unsymbolized_frames: int
    frames: int = Field(description="distinct frames")
    stacks: int = Field(description="distinct stacks")
    memory: MemoryReadings | None = Field(
        None, description="VmHWM / VmRSS / smaps_rollup (MB), independent of the profiler"
    )
    workload_s: float | None
    workload_metrics: dict[str, float]
    top: list[str] = Field(description="one line per top path: % of total, value, leaf side")
    top_paths: list[PathEntry] = Field(description="top call paths, recursion collapsed")
    top_self: list[TopEntry] = Field(description="functions by their own value (leaf)")
    top_total: list[TopEntry] = Field(description="functions by inclusive value")
    table: str = Field(description="the <label>-stacks.txt text")
    files: dict[str, str]
    flamegraph: str | None = Field(None, description="PNG path")
    resource_uri: str | None = Field(None, description="the PNG as an MCP resource")
    notes: list[str]
    complete: bool
    journal: list[Step] = Field(description="the commands that ran (phase 'profile')")


def _line(e: PathEntry, unit: str) -> str:
    leaf = " < ".join(reversed(e.frames[-4:]))
    return f"#{e.rank} {e.pct:.1f}% {human_value(e.value, unit)}: {leaf}"  # type: ignore[arg-type]


def _result(r: profiling.ProfileRun) -> CallToolResult:
    p = r.profile
    png = r.files.get("flamegraph")
    view = ProfileView(
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
    content: list[TextContent | ImageContent] = [
        TextContent(type="text", text=r.table),
        TextContent(type="text", text=view.model_dump_json()),
    ]
    if png and Path(png).is_file():
        data = base64.b64encode(Path(png).read_bytes()).decode()
        content.append(ImageContent(type="image", data=data, mime_type="image/png"))
    return CallToolResult(content=content, structured_content=view.model_dump(mode="json"))


def register(mcp: MCPServer, engine: Engine, ws: Workspace) -> None:
    """Declare the profiling tools and the flame graph resource on `mcp`."""

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
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """Phase 1: which function holds the memory at the PEAK, through which stack, how many
        bytes and what % of the peak. Builds the target (frontier + optional patch), starts
        it under the profiler, resets VmHWM, runs the workload, reads VmHWM / VmRSS /
        smaps_rollup, tears down. Stores <label>-stacks.txt (top-10 paths), folded stacks,
        speedscope JSON and a flame graph PNG under results/<target>/<env>/profiles/."""
        r = await profiling.profile_memory(
            engine,
            target,
            deployment_id=deployment_id,
            patch=patch,
            workload=workload,
            label=label,
            tool=tool,
            backend=backend,
            progress=progress_of(ctx),
        )
        return _result(r)

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
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """Where CPU time goes under the workload: sampled stacks (py-spy for Python, perf
        for native), the top functions by self and total samples, folded stacks, speedscope
        JSON and a flame graph PNG. Same build/deploy/teardown as profile_memory."""
        r = await profiling.profile_cpu(
            engine,
            target,
            deployment_id=deployment_id,
            patch=patch,
            workload=workload,
            label=label,
            tool=tool,
            backend=backend,
            rate_hz=rate_hz,
            progress=progress_of(ctx),
        )
        return _result(r)

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
