"""Targets as users write them, through an in-process MCP client on real processes: an
env-prefixed workload command, a Python workload script, one interpreter named in target.md
(not the server's) for run_ab and every profiler, wall_s as a guardrail, and profiling an
older revision with base."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = pytest.mark.anyio

LIB = '''\
import time


def hold(n):
    """The allocating function: every item kept at once."""
    return [str(i) * 20 for i in range(n)]


def pause():
    time.sleep(0.05)
'''

# The program: lives in the target's folder (not in the code under test), imports the
# editable library from the built tree (its working directory), and notes which
# interpreter ran it and with which PYTHONMALLOC, in seen.txt beside itself.
WORK_PY = '''\
#!/usr/bin/env python3
import os
import sys

sys.path.insert(0, os.getcwd())
import lib  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
data = lib.hold(n)
lib.pause()
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "seen.txt"), "a") as f:
    f.write(os.path.realpath("/proc/self/exe") + " " + os.environ.get("PYTHONMALLOC", "-") + "\\n")
print(f"items={len(data)}")
print("encoding=utf_8")
'''

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
description: build a list of strings and hold it
{script}

## Scope
editable:
  - lib.py

{constraints}
## Local
kind: batch
build: python3 -m py_compile lib.py
{local}
"""


def make_target(
    workspace: Workspace, name: str, *, script: str = "", local: str = "", constraints: str = ""
) -> Path:
    folder = workspace.targets_dir / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "lib.py").write_text(LIB)
    (folder / "work.py").write_text(WORK_PY)
    (folder / "target.md").write_text(TARGET_MD.format(
        name=name, script=script, local=local, constraints=constraints
    ))
    return folder


def seen(folder: Path) -> list[list[str]]:
    return [line.split() for line in (folder / "seen.txt").read_text().splitlines()]


def patch(*changes: tuple[str, str]) -> str:
    """A one-hunk diff of lib.py with each (old line, new line) replaced."""
    new = LIB
    for old, line in changes:
        assert old in new
        new = new.replace(old, line)
    n = len(LIB.splitlines())
    return f"--- a/lib.py\n+++ b/lib.py\n@@ -1,{n} +1,{n} @@\n" + "".join(
        ("-" + a + "\n+" + b + "\n") if a != b else (" " + a + "\n")
        for a, b in zip(LIB.splitlines(), new.splitlines(), strict=True)
    )


SMALLER = ("    return [str(i) * 20 for i in range(n)]", "    return [str(i) for i in range(n)]")
SLOWER = ("    time.sleep(0.05)", "    time.sleep(0.6)")


async def ok(client: Client, tool: str, args: dict) -> dict:
    result = await call_done(client, tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_env_prefixed_command_runs_and_is_profiled_in_the_real_python(
    client: Client, workspace: Workspace
) -> None:
    local = "workload: PYTHONMALLOC=malloc python3 {target_dir}/work.py 60000"
    folder = make_target(workspace, "envcmd", local=local)
    listing = (await client.call_tool("list_targets", {})).content[0].text
    assert "envcmd (batch)" in listing and "INVALID" not in listing.split("envcmd")[1][:80]
    build = await ok(client, "build", {"target": "envcmd"})
    dep = await ok(client, "deploy", {"build_id": build["build_id"]})
    run = await ok(client, "run_workload", {"deployment_id": dep["deployment_id"]})
    assert run["exit_code"] == 0 and run["metrics"]["items"] == 60000
    for builtin in ("peak_rss_mb", "cpu_s", "wall_s"):  # what run_ab samples, here too
        assert run["metrics"][builtin] > 0, run
    assert "encoding=utf_8" in run["output"]  # non-numeric output, for a person to check
    await client.call_tool("teardown", {"deployment_id": dep["deployment_id"]})
    profile = await full_view(
        client, await call_done(client, "profile_memory", {"target": "envcmd", "label": "m"})
    )
    assert profile["tool"] == "memray" and profile["complete"], profile
    assert "hold" in " ".join(" ".join(p["frames"]) for p in profile["top_paths"])
    assert profile["program"].startswith("PYTHONMALLOC=malloc /"), profile["program"]
    assert "-m memray" not in profile["program"]  # the program, not the wrapper
    runs = seen(folder)
    assert all(mode == "malloc" for _, mode in runs) and len(runs) == 2
    assert all("python" in os.path.basename(exe) for exe, _ in runs)  # never env


async def test_python_workload_script_runs_profiles_and_ab(
    client: Client, workspace: Workspace
) -> None:
    script = "script: targets/pyscript/work.py"
    folder = make_target(workspace, "pyscript", script=script)
    build = await ok(client, "build", {"target": "pyscript"})
    dep = await ok(client, "deploy", {"build_id": build["build_id"]})
    run = await ok(client, "run_workload", {"deployment_id": dep["deployment_id"]})
    assert run["exit_code"] == 0 and run["metrics"]["items"] == 100000, run
    await client.call_tool("teardown", {"deployment_id": dep["deployment_id"]})
    profile = await full_view(
        client, await call_done(client, "profile_memory", {"target": "pyscript", "label": "s"})
    )
    assert profile["tool"] == "memray" and profile["complete"], profile
    top = " ".join(profile["top_paths"][0]["frames"])
    assert "hold" in top, profile["table"]
    ab = await ok(client, "run_ab", {"target": "pyscript", "patch": patch(SMALLER), "runs": 3})
    assert ab["verdict"] == "KEEP", ab
    assert len(seen(folder)) == 1 + 1 + 2 * (3 + 1)  # 3 runs and a warmup per arm


async def test_one_interpreter_for_run_ab_and_every_profiler(
    client: Client, workspace: Workspace
) -> None:
    """target.md names /usr/bin/python3, which is not the server's interpreter: run_ab,
    profile_memory (memray installed beside it) and profile_cpu all run it."""
    system = Path("/usr/bin/python3")
    if not system.exists() or os.path.realpath(system) == os.path.realpath(
        __import__("sys").executable
    ):
        pytest.skip("needs a /usr/bin/python3 that is not the server's interpreter")
    local = "python: /usr/bin/python3\nworkload: python3 {target_dir}/work.py 50000"
    folder = make_target(workspace, "onepy", local=local)
    mem = await full_view(
        client, await call_done(client, "profile_memory", {"target": "onepy", "label": "m"})
    )
    assert mem["tool"] == "memray" and mem["complete"], mem
    assert mem["interpreter"].startswith("/usr/bin/python3 (Python "), mem["interpreter"]
    cpu = await ok(client, "profile_cpu", {"target": "onepy", "label": "c"})
    assert cpu["status"] == "done", cpu
    ab = await ok(client, "run_ab", {"target": "onepy", "runs": 3})  # A/A
    assert ab["verdict"] != "KEEP", ab
    exes = {exe for exe, _ in seen(folder)}
    assert exes == {os.path.realpath(system)}, exes  # memray, py-spy and run_ab alike
    assert len(seen(folder)) == 2 + 2 * (3 + 1)


async def test_wall_s_is_a_guardrail(client: Client, workspace: Workspace) -> None:
    """Less memory but four times slower: the wall_s guardrail stops the KEEP."""
    make_target(
        workspace,
        "walls",
        local="workload: python3 {target_dir}/work.py 100000",
        constraints="## Constraints\n- wall_s must not increase by more than 50% from baseline\n",
    )
    both = patch(SMALLER, SLOWER)
    ab = await ok(client, "run_ab", {"target": "walls", "patch": both, "runs": 3})
    assert ab["verdict"] != "KEEP", ab
    full = await full_view(client, await call_done(client, "get_run", {"run_id": ab["run_id"]}))
    guardrails = full["report"]["decision"]["guardrails"]
    (wall,) = [g for g in guardrails if g["guardrail"]["metric"] == "wall_s"]
    assert wall["violated"] and not wall["passed"], wall
    assert ab["verdict"] == "DISCARD" and "wall_s" in ab["reason"], ab


async def test_profile_an_older_revision_with_base(client: Client, workspace: Workspace) -> None:
    folder = make_target(workspace, "older", local="workload: python3 {target_dir}/work.py")
    first = await ok(client, "build", {"target": "older"})
    lib = folder / "src" / "lib.py"
    lib.write_text(LIB.replace("def hold(n):", "def keep_all(n):") + "\n\nhold = keep_all\n")
    now = await full_view(
        client, await call_done(client, "profile_memory", {"target": "older", "label": "new"})
    )
    assert now["revision"] != first["commit"]
    assert "keep_all" in " ".join(now["top_paths"][0]["frames"]), now["table"]
    old = await full_view(client, await call_done(
        client, "profile_memory", {"target": "older", "label": "old", "base": first["commit"]}
    ))
    assert old["revision"] == first["commit"]
    top = " ".join(old["top_paths"][0]["frames"])
    assert "hold" in top and "keep_all" not in top, old["table"]


async def test_a_pypi_target_builds_from_the_index_and_ab_reaches_a_decision(
    client: Client, workspace: Workspace
) -> None:
    """targets/tabulate: tabulate 0.9.0 from the package index (the real registry), and a
    real memory fix to it (examples/patches/tabulate-no-plain-text.patch)."""
    build = await ok(client, "build", {"target": "tabulate"})
    assert build["status"] == "done" and build["commit"], build
    source = await client.call_tool(
        "read_source", {"target": "tabulate", "path": "tabulate/__init__.py", "end_line": 3}
    )
    assert not source.is_error and "Pretty-print tabular data" in source.content[0].text, (
        source.content[0].text
    )
    fix = (Path(__file__).parents[2] / "examples/patches/tabulate-no-plain-text.patch").read_text()
    ab = await ok(client, "run_ab", {"target": "tabulate", "patch": fix, "runs": 3})
    verdicts = ("KEEP", "DISCARD", "INCONCLUSIVE", "SAME")
    assert ab["status"] == "done" and ab["verdict"] in verdicts, ab
    full = await full_view(client, await call_done(client, "get_run", {"run_id": ab["run_id"]}))
    assert full["report"]["n_a"] == 3 and full["report"]["n_b"] == 3, full["report"]
    record = await ok(client, "record_experiment", {
        "run_id": ab["run_id"], "exp_id": "no-plain-text",
        "description": "search cells one by one", "hypothesis": "the joined string goes",
    })
    folder = workspace.root / record["directory"]
    assert (folder / "workload" / "report.py").is_file()  # the program the command names
    workload_sh = (folder / "workload.sh").read_text()
    assert 'PYTHONPATH=. ' in workload_sh and '"$WORKLOAD_DIR"/report.py' in workload_sh
    assert "source.bundle" in (folder / "build.sh").read_text()  # the imported wheel


async def test_a_shell_workload_script_is_followed_into_each_python(
    client: Client, workspace: Workspace
) -> None:
    """A batch workload script that starts two Pythons: memray follows both, and the
    profile says which processes it covers."""
    folder = make_target(workspace, "shscript", script="script: targets/shscript/workload.sh")
    (folder / "workload.sh").write_text(
        '#!/bin/sh\nset -e\npython3 "$(dirname "$0")/work.py" 30000\n'
        "python3 -c 'import lib; print(\"more=%d\" % len(lib.hold(90000)))'\n"
    )
    profile = await full_view(
        client, await call_done(client, "profile_memory", {"target": "shscript", "label": "f"})
    )
    assert profile["tool"] == "memray" and profile["complete"], profile
    roots = {p["frames"][0] for p in profile["top_paths"]}
    assert len({r.split("]")[0] for r in roots if r.startswith("[pid ")}) == 2, roots
    assert any("work.py 30000" in r for r in roots) and any("-c" in r for r in roots), roots
    assert any("2 Python process(es)" in n for n in profile["notes"]), profile["notes"]
    assert profile["workload_metrics"]["more"] == 90000
    assert len(seen(folder)) == 1
