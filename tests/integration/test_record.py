"""record_experiment: refusals, concurrent appends, and scripts that replay in a clean shell."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
from autoopt.tools.record import COLUMNS, append_row
from autoopt.tools.workspace import Workspace
from mcp import Client

from tests.conftest import patch_text, processes_under

pytestmark = pytest.mark.anyio


async def test_refusals(client: Client) -> None:
    missing = await client.call_tool(
        "record_experiment", {"exp_id": "e1", "description": "d", "hypothesis": "h"}
    )
    assert missing.is_error and "run_id" in missing.content[0].text
    unknown = await client.call_tool(
        "record_experiment",
        {"run_id": "run-nope", "exp_id": "e1", "description": "d", "hypothesis": "h"},
    )
    assert unknown.is_error and "unknown run" in unknown.content[0].text
    escape = await client.call_tool(
        "record_experiment",
        {"run_id": "run-nope", "exp_id": "../x", "description": "d", "hypothesis": "h"},
    )
    assert escape.is_error and "exp_id" in escape.content[0].text
    tools = {t.name: t for t in (await client.list_tools()).tools}
    props = tools["record_experiment"].input_schema["properties"]
    assert not {"metric_value", "metrics", "values"} & set(props)


def test_concurrent_appends_lose_no_row(tmp_path: Path) -> None:
    tsv = tmp_path / "results.tsv"

    def writer(k: int) -> None:
        for i in range(25):
            append_row(tsv, {"exp_id": f"w{k}-{i}", "status": "keep"})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == COLUMNS
    assert len(lines) == 1 + 8 * 25
    assert len({line.split("\t")[0] for line in lines[1:]}) == 200


async def test_record_and_replay_in_clean_shell(
    client: Client, workspace: Workspace, tmp_path: Path
) -> None:
    result = await client.call_tool(
        "run_ab",
        {
            "target": "pyserver",
            "runs": 3,
            "warmup": 0,
            "patch": patch_text("pyserver-history-cap.patch"),
        },
    )
    report = result.structured_content
    assert report["values"]["B"] and report["verdict"], report
    rec = await client.call_tool(
        "record_experiment",
        {
            "run_id": report["run_id"],
            "exp_id": "exp001",
            "description": "cap history",
            "hypothesis": "deep copies in HISTORY dominate the peak",
        },
    )
    assert not rec.is_error, rec.content[0].text
    record = rec.structured_content
    assert record["frontier_moved"] is (report["verdict"] == "KEEP")
    assert record["branch"] == "autoopt/pyserver/exp-exp001"
    folder = workspace.root / record["directory"]
    for name in (
        "build.sh",
        "deploy.sh",
        "workload.sh",
        "collect.sh",
        "teardown.sh",
        "metrics.log",
        "diff.patch",
        "README.md",
        "reproduce.sh",
    ):
        assert (folder / name).is_file(), name
    rows = (folder.parent / "results.tsv").read_text().splitlines()
    assert rows[1].split("\t")[0] == "exp001"
    assert rows[1].split("\t")[13] == report["verdict"].lower()

    again = await client.call_tool(
        "record_experiment",
        {"run_id": report["run_id"], "exp_id": "exp001", "description": "d", "hypothesis": "h"},
    )
    assert again.is_error and "never overwritten" in again.content[0].text

    # replay: a copy of the record, a minimal environment, no server involved
    replay = tmp_path / "replay"
    subprocess.run(["cp", "-r", str(folder), str(replay)], check=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    out = subprocess.run(
        "./build.sh >/dev/null && ./deploy.sh >/dev/null && ./workload.sh >/dev/null && "
        "./collect.sh && ./teardown.sh >/dev/null",
        shell=True,
        cwd=replay,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    peaks = [
        float(x.split("=")[1]) for x in out.stdout.splitlines() if x.startswith("peak_rss_mb=")
    ]
    assert len(peaks) == 2
    recorded = {
        arm: [v for v in values if v is not None] for arm, values in report["values"].items()
    }
    tolerance = 0.10  # stated: replayed peak within 10% of the recorded median
    for arm, peak in zip(("A", "B"), peaks, strict=True):
        median = sorted(recorded[arm])[len(recorded[arm]) // 2]
        assert abs(peak / median - 1) < tolerance, (arm, peak, recorded[arm])
    assert processes_under(replay) == []
