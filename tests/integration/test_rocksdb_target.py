"""targets/rocksdb without its full build (minutes: out of the suite, see
examples/rocksdb_experiment.py): it parses and is ready on local; its workload script and
metric parsing run against Debian's own db_bench (rocksdb-tools 7.8.3, the same version,
at a tiny size) through build/deploy/run_workload and heaptrack; its build path (Debian's
source package, build.sh) compiles one object."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.workload import output_lines, parse_metrics
from autoopt.tools.workspace import Workspace
from tests.conftest import REPO, call_done, full_view
from tests.unit.test_source_kinds import _debian_unreachable

pytestmark = pytest.mark.anyio

WORKLOAD = REPO / "targets" / "rocksdb" / "workload.sh"
DB_BENCH = Path("/usr/bin/db_bench")
NEEDS_DB_BENCH = pytest.mark.skipif(
    not DB_BENCH.exists(), reason="needs Debian's db_bench (apt-get install rocksdb-tools)"
)
METRICS = {f"{p}_{m}" for p in ("fillrandom", "readrandom") for m in ("ops_per_s", "p99_us")}


async def ok(client: Client, tool: str, args: dict) -> dict:
    result = await call_done(client, tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_rocksdb_parses_and_is_ready_on_local(client: Client) -> None:
    result = await client.call_tool("list_targets", {})
    target = {t["name"]: t for t in result.structured_content["targets"]}["rocksdb"]
    assert target["valid"], target
    assert target["readiness"]["local"] == "ready", target["readiness"]


@NEEDS_DB_BENCH
def test_workload_prints_metrics_and_a_deterministic_found_line(tmp_path: Path) -> None:
    def run(seed: str) -> str:
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "AUTOOPT_BLOCK_SEED": seed}
        proc = subprocess.run(["bash", str(WORKLOAD), str(DB_BENCH), "20000", "5000"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    first, again, other = run("0"), run("0"), run("7")
    metrics = parse_metrics(first)
    assert set(metrics) == METRICS and all(v > 0 for v in metrics.values()), first
    lines = output_lines(first)
    assert lines[0] == "entries 20000" and lines[1].startswith("readrandom found "), lines
    assert lines[1].endswith(" of 5000 keys") and len(lines) == 2
    assert output_lines(again) == lines  # what run_ab compares between the arms
    assert output_lines(other) != lines  # another block seed: other keys
    assert not list(tmp_path.iterdir())  # the database is removed


@NEEDS_DB_BENCH
@pytest.mark.skipif(shutil.which("heaptrack_print") is None, reason="needs heaptrack")
async def test_workload_runs_and_profiles_debian_db_bench(
        client: Client, workspace: Workspace) -> None:
    """A copy of the target whose workload.sh runs Debian's db_bench: the metrics reach
    run_workload, and heaptrack traces db_bench through $AUTOOPT_PROFILE_WRAP."""
    folder = workspace.targets_dir / "rocksdb-debian"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "README").write_text("Debian's db_bench, no source\n")
    (folder / "workload.sh").write_text(
        f'#!/usr/bin/env bash\nexec bash {WORKLOAD} {DB_BENCH} 20000 5000\n')
    md = (REPO / "targets" / "rocksdb" / "target.md").read_text()
    md = md.replace("# Target: rocksdb", "# Target: rocksdb-debian")
    local = "repo: local\nbranch: main\npath: targets/rocksdb-debian/src"
    md = md.replace("debian: rocksdb=7.8.3-2", local)
    md = md.replace("build: bash {target_dir}/build.sh\n", "")
    md = md.replace("targets/rocksdb/workload.sh", "targets/rocksdb-debian/workload.sh")
    (folder / "target.md").write_text(md)
    build = await ok(client, "build", {"target": "rocksdb-debian"})
    dep = await ok(client, "deploy", {"build_id": build["build_id"]})
    run = await ok(client, "run_workload", {"deployment_id": dep["deployment_id"]})
    await client.call_tool("teardown", {"deployment_id": dep["deployment_id"]})
    assert run["exit_code"] == 0 and set(run["metrics"]) >= METRICS, run
    assert run["metrics"]["peak_rss_mb"] > 5 and run["metrics"]["wall_s"] > 0
    assert "entries 20000" in run["output"]
    profile = await full_view(client, await call_done(client, "profile_memory", {
        "target": "rocksdb-debian", "label": "heap", "tool": "heaptrack"}))
    assert profile["tool"] == "heaptrack" and profile["total"] > 1 << 20, profile["notes"]
    frames = " ".join(" ".join(p["frames"]) for p in profile["top_paths"])
    assert "rocksdb::" in frames, frames


@pytest.mark.skipif(shutil.which("g++") is None or shutil.which("make") is None,
                    reason="needs g++ and make")
async def test_build_compiles_one_object_of_the_debian_source(
        client: Client, workspace: Workspace) -> None:
    if reason := _debian_unreachable():
        pytest.skip(reason)
    md = workspace.targets_dir / "rocksdb" / "target.md"
    build = "build: bash {target_dir}/build.sh"  # no .d files: not for the ~1000 sources
    md.write_text(md.read_text().replace(f"{build}\n", f"{build} SKIP_DEPENDS=1 memory/arena.o\n"))
    base = await ok(client, "build", {"target": "rocksdb"})
    assert base["status"] == "done", base
    tree = Path(json.loads(
        (workspace.state_dir / "builds" / base["build_id"] / "build.json").read_text())["tree"])
    assert (tree / "memory" / "arena.o").stat().st_size > 10_000
