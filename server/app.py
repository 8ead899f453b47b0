"""The MCP server: a thin adapter from typed tools to the engine in autoopt.tools."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resources import FileResource
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from autoopt.server import profiling_tools, trace_log_tools, views
from autoopt.server.errors import tool_errors
from autoopt.server.jobs_view import StillRunning, WaitS, forward, notes, still_running
from autoopt.server.params import ACTS, READ_ONLY, STOPS, Backend, TargetName
from autoopt.server.tasks import TaskServer, TasksExtension
from autoopt.tools.abrun import MIN_RUNS, ABRun, Order
from autoopt.tools.backends.base import Build
from autoopt.tools.engine import BACKENDS, Engine, new_build_id
from autoopt.tools.errors import AutooptError, TargetNotFound
from autoopt.tools.jobs import JobRecord, Report
from autoopt.tools.record import ExperimentRecord, OutputType
from autoopt.tools.status import ExperimentStatus, append_candidate
from autoopt.tools.targets import load_target
from autoopt.tools.workspace import Workspace, check_name

log = logging.getLogger("autoopt")

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
        description="a unified diff (git diff) against the source "
        "root; omit for the unmodified base"
    ),
]
Base = Annotated[str | None, Field(description="base commit; omit for the target's frontier")]


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
    program = _program_md(ws)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def list_targets() -> views.TargetList:
        """Every target in the workspace: its parsed target.md (metric, scope, guardrails,
        workload), whether each backend can run it, and any problem with its files."""
        infos = []
        for name in sorted(ws.target_names() + _broken_names(ws)):
            if not (ws.targets_dir / name / "target.md").is_file():
                infos.append(
                    views.TargetInfo(
                        name=name,
                        valid=False,
                        error=f"targets/{name}/ has no target.md; add one (see program.md)",
                    )
                )
                continue
            try:
                spec = load_target(ws, name)
            except AutooptError as exc:
                infos.append(views.TargetInfo(name=name, valid=False, error=str(exc)))
                continue
            readiness = {}
            for backend in BACKENDS:
                reason = engine.readiness(spec, backend)
                readiness[backend] = views.Readiness(available=reason is None, reason=reason)
            infos.append(
                views.TargetInfo(
                    name=name,
                    valid=True,
                    spec=spec,
                    readiness=readiness,
                    has_hints=(ws.targets_dir / name / "hints.md").is_file(),
                )
            )
        return views.TargetList(workspace=str(ws.root), program_md=str(program), targets=infos)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def build(
        target: TargetName,
        patch: Patch = None,
        base: Base = None,
        backend: Backend = "local",
        allow_constant_tuning: Annotated[
            bool, Field(description="run a patch that only changes numbers anyway (recorded)")
        ] = False,
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> views.BuildResult:
        """Build the target at a base commit (default: the frontier), optionally with a patch,
        in a fresh worktree. The patch must stay inside the target's editable scope. The
        build outlives this server (any later one can deploy it) until idle for an hour.
        A build still running after wait_s answers status=running: call get_build."""
        spec = engine.spec(target)
        source = engine.source(spec)
        source.resolve(base)
        if patch:
            source.check_patch(patch, allow_constants=allow_constant_tuning)
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
        return _build_answer(record)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def get_build(
        build_id: Annotated[str, Field(description="from build")],
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> views.BuildResult:
        """A build by id, from this or an earlier server: waits up to wait_s for one still
        running, then answers as build would have."""
        check_name(build_id, "build id")
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
        build_id: Annotated[str, Field(description="from build")],
    ) -> views.DeployResult:
        """Start a build (a service: on a free port, health-checked; a batch program: its
        tree is prepared). It outlives this server, so a later session can use it; tear it
        down with teardown when done (else it stops after an hour without use)."""
        d = await engine.deploy(check_name(build_id, "build id"), kept=True)
        return views.DeployResult(
            deployment_id=d.id, build_id=d.build_id, kind=d.kind, endpoint=d.endpoint, pid=d.pid
        )

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def run_workload(
        deployment_id: Annotated[str, Field(description="from deploy")],
        workload: Annotated[
            str | None,
            Field(
                description="a targeted workload file in the target's folder, e.g. "
                "'workload-ingest.sh'; omit for the target's own workload"
            ),
        ] = None,
    ) -> views.WorkloadRun:
        """Run the workload against a deployment once; returns its key=value metrics."""
        r = await engine.run_workload(check_name(deployment_id, "deployment id"), workload)
        return views.WorkloadRun(
            deployment_id=deployment_id,
            metrics=r.metrics,
            exit_code=r.exit_code,
            duration_s=r.duration_s,
            log_tail=r.log_tail,
        )

    @mcp.tool(annotations=STOPS)
    @tool_errors
    async def teardown(
        deployment_id: Annotated[str | None, Field(description="from deploy")] = None,
        build_id: Annotated[
            str | None, Field(description="from build: remove the build (its deployments first)")
        ] = None,
    ) -> views.TeardownResult:
        """Stop a deployment and remove what it started; or remove a build made with build
        (tree and image), stopping its deployments first. Give one of the two ids."""
        if (deployment_id is None) == (build_id is None):
            raise ToolError("give deployment_id (from deploy) or build_id (from build), not both")
        if deployment_id is not None:
            await engine.teardown(check_name(deployment_id, "deployment id"))
            return views.TeardownResult(deployment_id=deployment_id, torn_down=True)
        stopped = await engine.remove_build(check_name(build_id, "build id"))  # type: ignore[arg-type]
        return views.TeardownResult(build_id=build_id, torn_down=True, deployments=stopped)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def read_source(
        target: TargetName,
        path: Annotated[str, Field(description="file path relative to the source root")],
        start_line: Annotated[int, Field(ge=1)] = 1,
        end_line: Annotated[int, Field(ge=1)] = 200,
        revision: Base = None,
    ) -> views.SourceText:
        """Lines of a file in the target's source at a revision (default: the frontier)."""
        spec = engine.spec(target)
        source = engine.source(spec)
        end = min(end_line, start_line + 999)
        text, total = source.read(path, start_line, end, revision)
        return views.SourceText(
            target=target,
            path=path,
            revision=source.resolve(revision),
            start_line=start_line,
            end_line=min(end, total),
            total_lines=total,
            text=text,
        )

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def search_source(
        target: TargetName,
        pattern: Annotated[
            str, Field(description="an extended regular expression", min_length=1, max_length=500)
        ],
        glob: Annotated[str | None, Field(description="limit to paths, e.g. '*.py'")] = None,
        revision: Base = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
    ) -> views.SourceMatches:
        """Search the target's source (git grep) at a revision; path:line:text per match."""
        spec = engine.spec(target)
        source = engine.source(spec)
        hits = source.search(pattern, glob, revision, limit + 1)
        return views.SourceMatches(
            target=target,
            revision=source.resolve(revision),
            pattern=pattern,
            matches=hits[:limit],
            truncated=len(hits) > limit,
        )

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
                description=("runs per arm; the methodology requires N >= 3 (5+ recommended)"),
            ),
        ] = 5,
        warmup: Annotated[int, Field(ge=0, le=10, description="discarded warmup pairs")] = 1,
        backend: Backend = "local",
        order: Annotated[
            Order,
            Field(
                description="abba (randomised ABBA/BAAB blocks), random (within pairs) or alternate"
            ),
        ] = "abba",
        seed: Annotated[int | None, Field(description="schedule seed (recorded)")] = None,
        min_effect: Annotated[
            float | None,
            Field(
                ge=0, description=("minimum worthwhile gain in %; default from target.md, else 1")
            ),
        ] = None,
        sequential: Annotated[
            bool,
            Field(
                description=(
                    "planned looks at 5/10/15/20 runs per arm (O'Brien-Fleming); runs is the cap"
                )
            ),
        ] = False,
        metric: Annotated[
            str | None,
            Field(description="primary metric; default target.md's", pattern=r"^[A-Za-z_][\w.]*$"),
        ] = None,
        workload: Annotated[
            str | None, Field(description=("a targeted workload file in the target's folder"))
        ] = None,
        allow_constant_tuning: Annotated[
            bool, Field(description="run a numeric-literal-only patch anyway (recorded)")
        ] = False,
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, views.RunResult]:
        """A/B benchmark of a patch against its base commit: both arms built from the same
        commit, `runs` fresh-process runs per arm interleaved in randomised ABBA blocks, then
        KEEP / DISCARD / INCONCLUSIVE from a 95% CI of the ratio plus the target's guardrails.
        No patch = an A/A run (the noise floor). The run goes on in the server: still running
        after wait_s, it answers status=running with its progress; get_run waits for the
        decision. Cancelling this call before it answers stops the run (so does cancel_run)."""
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
        return _run_answer(engine, run.id)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def get_run(
        run_id: Annotated[str, Field(description="from run_ab")],
        wait_s: WaitS = 40,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, views.RunResult]:
        """An A/B run by id, from this or an earlier server: waits up to wait_s for one still
        running, then answers as run_ab would have (also for a cancelled or crashed run)."""
        check_name(run_id, "run id")
        engine.get_run(run_id)  # unknown ids fail here, naming the id
        if engine.jobs.get(run_id) is not None:
            await engine.jobs.wait(run_id, wait_s, forward(ctx))
        return _run_answer(engine, run_id)

    @mcp.tool(annotations=STOPS)
    @tool_errors
    async def cancel_run(
        run_id: Annotated[str, Field(description="a run id (run_ab), profile id or build id")],
    ) -> views.CancelResult:
        """Stop a running job (an A/B run, a profile or a build), in this or another server on
        the workspace, and tear down what it started. Samples so far are kept."""
        record = await engine.cancel(check_name(run_id, "run id"))
        return views.CancelResult(
            run_id=record.id, kind=record.kind, status=record.status, message=record.error or ""
        )

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
        run_id: Annotated[str, Field(description="from run_ab; the record is built from it")],
        exp_id: Annotated[
            str,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
                description="a new experiment id, e.g. 'exp001'",
            ),
        ],
        description: Annotated[str, Field(min_length=1, max_length=500)],
        hypothesis: Annotated[str, Field(min_length=1, max_length=5000)],
        evidence: Annotated[
            str | None,
            Field(
                max_length=20000,
                description=("the profile evidence: function, stack, bytes, % of peak"),
            ),
        ] = None,
        output_type: Annotated[
            OutputType,
            Field(
                description=(
                    "pr (a measured fix), issue (a design-level problem), report (a dead end)"
                )
            ),
        ] = "pr",
        profile: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=64,
                description="label of a stored profile (the evidence): adds profile.sh and "
                "its stacks to the record",
            ),
        ] = None,
        tag: Annotated[
            str,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]*$",
                max_length=32,
                description="branch tag: autoopt/<target>/<tag>-<exp_id>",
            ),
        ] = "exp",
    ) -> ExperimentRecord:
        """Write results/<target>/<env>/<exp_id>/ from a finished run — scripts rendered from
        what actually ran, metrics.log, diff.patch, README.md — and append its row to
        results.tsv. There is no way to pass metrics: the server records what it measured.
        A KEEP moves the frontier to the experiment's branch; a DISCARD does not."""
        return engine.record(
            check_name(run_id, "run id"),
            exp_id=exp_id,
            description=description,
            hypothesis=hypothesis,
            evidence=evidence,
            output_type=output_type,
            tag=tag,
            profile=profile,
        )

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def experiment_status(
        target: TargetName,
        env: Annotated[
            str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="local | docker | kubernetes")
        ] = "local",
    ) -> ExperimentStatus:
        """Where the loop stands (resume): frontier, candidates.md, the last results.tsv rows,
        the latest profiles, and runs interrupted by a crash or a cancel."""
        return engine.status(target, env)

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
                description=("profile evidence: function, stack, bytes and % of the total"),
            ),
        ],
        root_cause: Annotated[str, Field(min_length=1)],
        fix: Annotated[str, Field(min_length=1, description="the structural fix (not a constant)")],
        targeted_workload: Annotated[str, Field(min_length=1)],
        env: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")] = "local",
    ) -> dict[str, str]:
        """Append a Phase 2 candidate to results/<target>/<env>/candidates.md."""
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

    return mcp


def _run_answer(engine: Engine, run_id: str) -> CallToolResult:
    """What run_ab answers for a run: the decision, or the job's progress; a job that
    failed is the tool error it would have been."""
    record = engine.jobs.get(run_id)
    if record is not None and record.status == "failed":
        raise ToolError(record.error or "the run failed")
    run = engine.get_run(run_id)
    if run.status == "running" and record is not None and not record.finished:
        return run_result(run, still=still_running(record, "get_run", "run_id"))
    return run_result(run)


def _build_view(result: Build) -> views.BuildResult:
    return views.BuildResult(
        build_id=result.id,
        status="done",
        target=result.target,
        backend=result.backend,
        base=result.base,
        commit=result.commit,
        patch_sha256=result.patch_sha256,
        patch_files=result.patch_files,
        duration_s=result.duration_s,
        log_tail=result.log_tail,
    )


def _build_answer(record: JobRecord) -> views.BuildResult:
    if record.status == "done" and record.result:
        return views.BuildResult.model_validate(record.result)
    if record.finished:
        raise ToolError(f"build {record.id} {record.status}: {record.error}")
    return views.BuildResult(
        build_id=record.id, status="running", target=record.target,
        **still_running(record, "get_build", "build_id").model_dump(),
    )


def run_result(run: ABRun, still: StillRunning | None = None) -> CallToolResult:
    """The structured view, a one-paragraph summary, and the picture when there is one."""
    decision = run.report.decision if run.report else {}
    values: dict[str, list[float | None]] = {"A": [], "B": []}
    for sample in run.samples:
        if not sample.warmup:
            values[sample.arm].append(sample.metrics.get(run.metric) if sample.ok else None)
    view = views.RunResult(
        run_id=run.id,
        target=run.target,
        backend=run.backend,
        status=run.status,
        verdict=decision.get("verdict"),
        reason=decision.get("reason"),  # type: ignore[arg-type]
        seed_rule_keep=decision.get("seed_rule_keep"),  # type: ignore[arg-type]
        warnings=decision.get("warnings", []),  # type: ignore[arg-type]
        base=run.base,
        commits=run.commits,
        patch_sha256=run.patch_sha256,
        patch_files=run.patch_files,
        runs=run.runs,
        warmup=run.warmup,
        order=run.order,
        seed=run.seed,
        metric=run.metric,
        direction=run.direction,
        min_effect_pct=run.min_effect_pct,
        values=values,
        failed={
            a: sum(1 for s in run.samples if s.arm == a and not s.ok and not s.warmup)
            for a in ("A", "B")
        },
        report=run.report.model_dump(mode="json") if run.report else None,
        error=run.error,
        plot=run.plot,
        progress=still.progress if still else None,
        next_call=still.next_call if still else None,
    )
    if still:
        summary = f"{run.id} [running] {still.progress}. Next: {still.next_call}"
    else:
        summary = (
            f"{run.id} [{run.status}] {view.verdict or 'no decision'}: "
            f"{view.reason or run.error or ''}"
        )
    content: list[TextContent | ImageContent] = [
        TextContent(type="text", text=summary),
        TextContent(type="text", text=view.model_dump_json()),
    ]
    if run.plot and Path(run.plot).is_file():
        data = base64.b64encode(Path(run.plot).read_bytes()).decode()
        content.append(ImageContent(type="image", data=data, mime_type="image/png"))
    return CallToolResult(content=content, structured_content=view.model_dump(mode="json"))


def _broken_names(ws: Workspace) -> list[str]:
    """Target folders whose name is fine but whose target.md is missing."""
    if not ws.targets_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in ws.targets_dir.iterdir()
        if p.is_dir() and not (p / "target.md").exists() and not p.name.startswith(".")
    )


def _program_md(ws: Workspace) -> Path:
    """The workspace's own program.md, else the one installed with autoopt."""
    own = ws.root / "program.md"
    return own if own.is_file() else Path(__file__).with_name("program.md")


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

    def target_file(name: str, filename: str) -> str:
        try:
            folder = ws.target_dir(check_name(name, "target name"))
        except AutooptError as exc:
            raise TargetNotFound(str(exc)) from exc
        path = folder / filename
        if not path.is_file():
            raise TargetNotFound(f"target {name} has no {filename}")
        return path.read_text(encoding="utf-8")

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
            f"autoopt://targets/{target}/hints.md.\n"
            f"2. Call experiment_status(target='{target}', env='local') to resume, or start "
            "with a baseline.\n"
            "3. Profile (profile_memory / profile_cpu) before reading code; read only the code "
            "the profile points at (read_source, search_source).\n"
            "4. For each candidate: write a code-level patch, run_ab it (runs >= 5), and "
            "record_experiment whatever the decision.\n"
            "Never tune constants; stay inside the editable scope; report the interval, not "
            "only the point estimate."
        )
