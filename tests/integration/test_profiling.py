"""profile_memory / profile_cpu / diff_profiles through an in-process MCP client, on real
processes: pyserver under memray and py-spy, a C program under heaptrack, a target that
dies mid-profile."""

from __future__ import annotations

import base64
import difflib
import json
import shutil
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view, patch_text, processes_under

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024

PEAK_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A transient 64 MiB buffer while an 8 MiB one is held: the heap peaks at 72 MiB. */
static long make_buffer(size_t n) {
    char *p = malloc(n);
    if (!p) return -1;
    memset(p, 1, n);
    long sum = p[n / 2];
    free(p);
    return sum;
}

static char *small_buffer(size_t n) {
    char *p = malloc(n);
    memset(p, 2, n);
    return p;
}

int main(int argc, char **argv) {
    char *keep = small_buffer(8u << 20);
    long sum = make_buffer(64u << 20) + keep[1];
    if (argc > 1) abort();  /* crash after the peak */
    free(keep);
    printf("checksum=%ld\n", sum);
    return 0;
}
"""

PEAK_TARGET_MD = """# Target: {name}

## Source
repo: local
branch: main
path: targets/{name}/src

## Build
build_timeout: 60

## Primary Metric
name: peak_rss_mb
direction: lower
unit: MB

## Workload
description: one run of the program (it is the measured process)

## Scope
editable:
  - peak.c

## Local
kind: batch
build: gcc -g -O0 -o peak peak.c
workload: {workload}
"""


async def call(client: Client, tool: str, **args: object) -> dict:
    """The tool's answer; for a profile, in full (one get_profile call away)."""
    result = await call_done(client, tool, args)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    if tool.startswith("profile_"):
        return await full_view(client, result)
    return result.structured_content


def c_target(workspace: Workspace, name: str, workload: str = "./peak") -> None:
    folder = workspace.targets_dir / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "peak.c").write_text(PEAK_C)
    (folder / "target.md").write_text(PEAK_TARGET_MD.format(name=name, workload=workload))


def frames_text(entry: dict) -> str:
    return " ".join(entry["frames"])


async def test_memory_peak_names_history_deepcopy_and_the_fix_shrinks_it(
        client: Client, workspace: Workspace) -> None:
    lean = await call_done(client, "profile_memory", {"target": "pyserver", "label": "lean"})
    text = lean.content[0].text
    assert len(text) <= 4000 and [c.type for c in lean.content] == ["text"], text
    lines = text.splitlines()
    scope = lines[lines.index(next(ln for ln in lines if ln.startswith("By the code"))) + 1]
    assert scope.startswith("#1 ") and "_snapshot_store (server.py:" in scope, text
    assert "→ copy.deepcopy" in scope, scope  # the editable function, then what it calls
    first = lines[lines.index("Paths:") + 1]  # '#1 74.4% 33.3 MiB: _deepcopy_dict (copy.py:231) <'
    assert first.startswith("#1 ") and "% " in first and "iB: " in first, first
    assert "_snapshot_store (server.py:" in first, first  # the target's own frame, kept
    base = await call(client, "profile_memory", target="pyserver", label="baseline")
    assert base["tool"] == "memray" and base["unit"] == "bytes" and base["complete"]
    top = base["top_paths"][0]
    assert "_snapshot_store" in frames_text(top) and "deepcopy" in frames_text(top), \
        base["table"]
    assert "handle_process" in frames_text(top)  # the /process endpoint
    assert top["value"] > 5 * MIB and 30 < top["pct"] <= 100
    assert base["top"][0].startswith(f"#1 {top['pct']:.1f}% ")
    assert abs(sum(p["value"] for p in base["top_paths"]) - base["total"]) <= base["total"]
    # the peak itself: VmHWM reset before the workload, smaps_rollup breakdown
    mem = base["memory"]
    assert mem["peak_reset"] and mem["vm_hwm_mb"] >= mem["vm_rss_mb"] > 0
    assert {"Rss", "Pss", "Anonymous", "Swap"} <= set(mem["smaps"])
    # files: the methodology's stacks.txt, folded, speedscope, the picture, memray's own file
    stacks = Path(base["files"]["stacks"])
    assert stacks.name == "baseline-stacks.txt"
    assert stacks.parent == workspace.results_dir / "pyserver" / "local" / "profiles"
    first = stacks.read_text().split("\n#2 ")[0]
    assert "#1 " in first and "_snapshot_store" in first and "% of total" in first
    folded = Path(base["files"]["folded"]).read_text().splitlines()
    assert any("_snapshot_store (server.py:" in line for line in folded)
    scope = json.loads(Path(base["files"]["speedscope"]).read_text())
    assert scope["profiles"][0]["unit"] == "bytes"
    assert sum(scope["profiles"][0]["weights"]) == pytest.approx(base["total"])
    assert Path(base["files"]["memray.bin"]).is_file()
    png = Path(base["flamegraph"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = await client.read_resource(base["resource_uri"])
    assert base64.b64decode(res.contents[0].blob) == png.read_bytes()
    # the commands, for profile.sh: the service under memray, the VmHWM reset, the workload
    shells = [s["shell"] for s in base["journal"]]
    assert all(s["phase"] == "profile" for s in base["journal"])
    assert any("-m memray run" in s and "server.py" in s for s in shells)
    assert any("clear_refs" in s for s in shells) and any("workload.sh" in s for s in shells)
    assert not processes_under(workspace.root), "profiling must tear the service down"

    fixed = await call(client, "profile_memory", target="pyserver", label="history-cap",
                       patch=patch_text("pyserver-history-cap.patch"))
    assert fixed["revision"] != base["revision"]
    lean = await client.call_tool("diff_profiles", {
        "target": "pyserver", "env": "local", "before": "baseline", "after": "history-cap"})
    text = lean.content[0].text
    assert len(text) <= 2500 and "_snapshot_store" in text and "shrunk" in text, text
    assert lean.structured_content["changes"][0].startswith(("shrunk -", "disappeared -"))
    diff = (await call(client, "diff_profiles", target="pyserver", env="local",
                       before="baseline", after="history-cap", detail=True))["full"]
    assert diff["delta_total"] < 0
    copy_path = next(p for p in diff["paths"]
                     if "_snapshot_store" in p["key"] and "deepcopy" in p["key"])
    assert copy_path["delta"] < -5 * MIB and copy_path["change"] in ("shrunk", "disappeared")
    snapshot = next(f for f in diff["functions"] if f["key"] == "_snapshot_store (server.py)")
    assert snapshot["change"] == "shrunk" and snapshot["delta"] < -5 * MIB
    assert "_snapshot_store" in diff["text"]


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("heaptrack_print") is None,
                    reason="needs gcc and heaptrack (apt-get install heaptrack)")
async def test_native_peak_names_the_function_and_its_bytes(
        client: Client, workspace: Workspace) -> None:
    c_target(workspace, "peakc")
    r = await call(client, "profile_memory", target="peakc", label="native")
    assert r["tool"] == "heaptrack" and r["overhead"] == "high"
    by_key = {e["key"]: e for e in r["top_self"]}
    big = by_key["make_buffer (peak.c)"]
    small = by_key["small_buffer (peak.c)"]
    assert big["self_value"] == pytest.approx(64 * MIB, rel=0.05)
    assert small["self_value"] == pytest.approx(8 * MIB, rel=0.05)
    assert r["top_self"][0]["key"] == "make_buffer (peak.c)"
    assert r["total"] == pytest.approx(72 * MIB, rel=0.05)
    assert "main (peak.c:" in frames_text(r["top_paths"][0])
    assert isinstance(r["unsymbolized_frames"], int)
    assert r["memory"]["vm_hwm_mb"] > 64
    assert any("LD_PRELOAD=" in s["shell"] and "./peak" in s["shell"] for s in r["journal"])
    assert any("heaptrack_interpret" in s["shell"] for s in r["journal"])


async def test_cpu_profile_names_the_membership_check(client: Client) -> None:
    result = await call_done(client, "profile_cpu", {"target": "pyserver", "label": "ingest-cpu",
                                                    "workload": "workload-ingest.sh"})
    assert not result.is_error, result.content[0].text
    assert [c.type for c in result.content] == ["text"]  # the picture only when asked for
    text = result.content[0].text
    assert len(text) <= 4000 and "_store_contains" in text and "% " in text, text
    assert "detail=true" in text and "flamegraph.png" in text
    pictured = await client.call_tool("get_profile", {
        "profile_id": result.structured_content["profile_id"], "include_flamegraph": True})
    assert [c.type for c in pictured.content] == ["text", "image"]
    r = await full_view(client, result)
    assert "top functions by self" in r["table"]
    assert r["tool"] == "py-spy" and r["unit"] == "samples" and r["total"] > 20
    top = [e["key"] for e in r["top_self"][:5]]
    assert "_store_contains (server.py)" in top, r["table"]
    assert any("--pid" in s["shell"] and "py-spy" in s["shell"] for s in r["journal"])
    assert Path(r["files"]["speedscope"]).is_file() and Path(r["flamegraph"]).is_file()


async def test_missing_native_profiler_says_which_package(
        client: Client, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoopt.tools.profiling import detect

    c_target(workspace, "peakc")
    real = shutil.which
    monkeypatch.setattr(detect.shutil, "which",
                        lambda name, *a, **k: None if name == "perf" else real(name, *a, **k))
    result = await call_done(client, "profile_cpu", {"target": "peakc"})
    assert result.is_error
    assert "apt-get install -y linux-perf" in result.content[0].text


async def test_service_that_dies_mid_profile_keeps_what_was_captured(
        client: Client, workspace: Workspace) -> None:
    server = (workspace.targets_dir / "pyserver" / "src" / "server.py").read_text()
    anchor = '    run = _count("process_calls")\n'
    assert anchor in server
    dying = server.replace(anchor, anchor + "    if run >= 5:\n        os._exit(3)\n", 1)
    patch = "".join(difflib.unified_diff(server.splitlines(True), dying.splitlines(True),
                                         "a/server.py", "b/server.py"))
    result = await call_done(client, "profile_memory", {"target": "pyserver", "patch": patch,
                                                       "label": "dies"})
    assert result.is_error
    text = result.content[0].text
    assert "exited during the profiled workload" in text and "INCOMPLETE" in text
    folder = workspace.results_dir / "pyserver" / "local" / "profiles"
    saved = json.loads((folder / "dies-profile.json").read_text())
    assert saved["complete"] is False and saved["error"]
    assert saved["stacks"] and saved["total"] > 0  # memray's capture up to the exit
    assert "INCOMPLETE" in (folder / "dies-stacks.txt").read_text()
    assert not processes_under(workspace.root)


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("heaptrack_print") is None,
                    reason="needs gcc and heaptrack")
async def test_native_program_that_crashes_keeps_its_peak_rss(
        client: Client, workspace: Workspace) -> None:
    c_target(workspace, "crashc", workload="./peak crash")
    result = await call_done(client, "profile_memory", {"target": "crashc", "label": "crash"})
    assert result.is_error
    assert "exited with code" in result.content[0].text
    saved = json.loads((workspace.results_dir / "crashc" / "local" / "profiles" /
                        "crash-profile.json").read_text())
    assert saved["complete"] is False and saved["memory"]["vm_hwm_mb"] > 64
    # heaptrack flushes its trace at exit: an abort() loses what it had buffered
    assert saved["total"] > 0 or any("flushes it at exit" in n for n in saved["notes"])


CRASH_PY = """import os


def hold():
    return [bytes(1000) for _ in range(30000)]  # about 30 MB, live when it crashes


def main():
    kept = hold()
    print("items=%d" % len(kept), flush=True)
    os.abort()


main()
"""


async def test_python_batch_that_crashes_keeps_memray_capture(
        client: Client, workspace: Workspace) -> None:
    folder = workspace.targets_dir / "crashpy"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "job.py").write_text(CRASH_PY)
    (folder / "target.md").write_text(
        PEAK_TARGET_MD.format(name="crashpy", workload="python3 job.py")
        .replace("gcc -g -O0 -o peak peak.c", "python3 -m py_compile job.py")
        .replace("peak.c", "job.py"))
    result = await call_done(client, "profile_memory", {"target": "crashpy", "label": "crash"})
    assert result.is_error and "exited with code" in result.content[0].text
    saved = json.loads((workspace.results_dir / "crashpy" / "local" / "profiles" /
                        "crash-profile.json").read_text())
    assert saved["complete"] is False and saved["tool"] == "memray"
    assert saved["total"] > 30_000_000
    stacks = (workspace.results_dir / "crashpy" / "local" / "profiles" / "crash-stacks.txt")
    assert "hold (job.py:" in stacks.read_text().split("\n#2 ")[0]


async def test_attach_to_a_running_deployment(client: Client, workspace: Workspace) -> None:
    build = await call(client, "build", target="pyserver")
    dep = await call(client, "deploy", build_id=build["build_id"])
    cpu = await call(client, "profile_cpu", target="pyserver",
                     deployment_id=dep["deployment_id"], workload="workload-stats.sh",
                     label="attached-cpu")
    assert cpu["tool"] == "py-spy" and cpu["total"] > 0
    assert not any("[build]" in (s["note"] or "") for s in cpu["journal"])  # nothing rebuilt
    mem = await call_done(client, "profile_memory", {
        "target": "pyserver", "deployment_id": dep["deployment_id"],
        "workload": "workload-process.sh", "label": "attached-mem"})
    if mem.is_error:  # memray must be importable by the service's own interpreter
        assert "cannot import memray" in mem.content[0].text or "gdb" in mem.content[0].text
    else:
        r = await full_view(client, mem)
        assert r["tool"] == "memray"
        assert any("attach" in n for n in r["notes"])
    res = await call_done(client, "profile_memory", {
        "target": "pyserver", "tool": "procfs", "deployment_id": dep["deployment_id"],
        "label": "attached-procfs"})
    assert not res.is_error, res.content[0].text
    procfs = await full_view(client, res)
    assert procfs["memory"]["peak_reset"] and procfs["memory"]["vm_hwm_mb"] > 0
    assert procfs["stacks"] == 0
    # the borrowed deployment is still running and still ours to tear down
    await call(client, "teardown", deployment_id=dep["deployment_id"])


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("heaptrack_print") is None,
                    reason="needs gcc and heaptrack")
async def test_heaptrack_traces_the_program_a_batch_script_runs_under_its_wrap(
        client: Client, workspace: Workspace) -> None:
    """A workload script that starts its program as `$AUTOOPT_PROFILE_WRAP ./peak`: heaptrack
    traces that program, not the script; a script that ignores the variable is told so."""
    c_target(workspace, "peaksh", workload="")
    folder = workspace.targets_dir / "peaksh"
    md = folder / "target.md"
    md.write_text(md.read_text().replace("workload: \n", "").replace(
        "## Workload\n", "## Workload\nscript: targets/peaksh/workload.sh\n"))
    (folder / "workload.sh").write_text(
        "#!/usr/bin/env bash\nset -e\necho started\n$AUTOOPT_PROFILE_WRAP ./peak\necho done\n")
    (folder / "plain.sh").write_text("#!/usr/bin/env bash\n./peak\n")
    r = await full_view(client, await call_done(client, "profile_memory", {
        "target": "peaksh", "label": "wrapped", "tool": "heaptrack"}))
    assert r["tool"] == "heaptrack" and r["complete"], r
    by_key = {e["key"]: e for e in r["top_self"]}
    assert by_key["make_buffer (peak.c)"]["self_value"] == pytest.approx(64 * MIB, rel=0.05)
    assert r["total"] == pytest.approx(72 * MIB, rel=0.05)  # the script's bash is not traced
    plain = await full_view(client, await call_done(client, "profile_memory", {
        "target": "peaksh", "label": "plain", "tool": "heaptrack", "workload": "plain.sh"}))
    assert any("$AUTOOPT_PROFILE_WRAP" in n for n in plain["notes"]), plain["notes"]
