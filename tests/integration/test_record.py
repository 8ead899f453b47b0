"""record_experiment: refusals, concurrent appends, and scripts that replay in a clean shell."""

from __future__ import annotations

import os
import shutil
import stat
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.record import COLUMNS, append_row
from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, processes_under

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


async def test_record_refuses_to_overwrite(client: Client, workspace: Workspace) -> None:
    result = await call_done(client, "run_ab", {"target": "pyserver", "runs": 3, "warmup": 0})
    run_id = result.structured_content["run_id"]
    args = {"run_id": run_id, "description": "A/A", "hypothesis": "noise floor"}
    first = await client.call_tool("record_experiment", {**args, "exp_id": "baseline"})
    assert not first.is_error, first.content[0].text
    record = first.structured_content
    assert not record["frontier_moved"]
    readme = workspace.root / record["directory"] / "README.md"
    assert readme.is_file() and stat.S_IMODE(readme.stat().st_mode) == 0o644
    assert not (workspace.root / record["directory"] / "diff.patch").exists()  # no patch
    assert "results.tsv: " in first.content[0].text
    tsv = workspace.root / record["directory"] / ".." / "results.tsv"
    rows = tsv.read_text()
    again = await client.call_tool("record_experiment", {**args, "exp_id": "baseline"})
    assert not again.is_error and "already recorded" in again.content[0].text  # a retry
    assert again.structured_content == record and tsv.read_text() == rows
    twice = await client.call_tool("record_experiment", {**args, "exp_id": "baseline-2"})
    assert twice.is_error and "already recorded as baseline" in twice.content[0].text
    assert not (workspace.root / record["directory"] / ".." / "baseline-2").exists()
    row = dict(zip(rows.splitlines()[0].split("\t"), rows.splitlines()[1].split("\t"),
                   strict=True))
    view = result.structured_content
    assert row["n_a"] == row["n_b"] == "3" and row["status"] == view["verdict"].lower()
    assert row["delta_vs_parent"] == row["delta_vs_baseline"] != "-"
    assert row["stopped"] == "3 runs per arm"
    added = await client.call_tool("record_experiment", {
        "run_id": run_id, "exp_id": "baseline", "addendum": "later: the profile diff"})
    assert not added.is_error, added.content[0].text
    assert "addendum appended" in added.content[0].text
    assert tsv.read_text() == rows  # the numbers are never rewritten
    text = readme.read_text()
    assert "## Addendum (" in text and text.rstrip().endswith("later: the profile diff")
    other = workspace.state("runs", "run-other") / "run.json"  # another run, as run_ab left it
    other.write_text(workspace.state("runs", run_id).joinpath("run.json").read_text().replace(
        run_id, "run-other"))
    taken = await client.call_tool("record_experiment", {**args, "run_id": "run-other",
                                                         "exp_id": "baseline"})
    assert taken.is_error and "never overwritten" in taken.content[0].text
    no_hypothesis = await client.call_tool(
        "record_experiment", {"run_id": "run-other", "exp_id": "other", "description": "d"})
    assert no_hypothesis.is_error and "hypothesis" in no_hypothesis.content[0].text
    assert tsv.read_text() == rows
    status = await client.call_tool("experiment_status", {"target": "pyserver"})
    assert status.structured_content["experiments"] == ["baseline"]
    assert "results.tsv (last rows):" in status.content[0].text
    readme = await client.read_resource("autoopt://results/pyserver/local/baseline/README.md")
    assert "noise floor" in readme.contents[0].text


@pytest.mark.slow
def test_demo_then_replay_in_clean_shell(tmp_path: Path) -> None:
    """The main job end to end, then one experiment's scripts replayed with no server."""
    demo = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "autoopt.server.cli", "demo", "--runs", "5", "--workspace",
         str(demo)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| exp001 | peak_rss_mb | KEEP |" in out.stdout
    folder = demo / "results" / "pyserver" / "local" / "exp001"
    for name in ("build.sh", "deploy.sh", "workload.sh", "collect.sh", "teardown.sh",
                 "metrics.log", "diff.patch", "README.md", "reproduce.sh"):
        assert (folder / name).is_file(), name
    tsv = (folder.parent / "results.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in tsv[1:]] == ["baseline", "exp001", "exp002", "exp003"]

    replay = tmp_path / "replay"
    shutil.copytree(folder, replay)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    run = subprocess.run(
        "./build.sh >/dev/null && ./deploy.sh >/dev/null && ./workload.sh >/dev/null && "
        "./collect.sh && ./teardown.sh >/dev/null",
        shell=True, cwd=replay, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    peaks = [float(x.split("=")[1]) for x in run.stdout.splitlines()
             if x.startswith("peak_rss_mb=")]
    recorded: dict[str, list[float]] = {"A": [], "B": []}
    for line in (folder / "metrics.log").read_text().splitlines()[1:]:
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if fields["warmup"] == "0" and fields["ok"] == "1":
            recorded[fields["arm"]].append(float(fields["peak_rss_mb"]))
    tolerance = 0.10  # stated: a replayed peak is within 10% of the recorded median
    assert len(peaks) == 2
    for arm, peak in zip(("A", "B"), peaks, strict=True):
        median = statistics.median(recorded[arm])
        assert abs(peak / median - 1) < tolerance, (arm, peak, recorded[arm])
    assert processes_under(replay) == []
    # the profile behind exp001's evidence replays too; its files land in work/logs/profile
    script = (replay / "profile.sh").read_text()
    assert str(demo / "results") not in script
    prof = subprocess.run("./profile.sh", shell=True, cwd=replay, env=env, capture_output=True,
                          text=True, timeout=300)
    assert prof.returncode == 0, prof.stderr[-2000:]
    logs = replay / "work" / "logs" / "profile"
    assert (logs / "baseline-memray.bin").stat().st_size > 0
    assert "_snapshot_store" in (logs / "baseline-memray.csv").read_text()
    assert processes_under(replay) == []
