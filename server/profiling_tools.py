"""The profiling tools: profile_memory, profile_cpu, diff_profiles (+ the flame graph
resource). `register(mcp, engine, ws)` is called once from create_server."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, ImageContent, TextContent
from pydantic import BaseModel, Field

from autoopt.server.errors import tool_errors
from autoopt.server.explain_tools import plan_answer
from autoopt.server.jobs_view import WaitS, capped, forward, notes, pending
from autoopt.server.params import ACTS, NAME_PATTERN, READ_ONLY, Backend, Env, TargetName
from autoopt.server.progress import Note
from autoopt.tools.engine import Engine
from autoopt.tools.errors import AutooptError, NotFound
from autoopt.tools.jobs import JobRecord, Report
from autoopt.tools.journal import Step
from autoopt.tools.profiling import run as profiling
from autoopt.tools.profiling import store
from autoopt.tools.profiling import views as pviews
from autoopt.tools.profiling.model import MemoryReadings, Peak, human_value
from autoopt.tools.profiling.views import PathEntry, ProfileDiff, ScopeEntry, TopEntry
from autoopt.tools.workspace import Workspace, check_name

Label = Annotated[
    str | None,
    Field(

        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        max_length=64,
    ),
]
DeploymentId = str | None  # profile it instead of building (the docs say so)
Patch = Annotated[str | None, Field(description="diff on base")]
Base = str | None  # a revision; default: the frontier ("patch: diff on base" says it)
DIFF_LINES = 8  # changed paths listed by diff_profiles (detail=true: all of them)
TopN = Annotated[int, Field(ge=1, le=20)]
IncludeFlamegraph = bool
Workload = Annotated[
    str | None,
    Field(
        description="in the target's folder"
    ),
]


class ProfileFull(BaseModel):
    """A profile in full: the tool, the top tables, the files and the commands (what a
    job stores, and what get_profile(detail=true) returns in `full`)."""

    profile_id: str = Field(description="the job id: get_profile / cancel_run take it")
    status: str = Field(description="done, or running (then call next_call)")
    target: str
    label: str | None = None
    kind: str | None = None
    env: str | None = None
    revision: str | None = None
    workload: str | None = None
    program: str | None = Field(None, description="the profiled program's command, as it ran")
    interpreter: str | None = Field(None, description="its Python: path (version)")
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
        None, description="VmHWM / VmRSS / smaps_rollup (MiB), independent of the profiler"
    )
    mode: str | None = Field(None, description="how bytes are attributed to stacks")
    heap_vs_rss: str | None = Field(None, description="heap peak, VmHWM, the gap, a reading")
    peak: Peak | None = None
    growth: str | None = Field(None, description="memory over the run")
    workload_s: float | None = None
    workload_metrics: dict[str, float] = Field(default_factory=dict)
    scope: list[ScopeEntry] = Field(
        default_factory=list, description="by the deepest frame in the editable scope, or "
        "(tool=retention) by owner chain"
    )
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


class ProfileView(BaseModel):
    """A profile, answer first: the top paths as lines. While it runs, only the id, status,
    progress and next call are set; `full` only with detail=true."""

    profile_id: str = Field(description="get_profile / cancel_run take it")
    status: str = Field(description="done, or running (then call next_call)")
    label: str | None = None
    total: str | None = Field(None, description="bytes at the peak, or samples")
    scope: list[str] = Field(default_factory=list, description="by editable frame: % value")
    top: list[str] = Field(
        default_factory=list,
        description="per top path: % of total, value, leaf < the target's own frames",
    )
    progress: str | None = None
    next_call: str | None = None
    full: dict[str, Any] | None = None


def _trimmed(frames: list[str], own: set[str], keep: int = 4) -> str:
    """The leaf, then the nearest frames in the target's own files (file:line), leaf first."""
    leaf_first = list(reversed(frames))
    mine = [f for f in leaf_first[1:] if _file_of(f) in own][:keep]
    shown = [leaf_first[0], *mine] if mine else leaf_first[: keep + 1]
    return " < ".join(shown)


def _file_of(label: str) -> str:
    inside = label.rsplit(" (", 1)[-1].rstrip(")") if label.endswith(")") else ""
    return inside.split(":")[0]


def _lean(record_result: dict[str, Any], own: set[str], n: int) -> ProfileView:
    full = ProfileFull.model_validate(record_result)
    unit = full.unit or ""
    top = [
        f"#{e.rank} {e.pct:.1f}% {human_value(e.value, unit)}: "  # type: ignore[arg-type]
        f"{_trimmed(e.frames, own)}"
        for e in full.top_paths[:n]
    ]
    return ProfileView(
        profile_id=full.profile_id,
        status=full.status,
        label=full.label,
        total=human_value(full.total, unit) if full.total is not None else None,  # type: ignore[arg-type]
        scope=[e.text for e in full.scope[:n]],
        top=top,
    )


def _text(view: ProfileView, full: ProfileFull) -> str:
    hwm = full.memory.vm_hwm_mb if full.memory else None
    head = (f"{view.profile_id} {view.label}: {full.measure} ({full.tool}), total {view.total}"
            + (f", VmHWM {hwm:.1f} MiB" if hwm is not None else "")
            + ("" if full.complete else ", INCOMPLETE"))
    if full.interpreter:
        head += f"; python {full.interpreter}"
    lines = [head]
    lines += [f"{k}: {v}" for k, v in (("Mode", full.mode), ("Heap vs RSS", full.heap_vs_rss),
                                       ("Growth", full.growth)) if v]
    if view.scope:
        lines.append(pviews.SCOPE_TITLE[full.tool == "retention"].capitalize())
        lines += view.scope
        lines.append("Paths:")
    lines += [*view.top, *(f"Note: {n}" for n in full.notes)]
    stacks = f"autoopt://profiles/{full.target}/{full.env}/{full.label}/stacks.txt"
    lines.append(f"Detail: get_profile(profile_id='{view.profile_id}', detail=true) or "
                 f"{stacks}" + (f"; flame graph {full.resource_uri}" if full.resource_uri
                                else ""))
    return capped(lines, 4000)


class DiffView(BaseModel):
    """Two profiles compared: the totals, then one line per changed path."""

    before: str
    after: str
    total: str = Field(description="before -> after (signed change)")
    changes: list[str] = Field(description="per path: change, delta, before -> after, frames")
    counts: dict[str, int] = Field(description="paths grown / shrunk / appeared / disappeared")
    warnings: list[str] = Field(default_factory=list)
    full: dict[str, Any] | None = None


def _diff_view(d: ProfileDiff, own: set[str], n: int) -> DiffView:
    def v(x: float) -> str:
        return human_value(abs(x), d.unit)

    def signed(x: float) -> str:
        return ("+" if x >= 0 else "-") + v(x)

    pct = f", {d.delta_total_pct:+.1f}%" if d.delta_total_pct is not None else ""
    return DiffView(
        before=d.before,
        after=d.after,
        total=f"{v(d.before_total)} -> {v(d.after_total)} ({signed(d.delta_total)}{pct})",
        changes=[
            f"{e.change} {signed(e.delta)} ({v(e.before)} -> {v(e.after)}): "
            f"{_trimmed(e.frames, own) if e.frames else e.key}"
            for e in d.paths[:n]
        ],
        counts=d.counts,
        warnings=d.warnings,
    )


def _diff_text(view: DiffView) -> str:
    counts = ", ".join(f"{k} {c}" for k, c in view.counts.items() if c)
    lines = [f"{view.before} -> {view.after}: {view.total}; paths {counts}"]
    lines += [*(f"Warning: {w}" for w in view.warnings), *view.changes]
    lines.append("Detail: diff_profiles(..., detail=true)")
    return capped(lines, 2500)


def _line(e: PathEntry, unit: str) -> str:
    leaf = " < ".join(reversed(e.frames[-4:]))
    return f"#{e.rank} {e.pct:.1f}% {human_value(e.value, unit)}: {leaf}"  # type: ignore[arg-type]


def _view(profile_id: str, r: profiling.ProfileRun) -> ProfileFull:
    p = r.profile
    png = r.files.get("flamegraph")
    return ProfileFull(
        profile_id=profile_id,
        status="done",
        label=p.label,
        kind=p.kind,
        target=p.target,
        env=p.env,
        revision=p.revision,
        workload=p.workload,
        program=p.program,
        interpreter=p.interpreter,
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
        mode=p.mode,
        heap_vs_rss=pviews.heap_vs_rss(p),
        peak=p.peak,
        growth=pviews.growth_text(p),
        workload_s=p.workload_s,
        workload_metrics=p.workload_metrics,
        scope=r.scope,
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


def _answer(
    record: JobRecord,
    own: set[str],
    *,
    n: int = 5,
    detail: bool = False,
    include_flamegraph: bool = False,
) -> CallToolResult:
    """What the profiling tool answers for its job: the top paths, or its progress; a job
    that failed is the tool error it would have been."""
    still = pending(record, "get_profile", "profile_id")
    if still is None:
        result = record.result or {}
        view = _lean(result, own, n)
        if detail:
            view.full = result
        text = _text(view, ProfileFull.model_validate(result))
    else:
        view = ProfileView(profile_id=record.id, status="running", **still.model_dump())
        text = still.text(record.id)
    content: list[TextContent | ImageContent] = [TextContent(type="text", text=text)]
    png = (record.result or {}).get("flamegraph")
    if include_flamegraph and png and Path(png).is_file():
        data = base64.b64encode(Path(png).read_bytes()).decode()
        content.append(ImageContent(type="image", data=data, mime_type="image/png"))
    structured = view.model_dump(mode="json", exclude_none=True)
    return CallToolResult(content=content, structured_content=structured)


def _own_files(engine: Engine, target: str) -> set[str]:
    """The target's source files (tree-relative paths, as frames name them)."""
    from autoopt.tools.source import git

    try:
        source = engine.source(engine.spec(target))
        names = git(source.repo, "ls-tree", "-r", "--name-only", source.frontier())
    except AutooptError:
        return set()
    return set(names.split())


def register(mcp: MCPServer, engine: Engine, ws: Workspace) -> None:
    """Declare the profiling tools and the flame graph resource on `mcp`."""

    async def run_as_job(
        kind: str,
        target: str,
        wait_s: float,
        ctx: Context | None,
        work: Callable[[Note], Awaitable[profiling.ProfileRun]],
        n: int,
        include_flamegraph: bool,
    ) -> CallToolResult:
        engine.spec(target)  # an unknown target fails now, not in the job
        profile_id = f"prof-{time.strftime('%Y%m%d-%H%M%S')}-{uuid4().hex[:6]}"

        async def job(report: Report) -> profiling.ProfileRun:
            return await work(notes(report))

        engine.jobs.start(
            profile_id, kind, target, job,
            render=lambda r: _view(profile_id, r).model_dump(mode="json"),
        )
        record = await engine.jobs.wait_started(profile_id, wait_s, forward(ctx))
        return _answer(record, _own_files(engine, target), n=n,
                       include_flamegraph=include_flamegraph)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def profile_memory(
        target: TargetName,
        deployment_id: DeploymentId = None,
        patch: Patch = None,
        base: Base = None,
        workload: Workload = None,
        label: Label = None,
        tool: Annotated[
            profiling.MemoryTool,
            Field(description="procfs: /proc only"),
        ] = "auto",
        backend: Backend = "local",
        wait_s: WaitS = 40,
        top: TopN = 5,
        include_flamegraph: IncludeFlamegraph = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """Memory at the PEAK (bytes, %) by editable frame and stack: builds, runs the
        workload under a profiler. After wait_s: status=running."""
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
                base=base,
                workload=workload,
                label=label,
                tool=tool,
                backend=backend,
                progress=note,
            ),
            top,
            include_flamegraph,
        )

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def profile_cpu(
        target: TargetName,
        deployment_id: DeploymentId = None,
        patch: Patch = None,
        base: Base = None,
        workload: Workload = None,
        label: Label = None,
        tool: Annotated[
            profiling.CpuTool, Field(description="auto: py-spy (Python), perf (native)")
        ] = "auto",
        backend: Backend = "local",
        rate_hz: Annotated[int, Field(ge=10, le=2000)] = 100,
        wait_s: WaitS = 40,
        top: TopN = 5,
        include_flamegraph: IncludeFlamegraph = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """CPU time by stack (samples); as profile_memory."""
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
                base=base,
                workload=workload,
                label=label,
                tool=tool,
                backend=backend,
                rate_hz=rate_hz,
                progress=note,
            ),
            top,
            include_flamegraph,
        )

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def get_profile(
        profile_id: str,
        wait_s: WaitS = 40,
        top: TopN = 5,
        detail: bool = False,
        include_flamegraph: IncludeFlamegraph = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProfileView]:
        """Waits up to wait_s; answers as profile_memory."""
        engine.jobs.require(check_name(profile_id, "profile id"), "profile")
        record = await engine.jobs.wait(profile_id, wait_s, forward(ctx))
        if record.kind == "explain_query":
            return plan_answer(record)
        return _answer(record, _own_files(engine, record.target), n=top, detail=detail,
                       include_flamegraph=include_flamegraph)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def diff_profiles(
        target: TargetName,
        before: Annotated[str, Field(pattern=NAME_PATTERN)],
        after: Annotated[str, Field(pattern=NAME_PATTERN)],
        env: Env = "local",
        detail: bool = False,
    ) -> Annotated[CallToolResult, DiffView]:
        """Two stored profiles compared: totals, the paths that changed most."""
        d = profiling.diff_profiles(engine, target, env, before, after)
        view = _diff_view(d, _own_files(engine, target), DIFF_LINES)
        if detail:
            view.full = d.model_dump(mode="json")
        return CallToolResult(
            content=[TextContent(type="text", text=_diff_text(view))],
            structured_content=view.model_dump(mode="json", exclude_none=True),
        )

    @mcp.resource("autoopt://profiles/{target}/{env}/{label}/stacks.txt", mime_type="text/plain")
    def stacks_txt(target: str, env: str, label: str) -> str:
        """A stored profile's top-10 paths (every frame) and its top functions tables."""
        path = store.file_of(
            ws, check_name(target, "target name"), check_name(env, "env"), label, "stacks"
        )
        if not path.is_file():
            raise NotFound(f"no profile {label} of {target}/{env}")
        return path.read_text(encoding="utf-8")

    @mcp.resource("autoopt://profiles/{target}/{env}/{label}/flamegraph.png", mime_type="image/png")
    def flamegraph_png(target: str, env: str, label: str) -> bytes:
        """A stored profile's flame graph (icicle: root on top)."""
        path = store.file_of(
            ws, check_name(target, "target name"), check_name(env, "env"), label, "flamegraph"
        )
        if not path.is_file():
            raise NotFound(f"no flame graph for profile {label} of {target}/{env}")
        return path.read_bytes()
