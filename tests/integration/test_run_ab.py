"""run_ab through an MCP client on pyserver: real interleaved runs, real decisions."""

from __future__ import annotations

import json

import anyio
import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view, patch_text, processes_under

pytestmark = pytest.mark.anyio


async def run_ab(client: Client, **args: object) -> dict:
    """run_ab's answer with the whole run behind it (get_run detail=true)."""
    result = await call_done(client, "run_ab", {"target": "pyserver", **args})
    assert not result.is_error, result.content[0].text
    return await full_view(client, result)


async def test_aa_is_same(client: Client) -> None:
    report = await run_ab(client, runs=5, seed=1)
    # peak RSS is quiet: both one-sided bounds land within ±1% (an output check may hold it)
    assert report["verdict"] in ("SAME", "INCONCLUSIVE"), report["reason"]
    assert report["verdict"] == "SAME" or "output" in report["reason"], report["reason"]
    assert report["commits"]["A"] == report["commits"]["B"] == report["base"]
    assert len(report["values"]["A"]) == len(report["values"]["B"]) == 5


async def test_history_fix_is_keep_with_progress_and_picture(
    client: Client, workspace: Workspace
) -> None:
    messages: list[str] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    result = await call_done(
        client,
        "run_ab",
        {
            "target": "pyserver",
            "runs": 5,
            "seed": 7,
            "patch": patch_text("pyserver-history-cap.patch"),
        },
        progress_callback=progress,
    )
    assert not result.is_error, result.content[0].text
    text = result.content[0].text
    assert len(text) <= 3000 and "KEEP" in text and "95% CI" in text, text
    assert len(result.model_dump_json(by_alias=True, exclude_none=True)) <= 12_000
    assert "Guardrail pass: latency_p99_ms" in text and "Unchanged in every B run" in text
    report = await full_view(client, result)
    assert report["verdict"] == "KEEP", report["reason"]
    assert "peak_rss_mb" in report["reason"]
    assert report["commits"]["A"] == report["base"] != report["commits"]["B"]
    # one progress message per run (5 per arm + 1 warmup pair), plus build notes
    assert sum(m.startswith(("run ", "warmup ")) for m in messages) == 12
    assert [c.type for c in result.content] == ["text"]  # the picture only when asked for
    assert processes_under(workspace.root) == []
    # the run is persisted and readable again, with its picture on request
    again = await client.call_tool("get_run", {"run_id": report["run_id"], "include_plot": True})
    assert again.structured_content["verdict"] == "KEEP"
    assert [c.type for c in again.content] == ["text", "image"]
    plot = await client.read_resource(f"autoopt://runs/{report['run_id']}/plot.png")
    assert plot.contents[0].mime_type == "image/png"
    whole = await client.read_resource(f"autoopt://runs/{report['run_id']}/run.json")
    assert json.loads(whole.contents[0].text)["id"] == report["run_id"]


async def test_schedule_is_interleaved_abba(client: Client, workspace: Workspace) -> None:
    report = await run_ab(client, runs=4, warmup=0, seed=3)
    run = json.loads((workspace.state_dir / "runs" / report["run_id"] / "run.json").read_text())
    arms = "".join(slot["arm"] for slot in run["schedule"])
    assert arms in {"ABBAABBA", "ABBABAAB", "BAABABBA", "BAABBAAB"}
    assert run["seed"] == 3


async def test_broken_patch_fails_and_leaves_nothing(
    client: Client, workspace: Workspace
) -> None:
    from tests.integration.test_local_backend import _prepend_patch

    server = (workspace.targets_dir / "pyserver/src/server.py").read_text()
    crash = _prepend_patch(server, "raise SystemExit('broken on purpose')")
    target_md = workspace.targets_dir / "pyserver/target.md"  # without its tests, which
    text = target_md.read_text()  # would catch the crash first (DISCARD: tests failed on B)
    target_md.write_text(text.replace("tests: python3 -m unittest -q test_server\n", ""))
    report = await run_ab(client, runs=3, warmup=0, patch=crash)
    assert report["status"] == "done" and report["verdict"] == "FAILED", report["reason"]
    assert "B (the patched build) has no usable" in report["reason"]
    assert "first error" in report["reason"]
    assert report["failed"]["B"] >= 2
    assert processes_under(workspace.root) == []


async def test_cancel_tears_down_and_keeps_partial_run(
    client: Client, workspace: Workspace
) -> None:
    with anyio.move_on_after(9):
        await client.call_tool("run_ab", {"target": "pyserver", "runs": 10, "warmup": 0})
    await anyio.sleep(1.0)
    assert processes_under(workspace.root) == []
    runs = list((workspace.state_dir / "runs").glob("*/run.json"))
    assert len(runs) == 1
    run = json.loads(runs[0].read_text())
    assert run["status"] == "cancelled"
    assert 0 < len(run["samples"]) < 20
    status = await client.call_tool("experiment_status", {"target": "pyserver"})
    assert status.structured_content["interrupted_runs"][0]["status"] == "cancelled"


async def test_sequential_stops_at_the_first_decisive_look(client: Client,
                                                           workspace: Workspace) -> None:
    report = await run_ab(client, runs=10, sequential=True, seed=5,
                          patch=patch_text("pyserver-history-cap.patch"))
    run = json.loads((workspace.state_dir / "runs" / report["run_id"] / "run.json").read_text())
    assert run["looks"] == [5, 10]
    decision = report["report"]["decision"]
    assert report["verdict"] == "KEEP", report["reason"]
    from autoopt.tools.stats import sequential_boundaries

    boundaries = sequential_boundaries([5, 10])
    assert boundaries[0] < boundaries[1] < 0.05  # O'Brien-Fleming spends little early
    look = decision["look"]
    assert look in (5, 10)
    assert decision["one_sided_alpha"] == pytest.approx(boundaries[[5, 10].index(look)])
    counted = len([s for s in run["samples"] if not s["warmup"]])
    assert counted == 2 * look, "the run stops at the decisive look"
    if look == 5:  # the answer says where it stopped, never the planned 10
        text = (await client.call_tool("get_run", {"run_id": report["run_id"]})).content[0].text
        assert "5 runs per arm, stopped at look 1 of 2" in text, text
