"""The MCP server: a thin adapter from typed tools to the engine in autoopt.tools."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resources import FileResource
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from autoopt.server import explain_tools, profiling_tools, trace_log_tools, views
from autoopt.server.compact import compact_tools
from autoopt.server.errors import tool_errors
from autoopt.server.jobs_view import WaitS, forward, notes, pending, still_running
from autoopt.server.params import (
    ACTS,
    NAME_PATTERN,
    READ_ONLY,
    STOPS,
    Backend,
    Env,
    TargetName,
)
from autoopt.server.run_answer import RunView, run_result
from autoopt.server.tasks import TaskServer, TasksExtension
from autoopt.tools.abrun import ACTIVE, MIN_RUNS, Order
from autoopt.tools.backends.base import Build
from autoopt.tools.engine import BACKENDS, Engine, new_build_id
from autoopt.tools.errors import AutooptError, TargetNotFound
from autoopt.tools.jobs import JobRecord, Report
from autoopt.tools.record import OutputType
from autoopt.tools.status import append_candidate
from autoopt.tools.targets import MAX_BYTES, load_target
from autoopt.tools.workload import output_lines
from autoopt.tools.workspace import Workspace, check_name

log = logging.getLogger("autoopt")
T = TypeVar("T")
SEARCH_THREADS = 4  # search_source calls running at once; more wait for a slot

INSTRUCTIONS = """\
autoopt runs profile-first, statistically rigorous code optimization on real targets.
Read the resource autoopt://program.md first: it is the methodology, phase by phase, with
the tool calls that perform each phase. Then list_targets, read the target's target.md and
hints.md resources, profile before reading code, and keep a change only when run_ab says
KEEP. The server enforces the rules (N >= 3 runs per arm, same-commit A/B, editable scope,
no constant tuning) and writes the reproducible record itself (record_experiment)."""

Patch = Annotated[
    str | None,
    Field(
        description="unified diff"
    ),
]
Base = Annotated[str | None, Field(description="default: the frontier")]
IncludePlot = bool


def create_server(workspace: Workspace | None = None) -> MCPServer:
    """The autoopt MCP server over one workspace."""
    ws = workspace or Workspace.from_env()
    engine = Engine(ws)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Engine]:
        cleaned = await engine.recover()
        if cleaned:
            log.warning("tore down %d deployment(s) left by a previous server", len(cleaned))
        try:
            async with engine.jobs.running():
                yield engine
        finally:
            await engine.shutdown()

    mcp = TaskServer(
        "autoopt", version="0.1.0", instructions=INSTRUCTIONS, lifespan=lifespan,
        extensions=[TasksExtension(engine)],
    )
    mcp.engine = engine  # type: ignore[attr-defined]  # for in-process tests and the demo

    _register_resources(mcp, ws)
    _register_prompts(mcp)
    trace_log_tools.register(mcp, engine, ws)
    profiling_tools.register(mcp, engine, ws)
    explain_tools.register(mcp, engine)
    program = _program_md(ws)
    search_slots: list[anyio.CapacityLimiter] = []

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def list_targets(
        detail: bool = False,
    ) -> Annotated[CallToolResult, views.TargetList]:
        """The targets: metric, editable scope, guardrails, workload, ready backends."""
        infos, lines, said = [], [], set()
        for name in sorted(ws.target_names() + _broken_names(ws)):
            spec = None
            try:
                if not (ws.targets_dir / name / "target.md").is_file():
                    error = f"targets/{name}/ has no target.md; add one (see program.md)"
                    info = views.TargetInfo(name=name, valid=False, error=error)
                else:
                    try:
                        spec = load_target(ws, name)
                    except AutooptError as exc:
                        info = views.TargetInfo(name=name, valid=False, error=str(exc))
                    else:
                        readiness = {
                            b: engine.readiness(spec, b) or views.READY for b in BACKENDS
                        }
                        info = views.TargetInfo.of(spec, readiness, detail)
                        info.flag = engine.flag(name)
                hints = (ws.targets_dir / name / "hints.md").is_file()
                line = info.line(spec, hints, said)
            except Exception as exc:  # a bug on one target never hides the others
                error = f"cannot list it: {type(exc).__name__}: {str(exc)[:300]}"
                spec, info = None, views.TargetInfo(name=name, valid=False, error=error)
                line = info.line(None, False, said)
            infos.append(info)
            lines.append(line)
        listing = views.TargetList(program_md=str(program), targets=infos)
        head = f"workspace {ws.root}; methodology: autoopt://program.md ({program})"
        return _plain("\n".join([head, *lines]), listing)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def build(
        target: Annotated[str | None, Field(pattern=NAME_PATTERN, max_length=64)] = None,
        patch: Patch = None,
        base: Base = None,
        backend: Backend = "local",
        allow_constant_tuning: Annotated[
            bool, Field(description="numbers-only patch (recorded)")
        ] = False,
        build_id: str | None = None,
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, views.BuildResult]:
        """Build base + patch in a fresh worktree, kept an hour after last use. After wait_s:
        status=running; build_id waits."""
        if build_id is not None:
            return _typed(await _wait_build(check_name(build_id, "build id"), wait_s, ctx))
        if target is None:
            raise ToolError("give target (to build) or build_id (to wait for a build)")
        spec = engine.spec(target)
        source = engine.source(spec)
        commit = source.resolve(base)
        if patch:
            source.check_patch(patch, allow_constants=allow_constant_tuning, base=commit)
        build_id = new_build_id()

        async def work(report: Report) -> views.BuildResult:
            result = await engine.build(
                target,
                patch=patch,
                base=base,
                backend=backend,
                allow_constant_tuning=allow_constant_tuning,
                progress=notes(report),
                build_id=build_id,
                kept=True,
            )
            return _build_view(result)

        engine.jobs.start(build_id, "build", target, work, render=lambda v: v.model_dump())
        record = await engine.jobs.wait_started(build_id, wait_s, forward(ctx))
        return _typed(_build_answer(record))

    async def _wait_build(build_id: str, wait_s: float, ctx: Context | None) -> views.BuildResult:
        record = engine.jobs.get(build_id)
        if record is None:  # made before builds were jobs, or by run_ab: its build.json
            return _build_view(engine.get_build(build_id))
        record = await engine.jobs.wait(build_id, wait_s, forward(ctx))
        if record.finished and record.status == "done":
            engine.get_build(build_id)  # still there? says when it is gone
        return _build_answer(record)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def deploy(
        build_id: str,
    ) -> Annotated[CallToolResult, views.DeployResult]:
        """Start a build (a service: free port, health-checked); kept until teardown."""
        d = await engine.deploy(check_name(build_id, "build id"), kept=True)
        return _typed(views.DeployResult(deployment_id=d.id, endpoint=d.endpoint, pid=d.pid))

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def run_workload(
        deployment_id: str,
        workload: Annotated[
            str | None,
            Field(
                description="in the target's folder"
            ),
        ] = None,
    ) -> Annotated[CallToolResult, views.WorkloadRun]:
        """Run the workload once against a deployment; its metrics."""
        r = await engine.run_workload(check_name(deployment_id, "deployment id"), workload)
        return _typed(views.WorkloadRun(
            metrics=r.metrics,
            output=r.output,
            exit_code=r.exit_code,
            duration_s=r.duration_s,
            # on success, only what metrics and output do not already say (stderr)
            log_tail=r.log_tail if r.exit_code else "\n".join(
                ln for ln in output_lines(r.log_tail, lines=30) if ln not in r.output),
        ))

    @mcp.tool(annotations=STOPS)
    @tool_errors
    async def teardown(
        deployment_id: str | None = None,
        build_id: str | None = None,
    ) -> Annotated[CallToolResult, views.TeardownResult]:
        """Stop a deployment, or remove a build and its deployments."""
        if (deployment_id is None) == (build_id is None):
            raise ToolError("give deployment_id (from deploy) or build_id (from build), not both")
        if deployment_id is not None:
            await engine.teardown(check_name(deployment_id, "deployment id"))
            return _typed(views.TeardownResult(deployment_id=deployment_id, torn_down=True))
        stopped = await engine.remove_build(check_name(build_id, "build id"))  # type: ignore[arg-type]
        return _typed(views.TeardownResult(build_id=build_id, torn_down=True, deployments=stopped))

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def read_source(
        target: TargetName,
        path: str,
        start_line: Annotated[int, Field(ge=1)] = 1,
        end_line: Annotated[int, Field(ge=1)] = 200,
        revision: Base = None,
    ) -> Annotated[CallToolResult, views.SourceText]:
        """Numbered lines of a source file (default revision: the frontier)."""
        def read() -> tuple[str, views.SourceText]:
            source = engine.source(engine.spec(target))
            end = min(end_line, start_line + 999)
            text, total = source.read(path, start_line, end, revision)
            info = views.SourceText(
                revision=source.resolve(revision),
                start_line=start_line,
                end_line=min(end, total),
                total_lines=total,
            )
            return text, info

        text, info = await _off_loop(read)
        head = f"{path} lines {start_line}-{info.end_line} of {info.total_lines} "
        return _plain(f"{head}@ {info.revision[:12]}\n{text}", info)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def search_source(
        target: TargetName,
        pattern: Annotated[
            str, Field( min_length=1, max_length=500)
        ],
        glob: str | None = None,
        revision: Base = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
    ) -> Annotated[CallToolResult, views.SourceMatches]:
        """git grep -E the source: path:line:text per match (stopped after 5 s)."""
        def search() -> tuple[list[str], str]:
            source = engine.source(engine.spec(target))
            return source.search(pattern, glob, revision, limit + 1), source.resolve(revision)

        if not search_slots:  # made on first use, in the server's event loop
            search_slots.append(anyio.CapacityLimiter(SEARCH_THREADS))
        hits, revision_id = await _off_loop(search, search_slots[0])
        info = views.SourceMatches(
            revision=revision_id,
            count=min(len(hits), limit),
            truncated=len(hits) > limit,
        )
        more = f"\n(over {limit} matches: narrow the pattern or glob)" if info.truncated else ""
        return _plain("\n".join(hits[:limit]) + more if hits else "no match", info)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def run_ab(
        target: TargetName,
        patch: Patch = None,
        base: Base = None,
        runs: Annotated[
            int,
            Field(
                ge=3,
                le=200,
                description="per arm; 5+ advised",
            ),
        ] = 5,
        warmup: Annotated[int, Field(ge=0, le=10)] = 1,
        backend: Backend = "local",
        order: Order = "abba",
        seed: int | None = None,
        min_effect: Annotated[
            float | None,
            Field(
                ge=0, description="%; default target.md's"
            ),
        ] = None,
        sequential: Annotated[
            bool,
            Field(
                description="may stop at 5/10/15/20"
            ),
        ] = False,
        metric: Annotated[
            str | None,
            Field(pattern=r"^[A-Za-z_][\w.]*$"),
        ] = None,
        workload: Annotated[
            str | None, Field(description="in its target folder")
        ] = None,
        allow_constant_tuning: Annotated[
            bool, Field(description="numbers-only patch (recorded)")
        ] = False,
        wait_s: WaitS = 40,
        include_plot: IncludePlot = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, RunView]:
        """A/B of a patch vs its base commit in fresh-process ABBA runs:
        KEEP/SAME/DISCARD/INCONCLUSIVE/FAILED. No patch: A/A. After wait_s: status=running."""
        if runs < MIN_RUNS:  # the schema says so too; clients that skip it get this
            raise ToolError(f"runs={runs}: the minimum is {MIN_RUNS} runs per arm (N >= 3)")
        run = engine.prepare_ab(
            target,
            patch=patch,
            base=base,
            runs=runs,
            warmup=warmup,
            backend=backend,
            order=order,
            seed=seed,
            min_effect=min_effect,
            sequential=sequential,
            metric=metric,
            workload=workload,
            allow_constant_tuning=allow_constant_tuning,
        )
        engine.start_ab(run)
        await engine.jobs.wait_started(run.id, wait_s, forward(ctx))
        return _run_answer(engine, run.id, include_plot=include_plot)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def get_run(
        run_id: str,
        wait_s: WaitS = 40,
        detail: bool = False,
        include_plot: IncludePlot = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, RunView]:
        """Wait up to wait_s for an A/B run; answers as run_ab would."""
        check_name(run_id, "run id")
        engine.get_run(run_id)  # unknown ids fail here, naming the id
        if engine.jobs.get(run_id) is not None:
            await engine.jobs.wait(run_id, wait_s, forward(ctx))
        return _run_answer(engine, run_id, detail=detail, include_plot=include_plot)

    @mcp.tool(annotations=STOPS)
    @tool_errors
    async def cancel_run(
        run_id: Annotated[str, Field(description="run, profile or build id")],
    ) -> Annotated[CallToolResult, views.CancelResult]:
        """Stop a run, profile or build and tear down what it started; samples are kept."""
        record = await engine.cancel(check_name(run_id, "run id"))
        return _typed(views.CancelResult(
            run_id=record.id, kind=record.kind, status=record.status, message=record.error or ""
        ))

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        )
    )
    @tool_errors
    async def record_experiment(
        run_id: str,
        exp_id: Annotated[
            str,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
            ),
        ],
        description: Annotated[str | None, Field(min_length=1, max_length=500)] = None,
        hypothesis: Annotated[str | None, Field(min_length=1, max_length=5000)] = None,
        evidence: Annotated[
            str | None,
            Field(
                max_length=20000,
            ),
        ] = None,
        output_type: OutputType = "pr",
        profile: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
            ),
        ] = None,
        tag: Annotated[
            str,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=32,
            ),
        ] = "exp",
        addendum: Annotated[str | None, Field(min_length=1, max_length=20000)] = None,
    ) -> Annotated[CallToolResult, views.RecordView]:
        """Record a finished run in results/<target>/<env>/<exp_id>/ and results.tsv; KEEP
        moves the frontier. addendum: append to that README (same run_id)."""
        written = engine.record(
            check_name(run_id, "run id"),
            exp_id=exp_id,
            description=description,
            hypothesis=hypothesis,
            evidence=evidence,
            output_type=output_type,
            tag=tag,
            profile=profile,
            addendum=addendum,
        )
        return _plain(views.record_text(written), views.RecordView.of(written))

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def experiment_status(
        target: TargetName,
        env: Env = "local",
    ) -> Annotated[CallToolResult, views.StatusView]:
        """Resume: frontier, candidates, last results, profiles, interrupted runs."""
        status = engine.status(target, env)
        return _plain(views.status_text(status), views.StatusView.of(status))

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        )
    )
    @tool_errors
    async def record_candidate(
        target: TargetName,
        title: Annotated[str, Field(min_length=1, max_length=200)],
        evidence: Annotated[
            str,
            Field(
                min_length=1,
            ),
        ],
        root_cause: Annotated[str, Field(min_length=1)],
        fix: Annotated[str, Field(min_length=1)],
        targeted_workload: Annotated[str, Field(min_length=1)],
        env: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")] = "local",
    ) -> dict[str, str]:
        """Append a Phase 2 candidate to candidates.md."""
        engine.spec(target)
        path = append_candidate(
            ws,
            target,
            env,
            title=title,
            evidence=evidence,
            root_cause=root_cause,
            fix=fix,
            targeted_workload=targeted_workload,
        )
        return {"candidates_file": path}

    compact_tools(mcp)
    return mcp


def _run_answer(
    engine: Engine, run_id: str, *, detail: bool = False, include_plot: bool = False
) -> CallToolResult:
    """What run_ab answers for a run: the decision, or the job's progress; a job that
    failed is the tool error it would have been."""
    record = engine.jobs.get(run_id)
    if record is not None and record.status == "failed":
        raise ToolError(record.error or "the run failed")
    run = engine.get_run(run_id)
    still = None
    if run.status in ACTIVE and record is not None and not record.finished:
        still = still_running(record, "get_run", "run_id")
    return run_result(run, still, detail=detail, include_plot=include_plot)


def _typed(info: BaseModel) -> CallToolResult:
    """A small typed answer, its JSON as the text; fields without a value are left out."""
    return _plain(info.model_dump_json(exclude_none=True), info)


async def _off_loop(fn: Callable[[], T], limiter: anyio.CapacityLimiter | None = None) -> T:
    """Run blocking `fn` (git) in a worker thread, so the event loop serves other calls
    meanwhile; searches take their own few threads, so a flood of them cannot take all."""
    return await anyio.to_thread.run_sync(fn, limiter=limiter)


def _plain(text: str, info: BaseModel) -> CallToolResult:
    """Plain text for the model, and the small typed record beside it."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=info.model_dump(mode="json", exclude_none=True),
    )


def _build_view(result: Build) -> views.BuildResult:
    return views.BuildResult(
        build_id=result.id,
        status="done",
        commit=result.commit,
        patch_files=result.patch_files,
        duration_s=result.duration_s,
        progress=f"incremental: {result.incremental}" if result.incremental else None,
    )


def _build_answer(record: JobRecord) -> views.BuildResult:
    still = pending(record, "build", "build_id")
    if still is None:
        return views.BuildResult.model_validate(record.result)
    return views.BuildResult(build_id=record.id, status="running", **still.model_dump())


def _broken_names(ws: Workspace) -> list[str]:
    """Target folders whose name is fine but whose target.md is missing."""
    if not ws.targets_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in ws.targets_dir.iterdir()
        if p.is_dir() and not (p / "target.md").exists() and not p.name.startswith(".")
    )


def _program_md(ws: Workspace, name: str = "program.md") -> Path:
    """The workspace's own copy of a methodology file, else the one installed with autoopt."""
    own = ws.root / name
    return own if own.is_file() else Path(__file__).with_name(name)


def _register_resources(mcp: MCPServer, ws: Workspace) -> None:
    program = _program_md(ws)
    mcp.add_resource(
        FileResource(
            uri="autoopt://program.md",
            name="program.md",
            path=program,
            mime_type="text/markdown",
            description="The methodology: read this first.",
        )
    )
    mcp.add_resource(
        FileResource(
            uri="autoopt://program-reference.md",
            name="program-reference.md",
            path=_program_md(ws, "program-reference.md"),
            mime_type="text/markdown",
            description="The methodology's reference: reading a run_ab report, lessons, layout.",
        )
    )

    def target_file(name: str, filename: str) -> str:
        try:
            folder = ws.target_dir(check_name(name, "target name"))
        except AutooptError as exc:
            raise TargetNotFound(str(exc)) from exc
        path = folder / filename
        if not path.is_file():
            raise TargetNotFound(f"target {name} has no {filename}")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # never a huge file whole
        if len(data) > MAX_BYTES:
            raise TargetNotFound(f"targets/{name}/{filename} is over {MAX_BYTES // 1024} KiB")
        return data.decode("utf-8", "replace")

    @mcp.resource("autoopt://targets/{name}/target.md", mime_type="text/markdown")
    def target_md(name: str) -> str:
        """A target's definition: source, metric, workload, scope, constraints."""
        return target_file(name, "target.md")

    @mcp.resource(
        "autoopt://results/{target}/{env}/results.tsv", mime_type="text/tab-separated-values"
    )
    def results_tsv(target: str, env: str) -> str:
        """One row per experiment, failures included (the seed's columns + statistics)."""
        path = ws.results_for(target, env) / "results.tsv"
        if not path.is_file():
            raise TargetNotFound(f"no results.tsv for {target}/{env} yet")
        return path.read_text(encoding="utf-8")

    @mcp.resource("autoopt://results/{target}/{env}/{exp_id}/README.md", mime_type="text/markdown")
    def experiment_readme(target: str, env: str, exp_id: str) -> str:
        """An experiment's README: hypothesis, reproduction, values, decision."""
        path = ws.results_for(target, env) / check_name(exp_id, "exp_id") / "README.md"
        if not path.is_file():
            raise TargetNotFound(f"no experiment {exp_id} for {target}/{env}")
        return path.read_text(encoding="utf-8")

    def run_file(run_id: str, name: str) -> Path:
        path = ws.state_dir / "runs" / check_name(run_id, "run id") / name
        if not path.is_file():
            raise TargetNotFound(f"no {name} for run {run_id} in this workspace")
        return path

    @mcp.resource("autoopt://runs/{run_id}/run.json", mime_type="application/json")
    def run_json(run_id: str) -> str:
        """An A/B run in full: every sample, every metric's statistics, the commands."""
        return run_file(run_id, "run.json").read_text(encoding="utf-8")

    @mcp.resource("autoopt://runs/{run_id}/plot.png", mime_type="image/png")
    def run_plot(run_id: str) -> bytes:
        """The picture of an A/B run (once it has a decision): each arm's values in order."""
        return run_file(run_id, "plot.png").read_bytes()

    @mcp.resource("autoopt://targets/{name}/hints.md", mime_type="text/markdown")
    def hints_md(name: str) -> str:
        """Domain hints for a target."""
        return target_file(name, "hints.md")


def _register_prompts(mcp: MCPServer) -> None:
    @mcp.prompt()
    def optimize(target: str, metric: str = "") -> str:
        """Start the profile-first optimization loop on a target."""
        chosen = f" with primary metric {metric}" if metric else " with its primary metric"
        return (
            f"Optimize the target '{target}'{chosen}, following autoopt://program.md.\n"
            f"1. Read autoopt://program.md, autoopt://targets/{target}/target.md and "
            f"autoopt://targets/{target}/hints.md; autoopt://program-reference.md explains "
            "run_ab's report and the seed's lessons when you need them.\n"
            f"2. Call experiment_status(target='{target}', env='local') to resume, or start "
            "with a baseline.\n"
            "3. Profile (profile_memory / profile_cpu) before reading code; read only the code "
            "the profile points at (read_source, search_source).\n"
            "4. For each candidate: write a code-level patch, run_ab it (runs >= 5), and "
            "record_experiment whatever the decision.\n"
            "Never tune constants; stay inside the editable scope; report the interval, not "
            "only the point estimate."
        )
