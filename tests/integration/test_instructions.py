"""The `instructions` metric: a batch target that declares it runs under valgrind
--tool=cachegrind on the local backend; the count is near-deterministic run to run and a
patch that halves the work is a KEEP on it."""

from __future__ import annotations

import os
import shutil

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        shutil.which("valgrind") is None and not os.environ.get("CI"),
        reason="needs valgrind (scripts/test.sh installs it; CI runs this test)",
    ),
]

TARGET_MD = """# Target: counted

## Source
repo: local
path: targets/counted/src

## Primary Metric
name: instructions
direction: lower

## Workload
description: a shell loop, counted by cachegrind

## Scope
editable:
  - n.txt

## Correctness
output: none

## Local
kind: batch
workload: sh job.sh
"""

JOB_SH = "read n < n.txt\ni=0\nwhile [ $i -lt $n ]; do i=$((i+1)); done\necho done\n"
PATCH = """--- a/n.txt
+++ b/n.txt
@@ -1 +1 @@
-20000
+10000
"""


def add_counted(workspace: Workspace) -> None:
    folder = workspace.targets_dir / "counted"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "job.sh").write_text(JOB_SH)
    (folder / "src" / "n.txt").write_text("20000\n")
    (folder / "target.md").write_text(TARGET_MD)


async def test_instructions_are_counted_and_decide(client: Client, workspace: Workspace) -> None:
    add_counted(workspace)
    args = {"target": "counted", "runs": 3, "warmup": 0, "seed": 2, "allow_constant_tuning": True}
    result = await call_done(client, "run_ab", {**args, "patch": PATCH})
    assert not result.is_error, result.content[0].text
    report = await full_view(client, result)
    assert report["verdict"] == "KEEP", report["reason"]
    by_metric = {m["metric"]: m for m in report["report"]["metrics"]}
    a = by_metric["instructions"]["a"]["values"]
    b = by_metric["instructions"]["b"]["values"]
    assert min(a) > 1e6 and all(0.3 < y / x < 0.7 for x, y in zip(a, b, strict=True)), (a, b)
    assert (max(a) - min(a)) / min(a) < 0.01, a  # near-deterministic: well under 1% spread
