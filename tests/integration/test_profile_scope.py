"""Profiles that point at the code the agent may change (issue 18), on real processes and
small targets of our own: the scope view with qualified names, retention, heap against
RSS, and diff_profiles when the peak moved."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = pytest.mark.anyio

TARGET_MD = """# Target: {name}

## Source
repo: local
branch: main
path: targets/{name}/src

## Primary Metric
name: peak_rss_mb
direction: lower
unit: MiB

## Workload
description: one run of work.py

## Scope
editable:
  - lib.py

## Local
kind: batch
build: python3 -m py_compile lib.py
workload: python3 {{target_dir}}/work.py
"""

WORK_PY = """import os
import sys

sys.path.insert(0, os.getcwd())
import lib  # noqa: E402

print("items=%d" % lib.main())
"""

# The peak is reached inside json (the standard library), called from a method.
DECODE = '''import json


def payload(n):
    return "[" + ",".join('{"id": %d, "tags": [1, 2, 3]}' % i for i in range(n)) + "]"


class Catalog:
    def load(self, text):
        return json.loads(text)


def main():
    return len(Catalog().load(payload(150000)))
'''

# A handler that keeps every parsed item alive in a list attribute.
KEEP = '''import time


class Handler:
    def __init__(self):
        self.stack = []

    def start(self, n):
        for i in range(n):
            self.stack.append({"id": i, "name": "item-%d" % i})


HANDLER = Handler()


def main():
    HANDLER.start(200000)
    time.sleep(0.3)
    return len(HANDLER.stack)
'''

# A transient peak, early in the run; the patch moves it to the end.
MOVES = '''import time


def build(n):
    return [str(i) * 10 for i in range(n)]


def main():
    n = len(build(300000))
    time.sleep(1.5)
    return n
'''


def target(workspace: Workspace, name: str, lib: str) -> Path:
    folder = workspace.targets_dir / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "lib.py").write_text(lib)
    (folder / "work.py").write_text(WORK_PY)
    (folder / "target.md").write_text(TARGET_MD.format(name=name))
    return folder


async def profile(client: Client, **args: object) -> tuple[str, dict]:
    result = await call_done(client, "profile_memory", args)
    assert not result.is_error, result.content[0].text
    return result.content[0].text, await full_view(client, result)


async def test_scope_view_names_the_editable_method_and_its_class_first(
        client: Client, workspace: Workspace) -> None:
    target(workspace, "decode", DECODE)
    text, full = await profile(client, target="decode", label="scope")
    assert full["tool"] == "memray" and "own allocation site" in full["mode"], full["mode"]
    lines = text.splitlines()
    head = lines.index(next(ln for ln in lines if ln.startswith("By the code you may change")))
    first = lines[head + 1]
    assert first.startswith("#1 ") and "Catalog.load (lib.py:" in first, text
    assert "→ json." in first, first  # the standard-library callee it spends in
    assert full["scope"][0]["function"].startswith("Catalog.load (lib.py:")
    assert full["scope"][0]["pct"] > 50, full["scope"]
    # qualified names and package-relative paths in the stacks too
    leaves = " ".join(" ".join(p["frames"]) for p in full["top_paths"])
    assert "Catalog.load (lib.py:" in leaves and "(json/" in leaves, full["table"]
    stacks = Path(full["files"]["stacks"]).read_text()
    assert stacks.index("by the code you may change") < stacks.index("#1 "), stacks[:800]
    # heap against RSS, from the same run
    heap = next(ln for ln in lines if ln.startswith("Heap vs RSS: "))
    assert "heap peak" in heap and "VmHWM" in heap and "gap" in heap, heap
    assert full["peak"]["heap_bytes"] > 5 * 2**20 and full["memory"]["vm_hwm_mb"] > 0
    assert full["peak"]["t_s"] is not None and full["peak"]["span_s"] >= full["peak"]["t_s"]
    assert text.count("Growth: heap over the run") == 1, text


async def test_retention_shows_the_container_and_its_owner(
        client: Client, workspace: Workspace) -> None:
    target(workspace, "keep", KEEP)
    text, full = await profile(client, target="keep", label="held", tool="retention")
    assert full["tool"] == "retention" and full["complete"], full
    top = full["scope"][0]
    assert "HANDLER (Handler).stack (list) holds 200000 dict" in top["text"], text
    assert top["pct"] > 60, full["scope"]
    assert "What keeps the memory alive" in text and "lib.HANDLER" in text, text
    assert any("largest live objects by type" in n and "dict" in n for n in full["notes"])
    assert full["growth"] and "RSS over the run" in full["growth"]
    assert "heap peak" in full["heap_vs_rss"] and "VmHWM" in full["heap_vs_rss"]
    folder = workspace.results_dir / "keep" / "local" / "profiles"
    assert not list(folder.glob("*.tmp")) and not list(folder.glob("*.status"))


async def test_diff_says_when_the_peak_moved(client: Client, workspace: Workspace) -> None:
    target(workspace, "moves", MOVES)
    late = MOVES.replace("    n = len(build(300000))\n    time.sleep(1.5)\n",
                         "    time.sleep(1.5)\n    n = len(build(300000))\n")
    patch = "".join(difflib.unified_diff(MOVES.splitlines(True), late.splitlines(True),
                                         "a/lib.py", "b/lib.py"))
    _, early = await profile(client, target="moves", label="early")
    _, later = await profile(client, target="moves", label="late", patch=patch)
    assert later["peak"]["t_s"] > early["peak"]["t_s"] + 1.0, (early["peak"], later["peak"])
    result = await client.call_tool("diff_profiles", {"target": "moves", "before": "early",
                                                      "after": "late"})
    assert not result.is_error, result.content[0].text
    warnings = result.structured_content["warnings"]
    assert any(w.startswith("the peak moved: before at ") for w in warnings), warnings
    assert "Warning: the peak moved" in result.content[0].text


SPIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double spin(long n) {
    double t = 0;
    for (long i = 0; i < n; i++) t += i * 0.5;
    return t;
}

int main(void) {
    char *p = malloc(32u << 20);
    memset(p, 1, 32u << 20);
    printf("t=%f\n", spin(300000000L) + p[7]);
    free(p);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("perf") is None
                    or shutil.which("heaptrack_print") is None,
                    reason="needs gcc, perf and heaptrack")
async def test_native_profiles_lead_with_the_editable_function(
        client: Client, workspace: Workspace) -> None:
    folder = workspace.targets_dir / "spinc"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "spin.c").write_text(SPIN_C)
    (folder / "target.md").write_text(
        TARGET_MD.format(name="spinc").replace("lib.py", "spin.c")
        .replace("python3 -m py_compile spin.c", "gcc -g -O0 -o spin spin.c")
        .replace("python3 {target_dir}/work.py", "./spin"))
    cpu = await call_done(client, "profile_cpu", {"target": "spinc", "label": "cpu"})
    assert not cpu.is_error, cpu.content[0].text
    assert cpu.structured_content["scope"][0].split(": ", 1)[1].startswith("spin (spin.c:"), \
        cpu.content[0].text
    _, mem = await profile(client, target="spinc", label="mem")
    assert mem["tool"] == "heaptrack" and mem["scope"][0]["function"].startswith("main (spin.c:")
    assert mem["peak"]["t_s"] is not None and "VmHWM" in mem["heap_vs_rss"]
