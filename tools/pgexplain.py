"""explain_query's work: a PostgreSQL deployment (given, or built with the patch, deployed
and torn down after), then EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of one of its
queries/<name>.sql, or (query 'top') the target's workload and pg_stat_statements' top
statements; the result is stored as a profile (tools/pgplan.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from autoopt.tools import pgplan
from autoopt.tools.backends.base import Build, Deployment
from autoopt.tools.errors import AutooptError, InvalidName, NotFound, WorkloadFailed
from autoopt.tools.profiling import store
from autoopt.tools.workspace import check_name

TOP = "top"  # the query name that means pg_stat_statements' view of the workload
PSQL_TIMEOUT_S = 600


class PlanRun(BaseModel):
    """What an explain_query job produced."""

    label: str
    target: str
    env: str
    query: str
    answer: str
    flags: list[str]
    lines: list[str]
    total_ms: float
    files: dict[str, str]


def psql_binary() -> str:
    versioned = Path("/usr/lib/postgresql/15/bin/psql")
    found = str(versioned) if versioned.exists() else shutil.which("psql")
    if not found:
        raise AutooptError("psql is not installed (apt-get install postgresql-client-15)")
    return found


async def psql_json(port: int, sql: str) -> Any:
    """One statement's single JSON value, over TCP as postgres (the target's trust auth)."""
    argv = [psql_binary(), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
            "-p", str(port), "-U", "postgres", "-d", "postgres", "-f", "-"]
    with anyio.fail_after(PSQL_TIMEOUT_S):
        done = await anyio.run_process(argv, input=sql.encode(), check=False)
    if done.returncode != 0:
        raise WorkloadFailed(
            f"psql failed: {done.stderr.decode(errors='replace').strip()[-500:]}"
        )
    return json.loads(done.stdout.decode() or "null")


def _query_file(tree: str | None, name: str) -> Path:
    folder = Path(tree or "") / "queries"
    path = folder / f"{name}.sql"
    if not tree or not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.sql")) if folder.is_dir() else []
        raise NotFound(f"no query {name!r} in the deployed tree's queries/; known: "
                       f"{', '.join(known) or 'none'} (or '{TOP}': pg_stat_statements)")
    return path


async def explain(
    engine: Any,
    target: str,
    query_name: str,
    *,
    patch: str | None = None,
    base: str | None = None,
    deployment_id: str | None = None,
    label: str | None = None,
    progress: Any = None,
) -> PlanRun:
    """Deploy (unless given one), explain or run the workload, store, tear down."""
    spec = engine.spec(target)
    check_name(query_name, "query name")
    if deployment_id is not None and (patch is not None or base is not None):
        raise InvalidName("give either deployment_id (explain what runs) or patch/base")
    env = "local"
    label = check_name(label or f"plan-{query_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                       "profile label")
    store.check_label_free(engine.workspace, target, env, label, "plan")

    async def say(message: str) -> None:
        if progress is not None:
            await progress(message)

    build: Build | None = None
    started: Deployment | None = None  # the deployment this call made (torn down after)
    dep: Deployment
    if deployment_id is not None:
        dep = engine.get_deployment(check_name(deployment_id, "deployment id"))
        if dep.target != target or dep.backend != "local":
            raise InvalidName(f"deployment {deployment_id} is {dep.target} on {dep.backend}; "
                              f"explain_query needs a local deployment of {target}")
    try:
        if deployment_id is None:
            await say(f"building {target}")
            build = await engine.build(target, patch=patch, base=base, progress=progress)
            await say(f"deploying {target} (data copy and migrations)")
            dep = started = await engine.deploy(build.id)
        assert dep.port is not None
        if query_name == TOP:
            await say("running the workload for pg_stat_statements")
            await psql_json(dep.port, "SELECT to_json(pg_stat_statements_reset())")
            result = await engine.run_workload(dep.id)
            if result.exit_code != 0:
                raise AutooptError(f"the workload failed (exit {result.exit_code}): "
                                   f"{result.log_tail[-300:]}")
            rows = await psql_json(dep.port, pgplan.STATEMENTS_SQL) or []
            folder = Path(dep.tree or "") / "queries"
            names = {pgplan.normalized(p.read_text()): p.stem for p in folder.glob("*.sql")}
            profile = pgplan.statements_profile(rows, names, label=label, target=target,
                                                env=env, workload=spec.workload.script)
            flags: list[str] = []
            lines = list(profile.notes)
            head = (f"{label} top statements of {target}'s workload (pg_stat_statements): "
                    f"{profile.total:.1f} ms in {len(rows)} statements")
            extra: dict[str, str] = {"statements.json": json.dumps(rows, indent=1)}
        else:
            sql = _query_file(dep.tree, query_name).read_text()
            await say(f"EXPLAIN ANALYZE {query_name}")
            raw = await psql_json(
                dep.port, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)\n"
                + sql.strip().rstrip(";") + ";\n")
            plan = pgplan.parse(raw, query_name)
            profile = pgplan.to_profile(plan, label=label, target=target, env=env)
            flags, lines = plan.flags, pgplan.lines(plan)
            head = (f"{label} plan of {query_name}: {plan.execution_ms:.1f} ms execution "
                    f"(planning {plan.planning_ms:.1f} ms), {len(flags)} flags")
            extra = {"plan.json": json.dumps(raw, indent=1)}
        profile.revision = build.commit if build else None
        profile.base = build.base if build else None
        profile.patch_sha256 = build.patch_sha256 if build else None
        files = store.save(engine.workspace, profile, picture=False)
        for what, text in extra.items():
            path = store.file_of(engine.workspace, target, env, label, what)
            path.write_text(text)
            files[what] = str(path)
    finally:
        with anyio.CancelScope(shield=True):
            if started is not None:
                await engine.teardown(started.id)
            if build is not None:
                await engine.discard_build(build.id, "its explain_query finished")
    body = [head, *(f"FLAG {f}" for f in flags), *lines]
    answer = "\n".join(body)
    return PlanRun(label=label, target=target, env=env, query=query_name, answer=answer,
                   flags=flags, lines=lines, total_ms=profile.total, files=files)
