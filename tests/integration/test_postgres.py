"""targets/postgres: ready on local, and a smoke test of its build-cache path and workload.

The workspace (and so the fetched Debian source and the build-cache slots) lives in
/var/cache/autoopt/postgres-suite, kept across runs, so the clean build is paid on a fresh
machine only and later runs rebuild in seconds; not under ~/.cache: the server runs as the
postgres user, which cannot traverse /root. Skips only where the
Debian source or the compiler is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.tools.engine import Engine
from autoopt.tools.errors import TargetSpecError
from autoopt.tools.workspace import Workspace
from tests.conftest import REPO

pytestmark = pytest.mark.anyio

# A one-line code change in src/backend (a cheap file to recompile).
PATCH = "".join(
    line + "\n"
    for line in [
        "--- a/src/backend/utils/adt/bool.c",
        "+++ b/src/backend/utils/adt/bool.c",
        "@@ -293,7 +293,7 @@",
        " Datum",
        " booland_statefunc(PG_FUNCTION_ARGS)",
        " {",
        "-\tPG_RETURN_BOOL(PG_GETARG_BOOL(0) && PG_GETARG_BOOL(1));",
        "+\tPG_RETURN_BOOL(PG_GETARG_BOOL(0) ? PG_GETARG_BOOL(1) : false);",
        " }",
        " ",
        " /*",
    ]
)


def suite_workspace() -> Workspace:
    """A workspace kept across test runs, with this checkout's postgres target files."""
    root = Path("/var/cache/autoopt/postgres-suite")
    target = root / "targets" / "postgres"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(REPO / "targets" / "postgres", target)
    shutil.copy2(REPO / "program.md", root / "program.md")
    return Workspace(root)


async def test_postgres_is_ready_on_local(workspace: Workspace) -> None:
    async with Client(create_server(workspace)) as client:
        result = await client.call_tool("list_targets", {})
    targets = {t["name"]: t for t in result.structured_content["targets"]}
    assert targets["postgres"]["readiness"]["local"] == "ready", targets["postgres"]


@pytest.mark.timeout(1800)  # the clean build on a fresh machine, when others build too
@pytest.mark.skipif(not (shutil.which("cc") and shutil.which("make")), reason="no C compiler")
async def test_postgres_incremental_build_and_workload() -> None:
    ws = suite_workspace()
    engine = Engine(ws)
    await engine.recover()
    try:
        first = await engine.build("postgres")
    except TargetSpecError as exc:  # no deb-src reachable, no dpkg-source
        pytest.skip(f"the Debian source of postgresql-15 is not available here: {exc}")
    assert first.incremental and first.incremental.startswith("slot-")
    await engine.discard_build(first.id)

    patched = await engine.build("postgres", patch=PATCH)
    assert patched.tree == first.tree, "the same base re-uses its slot"
    assert patched.incremental == f"{Path(first.tree).parent.name}, reused from {first.commit[:12]}"
    assert patched.duration_s < 90, f"an incremental rebuild took {patched.duration_s} s"
    deployment = await engine.deploy(patched.id)
    try:
        result = await engine.run_workload(deployment.id)
    finally:
        await engine.teardown(deployment.id)
        await engine.discard_build(patched.id)
    m = result.metrics
    assert result.exit_code == 0, result.log_tail
    assert m["error_rate"] == 0 and m["queries"] == 4 * 23
    assert m["temp_bytes"] > 0, "work_mem = 1MB: the GROUP BY and the sort spill"
    assert m["peak_pss_mb"] > 10 and m["latency_p99_ms"] > 0 and m["throughput_qps"] > 0
    checks = [line for line in result.output if line.startswith("check: ")]
    assert len(checks) == 4 and not any("disagree" in c for c in checks), checks
    assert Path(patched.tree, ".inst", "bin", "postgres").is_file(), "the slot keeps its build"
