"""Sources: local import, revisions, patches and the rules on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.tools.errors import PatchError, RuleViolation
from autoopt.tools.journal import Journal
from autoopt.tools.source import Source
from autoopt.tools.targets import parse_target
from autoopt.tools.workspace import Workspace

TARGET = """# Target: demo

## Source
repo: local
path: targets/demo/src

## Primary Metric
name: peak_rss_mb
direction: lower

## Scope
editable:
  - app.py
  - lib/
readonly:
  - lib/vendored.py
"""

APP = (
    "SIZE = 1024\n\n\ndef run(items):\n    out = []\n    for i in items:\n"
    "        out.append(i * 2)\n    return out\n"
)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    folder = tmp_path / "targets" / "demo"
    (folder / "src" / "lib").mkdir(parents=True)
    (folder / "target.md").write_text(TARGET)
    (folder / "src" / "app.py").write_text(APP)
    (folder / "src" / "lib" / "vendored.py").write_text("X = 1\n")
    (folder / "src" / "other.py").write_text("Y = 2\n")
    return Source(Workspace(tmp_path), parse_target(folder))


def diff(path: str, old: str, new: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        old.splitlines(True), new.splitlines(True), f"a/{path}", f"b/{path}"
    )
    return "".join(lines)


def test_local_import_is_deterministic_and_reimports_changes(
    source: Source, tmp_path: Path
) -> None:
    first = source.frontier()
    again = Source(source.workspace, source.spec).frontier()
    assert first == again
    (tmp_path / "targets" / "demo" / "src" / "app.py").write_text(APP + "# changed\n")
    assert source.frontier() != first


def test_scope_rule_names_the_files(source: Source) -> None:
    with pytest.raises(RuleViolation, match=r"other\.py") as err:
        source.check_patch(diff("other.py", "Y = 2\n", "Y = [2]\n"))
    assert "editable" in str(err.value)
    with pytest.raises(RuleViolation, match=r"lib/vendored\.py"):
        source.check_patch(diff("lib/vendored.py", "X = 1\n", "X = [1]\n"))


def test_numeric_only_patch_is_refused_unless_overridden(source: Source) -> None:
    patch = diff("app.py", APP, APP.replace("1024", "4096"))
    with pytest.raises(RuleViolation, match="configuration tuning"):
        source.check_patch(patch)
    info = source.check_patch(patch, allow_constants=True)
    assert info.numeric_only and info.files == ["app.py"]


def test_code_change_is_not_numeric_only(source: Source) -> None:
    patch = diff("app.py", APP, APP.replace("out.append(i * 2)", "out.append(i << 1)"))
    info = source.check_patch(patch)
    assert info.files == ["app.py"] and not info.numeric_only


def test_patch_that_does_not_apply_names_the_hunk(source: Source, tmp_path: Path) -> None:
    bad = diff("app.py", APP.replace("out = []", "out = list()"), APP.replace("out = []", "x"))
    with pytest.raises(PatchError, match=r"does not apply.*app\.py"):
        source.worktree(source.frontier(), tmp_path / "tree", bad, Journal())


def test_worktree_applies_and_commits_patch(source: Source, tmp_path: Path) -> None:
    base = source.frontier()
    patch = diff("app.py", APP, APP.replace("out = []", "out = list()"))
    commit = source.worktree(base, tmp_path / "b", patch, Journal())
    assert commit != base
    assert "out = list()" in (tmp_path / "b" / "app.py").read_text()
    text, total = source.read("app.py", 4, 5, commit)
    assert "def run" in text and total == 8
    assert any("out = list()" in hit for hit in source.search("list\\(\\)", "*.py", commit, 10))


def test_check_patch_names_new_and_deleted_files(source: Source) -> None:
    patch = (
        "--- /dev/null\n+++ b/lib/new.py\n@@ -0,0 +1 @@\n+x\n"
        "--- a/app.py\n+++ /dev/null\n@@ -1,8 +0,0 @@\n"
        + "".join(f"-{line}\n" for line in APP.splitlines())
    )
    assert source.check_patch(patch).files == ["lib/new.py", "app.py"]


def test_bad_revision_is_refused(source: Source) -> None:
    from autoopt.tools.errors import InvalidName

    for rev in ["--upload-pack=x", "nope", "a..b"]:
        with pytest.raises(InvalidName):
            source.resolve(rev)


def test_reimport_leaves_a_moved_frontier_alone(source: Source, tmp_path: Path) -> None:
    base = source.frontier()
    patch = diff("app.py", APP, APP.replace("out = []", "out = list()"))
    kept = source.worktree(base, tmp_path / "b", patch, Journal())
    source.set_frontier(kept)
    (tmp_path / "targets" / "demo" / "src" / "other.py").write_text("Y = 3\n")
    assert source.frontier() == kept
    assert source.resolve("refs/autoopt/imported") != base
