"""run_ab order='duet' on a tiny real batch target: the arms of each pair run at the same
time (their run intervals overlap), on disjoint CPUs (each job reports its own affinity),
and the analysis is paired."""

from __future__ import annotations

import json
import os

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="duet needs 2 CPUs"),
]

TARGET_MD = """# Target: duo

## Source
repo: local
path: targets/duo/src

## Primary Metric
name: wall_s
direction: lower

## Workload
description: sleeps 0.6 s and reports its CPU set and when it ran

## Scope
editable:
  - job.py

## Correctness
output: none

## Local
kind: batch
workload: python3 job.py
"""

JOB_PY = """import os, time
start = time.time()
time.sleep(0.6)
print("cpu_mask=%d" % sum(1 << c for c in os.sched_getaffinity(0)))
print("t_start=%.3f" % start)
print("t_end=%.3f" % time.time())
"""


def add_duo(workspace: Workspace) -> None:
    folder = workspace.targets_dir / "duo"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "job.py").write_text(JOB_PY)
    (folder / "target.md").write_text(TARGET_MD)


async def test_duet_pairs_run_together_on_their_own_cpus(
    client: Client, workspace: Workspace
) -> None:
    add_duo(workspace)
    result = await call_done(
        client, "run_ab", {"target": "duo", "runs": 3, "warmup": 0, "order": "duet", "seed": 5}
    )
    assert not result.is_error, result.content[0].text
    report = await full_view(client, result)
    run = json.loads((workspace.state_dir / "runs" / report["run_id"] / "run.json").read_text())
    samples = run["samples"]
    assert len(samples) == 6 and all(s["ok"] for s in samples), samples
    for a, b in zip(samples[::2], samples[1::2], strict=True):
        assert {a["arm"], b["arm"]} == {"A", "B"} and a["block"] == b["block"]
        ma, mb = a["metrics"], b["metrics"]
        assert int(ma["cpu_mask"]) & int(mb["cpu_mask"]) == 0, (ma, mb)  # disjoint CPU sets
        assert ma["t_start"] < mb["t_end"] and mb["t_start"] < ma["t_end"], (ma, mb)  # overlap
    assert run["report"]["paired"] is True
    primary = run["report"]["decision"]["primary"]
    assert primary["method"] == "paired-log", primary
    assert any("duet" in step.get("shell", "") for step in run["journal"]["steps"])


async def test_duet_is_refused_where_it_cannot_pin(client: Client, workspace: Workspace) -> None:
    add_duo(workspace)
    result = await client.call_tool(
        "run_ab", {"target": "duo", "runs": 3, "order": "duet", "backend": "kubernetes"}
    )
    assert result.is_error and "duet" in result.content[0].text, result.content[0].text
