"""targets/postgres-sql through an in-process MCP client on Debian's real PostgreSQL 15:
explain_query flags the seq scan of a query that lacks an index (and the plan with the
index has none; diff_profiles compares the two stored plans), a run_ab adding that index is
KEEP with identical result fingerprints, and a rewrite that changes a query's result is
DISCARD "behaviour changed".

Small data (PGSQL_SCALE=0.05 in the test copy's build command: 5K customers, 100K orders,
250K items; the snapshot is loaded once per machine in seconds, cached under ~/.cache). The
workspace lives in /var/cache/autoopt/postgres-sql-suite, not in pytest's tmp_path: the
server runs as the postgres user, which cannot traverse pytest's 0700 folders. Skips where
postgresql-15 is not installed (scripts/test.sh installs it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.tools.workspace import Workspace
from tests.conftest import REPO, call_done, full_view, patch_text

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not Path("/usr/lib/postgresql/15/bin/postgres").is_file(),
                       reason="postgresql-15 is not installed"),
    pytest.mark.timeout(900),
]
TARGET = "postgres-sql"
ROOT = Path("/var/cache/autoopt/postgres-sql-suite")


@pytest.fixture
def sql_workspace(monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A kept workspace with this checkout's postgres-sql target, built at scale 0.05."""
    monkeypatch.delenv("AUTOOPT_STATE_DIR", raising=False)
    target = ROOT / "targets" / TARGET
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(ROOT / "results", ignore_errors=True)
    shutil.copytree(REPO / "targets" / TARGET, target)
    spec = target / "target.md"
    text = spec.read_text()
    small = text.replace("build: {target_dir}/build.sh",
                         "build: env PGSQL_SCALE=0.05 {target_dir}/build.sh")
    assert small != text
    spec.write_text(small)
    shutil.copy2(REPO / "program.md", ROOT / "program.md")
    ROOT.chmod(0o755)
    return Workspace(ROOT)


async def explain(client: Client, **args: object) -> tuple[dict, str]:
    result = await call_done(client, "explain_query", {"target": TARGET, **args})
    assert not result.is_error, result.content[0].text
    return result.structured_content, result.content[0].text


async def ab(client: Client, patch: str) -> dict:
    result = await call_done(client, "run_ab", {"target": TARGET, "patch": patch, "runs": 5})
    assert not result.is_error, result.content[0].text
    return await full_view(client, result)


async def test_explain_flags_the_seq_scan_an_index_removes(sql_workspace: Workspace) -> None:
    async with Client(create_server(sql_workspace)) as client:
        before, text = await explain(client, query_name="customer_orders", label="no-index")
        after, _ = await explain(client, query_name="customer_orders", label="index",
                                 patch=patch_text("postgres-sql-orders-customer-index.patch"))
        diff = await client.call_tool("diff_profiles", {"target": TARGET, "before": "no-index",
                                                        "after": "index"})
        top, _ = await explain(client, query_name="top", label="top")
        built = await call_done(client, "build", {"target": TARGET})
        deployed = await client.call_tool("deploy", {"build_id": built.structured_content[
            "build_id"]})
        dep = deployed.structured_content["deployment_id"]
        given, _ = await explain(client, query_name="last_orders", deployment_id=dep)
        alive = await client.call_tool("run_workload", {"deployment_id": dep})
        await client.call_tool("teardown", {"build_id": built.structured_content["build_id"]})
    assert before["status"] == "done" and before["label"] == "no-index"
    assert any("seq scan" in f and "of orders" in f for f in before["flags"]), before
    assert text.splitlines()[1].startswith("FLAG #"), "the flags lead the answer"
    assert any(line.lstrip().startswith("#") and "Seq Scan on orders" in line
               for line in before["plan"]), before["plan"]
    assert not any("seq scan" in f for f in after["flags"]), after["flags"]
    assert any("Index Scan using orders_customer_created" in line for line in after["plan"])
    changes = diff.structured_content["changes"]
    assert any(c.startswith("disappeared") and "Seq Scan on orders" in c for c in changes)
    assert any(c.startswith("appeared") and "orders_customer_created" in c for c in changes)
    stored = sql_workspace.results_for(TARGET, "local") / "profiles"
    assert (stored / "no-index-plan.json").is_file()
    # pg_stat_statements over the workload: each of the five query files, by name
    names = {line.split(":")[0] for line in top["plan"]}
    assert {"customer_orders", "last_orders", "order_lines"} <= names, top["plan"]
    # a given deployment: explained in place, and still serving afterwards
    assert any("seq scan" in f and "loops" in f for f in given["flags"]), given["flags"]
    assert not alive.is_error and alive.structured_content["metrics"]["error_rate"] == 0
    assert not list(ROOT.glob(".autoopt/builds/*/tree")), "every build was removed"


async def test_adding_the_index_is_keep_with_the_same_results(sql_workspace: Workspace) -> None:
    async with Client(create_server(sql_workspace)) as client:
        run = await ab(client, patch_text("postgres-sql-orders-customer-index.patch"))
    assert run["verdict"] == "KEEP", run["reason"]
    assert run["outputs"]["status"] == "same", run["outputs"]


async def test_a_rewrite_that_changes_a_result_is_behaviour_changed(
    sql_workspace: Workspace,
) -> None:
    """customer_by_email without lower(): sargable, but the stored emails are mixed-case,
    so the login finds no one."""
    async with Client(create_server(sql_workspace)) as client:
        run = await ab(client, patch_text("postgres-sql-email-sargable.patch"))
    assert run["verdict"] == "DISCARD", run["reason"]
    assert run["reason"].startswith("behaviour changed"), run["reason"]
    assert "customer_by_email" in run["reason"], run["reason"]
