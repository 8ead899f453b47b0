"""Incremental build trees (`## Build` incremental: true): a tiny C program built with make
in persistent build-cache slots. Real git, real make, real flocks; seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoopt.tools.backends.base import Build
from autoopt.tools.engine import Engine
from autoopt.tools.errors import NotFound
from autoopt.tools.workspace import Workspace

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not (shutil.which("cc") and shutil.which("make")), reason="no cc/make"),
]

TARGET = """# Target: ctiny
## Source
repo: local
path: targets/ctiny/src
## Build
incremental: true
## Primary Metric
name: wall_s
direction: lower
## Scope
editable:
  - b.c
## Local
kind: batch
build: make
workload: ./prog
"""
MAKEFILE = """prog: main.o a.o b.o
\tcc -o prog main.o a.o b.o
%.o: %.c
\tcc -c $<
"""
SOURCES = {
    "main.c": "int a(void); int b(void);\nint main(void) { return a() + b(); }\n",
    "a.c": "int a(void) { return 0; }\n",
    "b.c": "int b(void) { return 0; }\n",
}
PATCH = """--- a/b.c
+++ b/b.c
@@ -1 +1 @@
-int b(void) { return 0; }
+int b(void) { return 1 - 1; }
"""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    src = tmp_path / "targets" / "ctiny" / "src"
    src.mkdir(parents=True)
    (src.parent / "target.md").write_text(TARGET)
    (src / "Makefile").write_text(MAKEFILE)
    for name, text in SOURCES.items():
        (src / name).write_text(text)
    return Workspace(tmp_path)


def compiled(build: Build) -> list[str]:
    """The sources make compiled in this build (from its log: `cc -c x.c`)."""
    log = (build.folder / "logs" / "build.out").read_text()
    return sorted(line.split()[-1] for line in log.splitlines() if line.startswith("cc -c"))


async def test_slot_rebuilds_only_what_changed(ws: Workspace) -> None:
    engine = Engine(ws)
    first = await engine.build("ctiny")
    assert first.incremental == "slot-0, a first build (empty slot)"
    assert first.tree.endswith("buildcache/ctiny/slot-0/tree")
    assert compiled(first) == ["a.c", "b.c", "main.c"]
    await engine.discard_build(first.id)
    assert Path(first.tree, "prog").is_file(), "discard keeps the slot's tree and products"
    os.utime(Path(first.tree, "a.c"), (1e9, 1e9))  # a build touching a source (same content)

    again = await engine.build("ctiny")
    assert again.tree == first.tree
    assert again.incremental == f"slot-0, reused from {first.commit[:12]}"
    assert compiled(again) == [], "the same base in the same slot recompiles nothing"
    assert Path(again.tree, "a.c").stat().st_mtime == 1e9, "a touched file is not rewritten"
    await engine.discard_build(again.id)

    patched = await engine.build("ctiny", patch=PATCH)
    assert patched.tree == first.tree, "a free slot on the same base is preferred"
    assert compiled(patched) == ["b.c"], "a one-file patch recompiles that file only"
    shown = subprocess.run(
        ["git", "-C", patched.tree, "show", "--name-only", "--format=", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert shown == ["b.c"], "the patch commit holds only the patch's files, no build output"
    await engine.discard_build(patched.id)

    back = await engine.build("ctiny")
    assert compiled(back) == ["b.c"], "back to the base: only the patched file is rebuilt"
    await engine.discard_build(back.id)


async def test_held_slots_are_not_taken(ws: Workspace) -> None:
    engine = Engine(ws)
    held = [await engine.build("ctiny") for _ in range(3)]
    assert sorted(Path(b.tree).parent.name for b in held) == ["slot-0", "slot-1", "slot-2"]
    notes: list[str] = []

    async def progress(message: str) -> None:
        notes.append(message)

    fresh = await engine.build("ctiny", progress=progress)
    assert fresh.incremental is None and fresh.tree == str(engine.build_dir(fresh.id) / "tree")
    assert any("slots of ctiny are held; building in a fresh tree" in n for n in notes)
    assert compiled(fresh) == ["a.c", "b.c", "main.c"]
    await engine.discard_build(fresh.id)
    assert not Path(fresh.tree).exists(), "a fresh tree is removed as before"
    await engine.discard_build(held[1].id)
    reused = await engine.build("ctiny")
    assert reused.tree == held[1].tree, "the released slot is the only free one"
    for build in [*held[::2], reused]:
        await engine.discard_build(build.id)


async def test_slot_survives_a_server_restart(ws: Workspace) -> None:
    """A server builds (kept, so its build outlives it) and exits: the kernel frees its
    flock; the next server's recovery keeps the slot, and a build there re-uses it."""
    script = (
        "import anyio, sys\n"
        "from pathlib import Path\n"
        "from autoopt.tools.engine import Engine\n"
        "from autoopt.tools.workspace import Workspace\n"
        "b = anyio.run(lambda: Engine(Workspace(Path(sys.argv[1]))).build("
        "'ctiny', patch=sys.argv[2], kept=True))\n"
        "print(b.model_dump_json())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(ws.root), PATCH], capture_output=True, text=True,
        check=True,
    ).stdout
    built = Build.model_validate_json(out.splitlines()[-1])
    engine = Engine(ws)
    await engine.recover()
    assert Path(built.tree, "prog").is_file(), "recovery does not delete a slot"
    again = await engine.build("ctiny", patch=PATCH)
    assert again.tree == built.tree and again.commit == built.commit
    assert compiled(again) == [], "the same base + patch in its slot recompiles nothing"
    with pytest.raises(NotFound, match="re-used by build"):
        engine.get_build(built.id)
    await engine.discard_build(again.id)
    assert Path(again.tree, "prog").is_file()


async def test_a_profile_releases_its_slot_and_keeps_it(ws: Workspace) -> None:
    from autoopt.tools.profiling.run import profile_memory

    engine = Engine(ws)
    await profile_memory(engine, "ctiny", tool="procfs", label="p")
    again = await engine.build("ctiny")
    assert again.incremental is not None and "reused from" in again.incremental
    assert again.tree.endswith("slot-0/tree") and compiled(again) == []
    await engine.discard_build(again.id)


async def test_a_build_script_in_the_target_folder_is_recorded_as_the_records_copy(
        ws: Workspace) -> None:
    """`build: bash {target_dir}/mk.sh`: the journal names it as "$WORKLOAD_DIR"/mk.sh and it
    is among the files a record copies, so the record's build.sh replays without the
    workspace."""
    from autoopt.tools.engine import _workload_files

    md = ws.targets_dir / "ctiny" / "target.md"
    md.write_text(md.read_text().replace("build: make", "build: bash {target_dir}/mk.sh"))
    (ws.targets_dir / "ctiny" / "mk.sh").write_text("make\n")
    engine = Engine(ws)
    build = await engine.build("ctiny")
    step = next(s for s in build.journal.steps if s.phase == "build")
    assert step.shell == '(cd "$TREE" && bash "$WORKLOAD_DIR"/mk.sh)', step.shell
    assert "targets/ctiny/mk.sh" in _workload_files(ws, engine.spec("ctiny"), None)
