"""targets/datafusion through MCP at a small size: datafusion-python 55's binary wheel from
the package index (`dist: wheel`), built (its dependencies installed once into the cache,
the Parquet file written), run as a batch program whose GROUP BY spills (spilled_bytes from
DataFusion's own plan metrics, > 0), and profiled with memray's native frames. Skips when
the package index cannot be reached (the wheel and pyarrow come from it)."""

from __future__ import annotations

import pytest
from mcp import Client

from autoopt.tools import network
from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = pytest.mark.anyio

ROWS = "200000"  # 100K groups; a 4 MiB pool makes the aggregate spill, in seconds


async def ok(client: Client, tool: str, args: dict) -> dict:
    result = await call_done(client, tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def small(workspace: Workspace) -> None:
    md = workspace.targets_dir / "datafusion" / "target.md"
    text = md.read_text().replace("10000000", ROWS).replace("--pool-mb 100", "--pool-mb 4")
    md.write_text(text)


async def test_datafusion_is_ready_on_local_and_honest_about_docker(client: Client) -> None:
    result = await client.call_tool("list_targets", {})
    target = {t["name"]: t for t in result.structured_content["targets"]}["datafusion"]
    assert target["valid"], target
    assert target["readiness"]["local"] == "ready", target["readiness"]
    hosts = ["github.com", "static.crates.io", "index.crates.io"]
    if blocked := network.first_unreachable(hosts):
        assert blocked in target["readiness"]["docker"], target["readiness"]


@pytest.mark.timeout(900)
async def test_small_spill_runs_and_profiles_through_mcp(
        client: Client, workspace: Workspace) -> None:
    small(workspace)
    built = await call_done(client, "build", {"target": "datafusion"})
    if built.is_error and "cannot fetch" in built.content[0].text:
        pytest.skip(f"the package index is not reachable: {built.content[0].text[:300]}")
    assert not built.is_error, built.content[0].text
    build_id = built.structured_content["build_id"]
    dep = await ok(client, "deploy", {"build_id": build_id})
    run = await ok(client, "run_workload", {"deployment_id": dep["deployment_id"]})
    await client.call_tool("teardown", {"deployment_id": dep["deployment_id"]})
    m = run["metrics"]
    assert run["exit_code"] == 0, run
    assert m["spilled_bytes"] > 0 and m["spill_count"] > 0, m
    assert 0 < m["spilled_rows"] <= int(ROWS), m
    assert m["groups"] == int(ROWS) // 2 and m["peak_rss_mb"] > 50 and m["wall_s"] > 0, m
    assert any(line.startswith(f"check: groups {int(ROWS) // 2} rows {ROWS} ")
               for line in run["output"]), run["output"]

    profile = await full_view(client, await call_done(client, "profile_memory", {
        "target": "datafusion", "label": "native", "tool": "memray-native"}))
    assert profile["total"] > 1 << 20, profile["notes"]
    frames = " ".join(" ".join(p["frames"]) for p in profile["top_paths"])
    assert "datafusion" in frames, frames


async def test_kubernetes_says_batch_first(client: Client) -> None:
    """A batch target on kubernetes: the reason that holds whatever the cluster's state."""
    result = await client.call_tool("list_targets", {})
    target = {t["name"]: t for t in result.structured_content["targets"]}["datafusion"]
    assert "runs services only" in target["readiness"]["kubernetes"], target["readiness"]
