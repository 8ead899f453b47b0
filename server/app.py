"""The MCP server: a thin adapter from typed tools to the engine in autoopt.tools."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resources import FileResource
from mcp_types import ToolAnnotations
from pydantic import Field

from autoopt.server import views
from autoopt.server.errors import tool_errors
from autoopt.tools.engine import BACKENDS, Engine
from autoopt.tools.errors import AutooptError, TargetNotFound
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

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)
ACTS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                       open_world_hint=False)
STOPS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                        open_world_hint=False)

TargetName = Annotated[str, Field(description="a target folder name, e.g. 'pyserver'",
                                  pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]
Backend = Annotated[str, Field(description="local | docker | kubernetes", pattern=r"^(local|docker|kubernetes)$")]
Patch = Annotated[str | None, Field(description="a unified diff (git diff) against the source "
                                                "root; omit for the unmodified base")]
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
            yield engine
        finally:
            await engine.teardown_all()

    mcp = MCPServer("autoopt", version="0.1.0", instructions=INSTRUCTIONS, lifespan=lifespan)
    mcp.engine = engine  # type: ignore[attr-defined]  # for in-process tests and the demo

    _register_resources(mcp, ws)
    _register_prompts(mcp)

    async def progress_of(ctx: Context | None) -> object:
        count = 0

        async def report(message: str) -> None:
            nonlocal count
            count += 1
            if ctx is not None:
                await ctx.report_progress(count, None, message)

        return report

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def list_targets() -> views.TargetList:
        """Every target in the workspace: its parsed target.md (metric, scope, guardrails,
        workload), whether each backend can run it, and any problem with its files."""
        infos = []
        for name in ws.target_names() + _broken_names(ws):
            try:
                spec = load_target(ws, name)
            except AutooptError as exc:
                infos.append(views.TargetInfo(name=name, valid=False, error=str(exc)))
                continue
            readiness = {}
            for backend in BACKENDS:
                reason = engine.backend(backend, check=False).unavailable_reason()
                readiness[backend] = views.Readiness(available=reason is None, reason=reason)
            infos.append(views.TargetInfo(
                name=name, valid=True, spec=spec, readiness=readiness,
                has_hints=(ws.targets_dir / name / "hints.md").is_file(),
            ))
        return views.TargetList(workspace=str(ws.root), targets=infos)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def build(
        target: TargetName,
        patch: Patch = None,
        base: Base = None,
        backend: Backend = "local",
        allow_constant_tuning: Annotated[bool, Field(
            description="run a patch that only changes numbers anyway (recorded)")] = False,
        ctx: Context | None = None,
    ) -> views.BuildResult:
        """Build the target at a base commit (default: the frontier), optionally with a patch,
        in a fresh worktree. The patch must stay inside the target's editable scope."""
        result = await engine.build(target, patch=patch, base=base, backend=backend,
                                    allow_constant_tuning=allow_constant_tuning,
                                    progress=await progress_of(ctx))  # type: ignore[arg-type]
        return views.BuildResult(build_id=result.id, target=result.target,
                                 backend=result.backend, base=result.base, commit=result.commit,
                                 patch_sha256=result.patch_sha256, patch_files=result.patch_files,
                                 duration_s=result.duration_s, log_tail=result.log_tail)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def deploy(
        build_id: Annotated[str, Field(description="from build")],
    ) -> views.DeployResult:
        """Start a build (a service: on a free port, health-checked; a batch program: its
        tree is prepared). Tear it down with teardown when done."""
        d = await engine.deploy(check_name(build_id, "build id"))
        return views.DeployResult(deployment_id=d.id, build_id=d.build_id, kind=d.kind,
                                  endpoint=d.endpoint, pid=d.pid)

    @mcp.tool(annotations=ACTS)
    @tool_errors
    async def run_workload(
        deployment_id: Annotated[str, Field(description="from deploy")],
        workload: Annotated[str | None, Field(
            description="a targeted workload file in the target's folder, e.g. "
                        "'workload-ingest.sh'; omit for the target's own workload")] = None,
    ) -> views.WorkloadRun:
        """Run the workload against a deployment once; returns its key=value metrics."""
        r = await engine.run_workload(check_name(deployment_id, "deployment id"), workload)
        return views.WorkloadRun(deployment_id=deployment_id, metrics=r.metrics,
                                 exit_code=r.exit_code, duration_s=r.duration_s,
                                 log_tail=r.log_tail)

    @mcp.tool(annotations=STOPS)
    @tool_errors
    async def teardown(
        deployment_id: Annotated[str, Field(description="from deploy")],
    ) -> views.TeardownResult:
        """Stop a deployment and remove what it started."""
        await engine.teardown(check_name(deployment_id, "deployment id"))
        return views.TeardownResult(deployment_id=deployment_id, torn_down=True)

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
        return views.SourceText(target=target, path=path, revision=source.resolve(revision),
                                start_line=start_line, end_line=min(end, total),
                                total_lines=total, text=text)

    @mcp.tool(annotations=READ_ONLY)
    @tool_errors
    async def search_source(
        target: TargetName,
        pattern: Annotated[str, Field(description="an extended regular expression",
                                      min_length=1, max_length=500)],
        glob: Annotated[str | None, Field(description="limit to paths, e.g. '*.py'")] = None,
        revision: Base = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
    ) -> views.SourceMatches:
        """Search the target's source (git grep) at a revision; path:line:text per match."""
        spec = engine.spec(target)
        source = engine.source(spec)
        hits = source.search(pattern, glob, revision, limit + 1)
        return views.SourceMatches(target=target, revision=source.resolve(revision),
                                   pattern=pattern, matches=hits[:limit],
                                   truncated=len(hits) > limit)

    return mcp


def _broken_names(ws: Workspace) -> list[str]:
    """Target folders whose name is fine but whose target.md is missing."""
    if not ws.targets_dir.is_dir():
        return []
    return sorted(p.name for p in ws.targets_dir.iterdir()
                  if p.is_dir() and not (p / "target.md").exists() and not p.name.startswith("."))


def _register_resources(mcp: MCPServer, ws: Workspace) -> None:
    program = ws.root / "program.md"
    mcp.add_resource(FileResource(uri="autoopt://program.md", name="program.md",
                                  path=program, mime_type="text/markdown",
                                  description="The methodology: read this first."))

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
