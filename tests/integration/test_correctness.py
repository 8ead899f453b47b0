"""A KEEP means faster and still correct, through an in-process MCP client on real
processes: a patch that does less work is DISCARD "behaviour changed" though its memory
fell, one that breaks the target's tests is DISCARD "tests failed", an A/A run is SAME, a
workload that prints a timestamp is flagged nondeterministic unless it declares an ignore
pattern, per-block seeds, and a patch may not touch the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = pytest.mark.anyio

BROKEN = Path(__file__).parents[2] / "bench" / "broken"


async def ab(client: Client, **args: object) -> dict:
    result = await call_done(client, "run_ab", args)
    assert not result.is_error, result.content[0].text
    return await full_view(client, result)


async def test_a_patch_that_samples_the_records_is_behaviour_changed(client: Client) -> None:
    """pyserver's /process on every other record of a big store: less memory, different
    answers, and the unit tests (small stores) still pass: the output comparison catches it."""
    patch = (BROKEN / "pyserver-process-sample.patch").read_text()
    run = await ab(client, target="pyserver", patch=patch, runs=3, warmup=0)
    assert run["tests"]["A"]["passed"] and run["tests"]["B"]["passed"], run["tests"]
    assert run["verdict"] == "DISCARD", run["reason"]
    assert run["reason"].startswith("behaviour changed"), run["reason"]
    assert run["outputs"]["status"] == "changed" and run["outputs"]["changed"][0]["line"] >= 1


async def test_a_patch_that_breaks_the_tests_is_discarded_before_any_timed_run(
    client: Client,
) -> None:
    patch = (BROKEN / "batchdemo-half-input.patch").read_text()
    run = await ab(client, target="batchdemo", patch=patch, runs=3)
    assert run["verdict"] == "DISCARD" and "tests failed" in run["reason"], run["reason"]
    assert "test_a_small_run_gives_the_known_result" in run["reason"], run["reason"]
    assert run["tests"]["A"]["passed"] and not run["tests"]["B"]["passed"]
    assert run["samples"] == []  # no machine time spent measuring a broken build


async def test_a_real_fix_passes_the_tests_and_keeps_the_output(client: Client) -> None:
    patch = (Path(__file__).parents[2] / "examples/patches/batchdemo-stream.patch").read_text()
    run = await ab(client, target="batchdemo", patch=patch, runs=3, warmup=0)
    assert run["verdict"] == "KEEP", run["reason"]
    assert run["tests"]["A"]["passed"] and run["tests"]["B"]["passed"]
    assert run["outputs"]["status"] == "same" and run["outputs"]["compared"] == 3


async def test_a_patch_may_not_touch_the_tests(client: Client) -> None:
    patch = (
        "--- a/test_dedupe.py\n+++ b/test_dedupe.py\n@@ -1,2 +1,2 @@\n"
        '-"""batchdemo\'s own tests (stdlib unittest): the job\'s public behaviour, which any '
        "correct\n"
        '+"""batchdemo\'s tests, weakened: the job\'s public behaviour, which any correct\n'
        " implementation keeps. target.md's ## Correctness runs them on both arms of an A/B run."
        '"""\n'
    )
    result = await client.call_tool("run_ab", {"target": "batchdemo", "patch": patch, "runs": 3})
    assert result.is_error and "test_dedupe.py" in result.content[0].text, result.content[0].text


async def test_pyserver_a_a_is_same(client: Client) -> None:
    run = await ab(client, target="pyserver", runs=5, warmup=0)
    assert run["verdict"] == "SAME", run["reason"]
    assert run["outputs"]["status"] == "same", run["outputs"]


CLOCK_MD = """# Target: clock

## Source
repo: local
path: targets/clock/src

## Primary Metric
name: peak_rss_mb
direction: lower

## Workload
description: prints the block seed and the time

## Scope
editable:
  - job.py

## Local
kind: batch
workload: python3 job.py
{correctness}"""

JOB_PY = """import os, time
print("seed: " + os.environ.get("AUTOOPT_BLOCK_SEED", "none"))
print("finished at %.6f" % time.time())
"""


async def test_a_timestamp_is_nondeterministic_unless_ignored(
    client: Client, workspace: Workspace
) -> None:
    folder = workspace.targets_dir / "clock"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "job.py").write_text(JOB_PY)
    (folder / "target.md").write_text(CLOCK_MD.format(correctness=""))
    run = await ab(client, target="clock", runs=3, warmup=0)  # A/A, ABBA blocks of 4
    assert run["outputs"]["status"] == "nondeterministic", run["outputs"]
    assert run["verdict"] not in ("KEEP", "SAME") and "not deterministic" in run["reason"]
    listing = (await client.call_tool("list_targets", {})).content[0].text
    assert "FLAG: the workload's output is not deterministic" in listing, listing
    # the per-block seed: the same for the runs of one block, different between blocks
    outputs = workspace.state_dir / "runs" / run["run_id"] / "outputs"
    seeds = {}
    for sample in run["samples"]:
        text = (outputs / f"run{sample['run']:03d}-{sample['arm']}.txt").read_text()
        seeds.setdefault(sample["block"], set()).add(text.splitlines()[0])
    assert all(len(s) == 1 for s in seeds.values()) and len(seeds) == 2, seeds
    assert len({next(iter(s)) for s in seeds.values()}) == 2, seeds
    (folder / "target.md").write_text(
        CLOCK_MD.format(correctness="\n## Correctness\nignore:\n  - 'at [0-9.]+'\n")
    )
    run = await ab(client, target="clock", runs=3, warmup=0)
    assert run["outputs"]["status"] == "same", run["outputs"]
    listing = (await client.call_tool("list_targets", {})).content[0].text
    assert "FLAG" not in listing, listing
    assert json.loads((outputs.parent / "run.json").read_text())["outputs"] is not None


async def test_a_cache_left_in_the_tree_does_not_carry_over(client: Client) -> None:
    """A patch that pickles its result next to the program, keyed by its input: every run
    starts from the tree as built, so each B run computes and writes it again."""
    patch = (BROKEN / "batchdemo-disk-memo.patch").read_text()
    run = await ab(client, target="batchdemo", patch=patch, runs=3, warmup=0)
    b_runs = [s for s in run["samples"] if s["arm"] == "B"]
    assert len(b_runs) == 3 and all(
        any(f.startswith(".dedupe-cache/") for f in s["left"]) for s in b_runs
    ), [s["left"] for s in b_runs]
    assert all(not s["left"] for s in run["samples"] if s["arm"] == "A")
    assert run["verdict"] != "KEEP", run["reason"]
