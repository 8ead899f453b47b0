"""Sources under concurrency: several server processes on one workspace, with real processes.

Each worker process builds its own Source per call (as the server does) and reads, resolves
and takes the frontier while the main process edits the user's folder once; a few calls also
add and remove a worktree and write a bundle, the other steps that touch shared git state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoopt.tools.errors import TargetSpecError
from autoopt.tools.source import EMPTY_TREES, IMPORTED, Source, git
from autoopt.tools.targets import parse_target
from autoopt.tools.workspace import Workspace
from tests.unit.test_source import TARGET  # a local target: app.py, lib/

pytestmark = pytest.mark.timeout(120)


APP = "SIZE = 1024\n\n\ndef run(items):\n    return [i * 2 for i in items]\n"
EDITED = APP.replace("i * 2", "i << 1")
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
WORKERS = 4
CALLS = 60

WORKER = r"""
import json, subprocess, sys, time, traceback
from pathlib import Path
from autoopt.tools.journal import Journal
from autoopt.tools.source import Source
from autoopt.tools.targets import parse_target
from autoopt.tools.workspace import Workspace

root, me, calls = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
(root / f"ready-{me}").touch()
while not (root / "go").exists():
    time.sleep(0.01)
workspace = Workspace(root)
seen, texts, errors = set(), set(), []
for n in range(calls):
    if n == calls // 3:
        (root / f"third-{me}").touch()
    try:
        source = Source(workspace, parse_target(root / "targets" / "demo"))
        kind = n % 3
        if kind == 0:
            text, _ = source.read("app.py", 1, 10, None)
            texts.add(text)
        elif kind == 1:
            seen.add(source.resolve(None))
        else:
            seen.add(source.frontier())
        if n % 15 == 7:
            base = source.frontier()
            dest = root / f"tree-{me}-{n}"
            assert source.worktree(base, dest / "tree", None, Journal()) == base
            assert (dest / "tree" / "app.py").is_file()
            source.remove_worktree(dest / "tree")
            source.bundle(base, dest / "source.bundle")
            heads = subprocess.run(
                ["git", "bundle", "list-heads", str(dest / "source.bundle")],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            assert heads == [base, "refs/heads/autoopt-base"], heads
    except Exception:
        errors.append(traceback.format_exc())
print(json.dumps({"seen": sorted(seen), "texts": sorted(texts), "errors": errors}))
"""


def make_workspace(root: Path, files: dict[str, str]) -> Path:
    """targets/demo with its target.md and `files` in its source folder; the folder."""
    folder = root / "targets" / "demo"
    (folder / "src").mkdir(parents=True)
    (folder / "target.md").write_text(TARGET)
    for name, text in files.items():
        (folder / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "src" / name).write_text(text)
    return folder / "src"


def tree_of_folder(folder: Path, scratch: Path) -> str:
    """The folder's tree id by plain git in a scratch repository (not the code under test)."""
    shutil.copytree(folder, scratch, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for args in (["init", "-q"], ["add", "-A", "-f", "."]):
        subprocess.run(["git", "-C", str(scratch), *args], check=True, capture_output=True)
    return git(scratch, "write-tree").strip()


def commit_trees(repo: Path) -> list[str]:
    """The tree of every commit reachable from any ref of `repo`."""
    return git(repo, "log", "--all", "--format=%T").split()


@pytest.fixture(autouse=True)
def _no_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOOPT_STATE_DIR", raising=False)


def test_concurrent_processes_import_once_per_state(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    src = make_workspace(root, {"app.py": APP, "lib/util.py": "X = 1\n"})
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0junk")
    before = tree_of_folder(src, tmp_path / "scratch-before")
    env = {k: v for k, v in os.environ.items() if k != "AUTOOPT_STATE_DIR"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), str(i), str(CALLS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(root.glob("ready-*"))) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.02)
        (root / "go").touch()
        while not list(root.glob("third-*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        # One real change, written atomically (a half-written file would be a state too).
        staged = tmp_path / "app.py.new"
        staged.write_text(EDITED)
        os.replace(staged, src / "app.py")
        results = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    after = tree_of_folder(src, tmp_path / "scratch-after")
    assert before != after

    reports = []
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    errors = [e for r in reports for e in r["errors"]]
    assert not errors, f"{len(errors)} failed calls; first:\n{errors[0]}"

    repo = root / ".autoopt" / "sources" / "demo"
    assert not EMPTY_TREES & set(commit_trees(repo))
    frontier = Source(Workspace(root), parse_target(root / "targets" / "demo")).frontier()
    assert git(repo, "rev-parse", f"{frontier}^{{tree}}").strip() == after
    imports = git(repo, "rev-list", IMPORTED).split()
    assert [git(repo, "rev-parse", f"{c}^{{tree}}").strip() for c in imports] == [after, before]
    messages = git(repo, "log", "--all", "--format=%s").splitlines()
    assert messages.count("import targets/demo/src") == 2
    assert {c for r in reports for c in r["seen"]} == set(imports)
    texts = {t for r in reports for t in r["texts"]}
    assert all("i * 2" in t or "i << 1" in t for t in texts)
    assert not list(repo.parent.glob(".demo.*-*")), "private staging folders left behind"


def test_empty_source_folder_is_refused_without_a_commit(tmp_path: Path) -> None:
    src = make_workspace(tmp_path, {})
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    source = Source(Workspace(tmp_path), parse_target(tmp_path / "targets" / "demo"))
    for call in (source.frontier, lambda: source.read("app.py", 1, 2, None)):
        with pytest.raises(TargetSpecError, match=r"target demo: source folder .*src has no files"):
            call()
    assert git(source.repo, "rev-list", "--all").strip() == ""
    (src / "app.py").write_text(APP)
    assert "SIZE = 1024" in source.read("app.py", 1, 1, None)[0]


def test_frontier_on_an_empty_tree_is_healed_by_the_next_import(tmp_path: Path) -> None:
    src = make_workspace(tmp_path, {"app.py": APP})
    source = Source(Workspace(tmp_path), parse_target(tmp_path / "targets" / "demo"))
    first = source.frontier()
    # What older versions could leave: an import commit of the empty tree as the frontier.
    empty = git(source.repo, "commit-tree", EMPTY_TREE, "-m", "import targets/demo/src").strip()
    git(source.repo, "update-ref", "refs/autoopt/frontier", empty)
    assert source.frontier() == empty
    (src / "app.py").write_text(EDITED)
    healed = source.frontier()
    assert healed not in (first, empty)
    assert "i << 1" in source.read("app.py", 1, 10, None)[0]
