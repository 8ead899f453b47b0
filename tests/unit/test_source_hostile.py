"""Hostile input to sources (issue 19): symlinks out of a target's folder, paths out of the
imported tree, patches that change read-only files in ways ---/+++ lines do not show,
numbers-only patches dressed with comments, and searches that would never end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autoopt.tools.errors import InvalidName, PatchError, RuleViolation, TargetSpecError
from autoopt.tools.journal import Journal
from autoopt.tools.source import Source, bounded_lines, code_tokens, git, is_numeric_only
from tests.unit.test_source import APP, diff
from tests.unit.test_source import source as source  # the fixture


@pytest.fixture
def src(source: Source) -> Path:
    return source.workspace.root / "targets" / "demo" / "src"


# -- confinement --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "to"),
    [
        ("leak", "/etc/passwd"),
        ("secret", "../../outside.txt"),
        ("lib/up", "../../outside.txt"),
        ("abs-inside", "ABS/app.py"),  # absolute, even when it names a file inside
        ("escape-loop", "escape-loop/../../outside.txt"),  # a loop judged by its text
        ("via-dot", "dot/../../outside.txt"),  # dot -> . : inside as written, not resolved
        ("dangling", "missing/../../../outside.txt"),
    ],
)
def test_a_link_out_of_the_folder_is_refused_naming_it(
    source: Source, src: Path, name: str, to: str
) -> None:
    (src.parent / "outside.txt").write_text("SECRET\n")
    (src / "dot").symlink_to(".")
    (src / name).symlink_to(to.replace("ABS", str(src)))
    with pytest.raises(TargetSpecError) as err:
        source.frontier()
    assert f"{name} links outside it (to {to.replace('ABS', str(src))})" in str(err.value)
    assert "demo" in str(err.value)
    assert not (source.repo / ".git" / "refs" / "autoopt" / "frontier").exists()


def test_links_inside_are_imported_as_links_and_never_followed(
    source: Source, src: Path
) -> None:
    (src / "alias.py").symlink_to("app.py")
    (src / "pkg").symlink_to("lib")
    (src / "loop-a").symlink_to("loop-b")
    (src / "loop-b").symlink_to("loop-a")
    commit = source.frontier()
    entries = git(source.repo, "ls-tree", commit).splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in entries}
    assert modes["alias.py"] == modes["pkg"] == modes["loop-a"] == "120000"
    with pytest.raises(InvalidName, match=r"'alias\.py' is a symlink \(to 'app\.py'\)"):
        source.read("alias.py", 1, 10, None)
    with pytest.raises(InvalidName, match="no file"):
        source.read("pkg/vendored.py", 1, 10, None)  # not through a linked folder
    for name in ("lib/vendored.py", "./lib//vendored.py"):
        assert source.read(name, 1, 10, None)[0].endswith("X = 1")
    # the link's blob is its target path: a search sees that text, not the file's content
    assert source.search("SIZE", None, None, 10) == ["app.py:1:SIZE = 1024"]


def test_a_link_blob_to_etc_passwd_is_named_never_read(source: Source, tmp_path: Path) -> None:
    """A tree can hold a link out (a patch can add one): reading it names the link."""
    link = (
        "diff --git a/lib/pw b/lib/pw\nnew file mode 120000\nindex 0000000..1111111\n"
        "--- /dev/null\n+++ b/lib/pw\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n"
    )
    commit = source.worktree(source.frontier(), tmp_path / "b", link, Journal())
    with pytest.raises(InvalidName, match=r"symlink \(to '/etc/passwd'\)"):
        source.read("lib/pw", 1, 10, commit)
    assert source.search("root|passwd", None, commit, 10) == []  # git grep skips links


@pytest.mark.parametrize(
    "path", ["../target.md", "/etc/passwd", "lib/../../target.md", "-p", "a\x00b", "", "lib"]
)
def test_read_stays_in_the_tree(source: Source, path: str) -> None:
    with pytest.raises(InvalidName):
        source.read(path, 1, 10, None)


# -- what git would change ------------------------------------------------------------
def _git_patch(source: Source, tmp_path: Path, change: Callable[[Path], None]) -> str:
    """`git diff --binary -M -C` of `change` made in a checkout of the frontier."""
    tree = tmp_path / "scratch"
    source.worktree(source.frontier(), tree, None, Journal())
    change(tree)
    git(tree, "add", "-A")
    out = subprocess.run(
        ["git", "-C", str(tree), "diff", "--cached", "--binary", "-M", "-C",
         "--find-copies-harder"],
        capture_output=True, check=True,
    ).stdout.decode()
    source.remove_worktree(tree)
    return out


def _binary_readonly(tree: Path) -> None:
    (tree / "app.py").write_text(APP.replace("out = []", "out = list()"))
    (tree / "lib" / "vendored.py").write_bytes(b"\x00\x01 overwritten\n")


@pytest.mark.parametrize(
    ("change", "named", "header"),
    [
        (_binary_readonly, "lib/vendored.py", "GIT binary patch"),
        (lambda t: (t / "lib/vendored.py").rename(t / "lib/moved.py"), "lib/vendored.py",
         "rename from"),
        (lambda t: (t / "other.py").rename(t / "lib/other.py"), "other.py", "rename from"),
        (lambda t: (t / "lib/vendored.py").unlink(), "lib/vendored.py", "deleted file"),
        (lambda t: (t / "lib/vendored.py").chmod(0o755), "lib/vendored.py", "new mode"),
        (lambda t: (t / "lib/copy.py").write_text("X = 1\n"), "lib/vendored.py", "copy from"),
    ],
    ids=["binary", "rename-readonly", "rename-outside", "delete", "mode", "copy"],
)
def test_changes_headers_do_not_show_are_refused(
    source: Source, tmp_path: Path, change: Callable[[Path], None], named: str, header: str
) -> None:
    patch = _git_patch(source, tmp_path, change)
    assert header in patch
    with pytest.raises(RuleViolation, match="outside demo's editable scope") as err:
        source.check_patch(patch, allow_constants=True)
    assert named in str(err.value)


def test_headers_that_disagree_are_read_as_git_applies_them(
    source: Source, tmp_path: Path
) -> None:
    """The files checked are the ones git changes, whichever header names them."""
    hunk = diff("app.py", APP, APP.replace("out = []", "out = list()"))
    forged = "diff --git a/lib/vendored.py b/lib/vendored.py\n" + hunk
    assert source.check_patch(forged).files == ["app.py"]
    commit = source.worktree(source.frontier(), tmp_path / "b", forged, Journal())
    assert git(source.repo, "diff", "--name-only", f"{commit}^", commit).split() == ["app.py"]
    readonly = "diff --git a/app.py b/app.py\n" + diff("lib/vendored.py", "X = 1\n", "X = [1]\n")
    for patch in (
        readonly,
        hunk.replace("a/app.py", "a/lib/../other.py").replace("b/app.py", "b/lib/../other.py"),
        "--- /dev/null\n+++ /tmp/evil.py\n@@ -0,0 +1 @@\n+x\n",
        "--- a/app.py\n+++ b/other.py\n@@ -1 +1 @@\n-Y = 2\n+Y = 9\n",
        'diff --git "a/lib/\\166endored.py" "b/lib/\\166endored.py"\ndeleted file mode 100644\n'
        '--- "a/lib/\\166endored.py"\n+++ /dev/null\n@@ -1 +0,0 @@\n-X = 1\n',
        hunk + "diff --git a/other.py b/lib/o.py\nsimilarity index 100%\nrename from other.py\n"
        "rename to lib/o.py\n",
    ):
        with pytest.raises(RuleViolation, match="outside demo's editable scope"):
            source.check_patch(patch)


def test_an_editable_patch_that_does_not_apply_is_a_patch_error(source: Source) -> None:
    bad = diff("app.py", APP.replace("out = []", "out = dict()"), APP.replace("out = []", "x"))
    with pytest.raises(PatchError, match=r"does not apply to .*app\.py"):
        source.check_patch(bad)
    with pytest.raises(PatchError, match="touches no file"):
        source.check_patch("just words\n")


def test_numbers_plus_a_comment_are_still_constant_tuning(source: Source) -> None:
    tuned = APP.replace("SIZE = 1024\n", "# tuned for the big box\nSIZE = 4096  # was 1024\n")
    for new in (tuned, tuned.replace("i * 2", "i  *  3"), APP.replace("1024", "-1")):
        patch = diff("app.py", APP, new)
        with pytest.raises(RuleViolation, match="configuration tuning"):
            source.check_patch(patch)
        assert source.check_patch(patch, allow_constants=True).numeric_only
    for code in (
        APP.replace("SIZE = 1024", "SIZE = 4096\nSIZE2 = 1"),
        APP.replace("    return out", "return out").replace("1024", "7"),  # indentation
        APP.replace("1024", '"1024"'),
    ):
        assert not source.check_patch(diff("app.py", APP, code)).numeric_only


@pytest.mark.parametrize(
    ("path", "old", "new", "numeric"),
    [
        ("a.c", "int n = 10; // n\n", "/* more */ int n = 20; // m\n", True),
        ("a.c", 'char *s = "// 1";\n', 'char *s = "// 2";\n', False),
        ("a.c", "#define N 10\n", "#define N 20\n", True),  # # is code in C
        ("a.c", "#define N 10\n", "#define M 10\n", False),
        ("run.sh", "N=10\n", "# bigger\nN=20 # here\n", True),
        ("x.go", "x := 1.5e-3\n", "x := 2.5e-3 // tuned\n", True),
        ("b.py", "if x:\n  y = 1\n", "if x:\n  y = 1\n", False),  # nothing changed
        ("b.py", "x = (1,\n", "x = (2,\n# c\n", True),  # Python cannot tokenize: generic
    ],
)
def test_token_streams(path: str, old: str, new: str, numeric: bool) -> None:
    assert is_numeric_only([(path, old, new)]) is numeric
    assert code_tokens(path, old)  # never empty for code


# -- bounded searches ---------------------------------------------------------------
def test_bounded_lines_stops_at_the_limit_the_clock_and_the_line_cap() -> None:
    started = time.monotonic()
    lines, code, _ = bounded_lines(["yes"], 10, 5)
    assert lines == ["y"] * 10 and code is not None
    lines, code, _ = bounded_lines(["sleep", "30"], 10, 0.5)
    assert lines == [] and code is None
    long = [sys.executable, "-c", "print('x' * 10**7); print('done')"]
    lines, code, _ = bounded_lines(long, 10, 5)
    assert lines == ["x" * 2000 + " …", "done"] and code == 0
    assert time.monotonic() - started < 5


def test_a_catastrophic_pattern_is_stopped_with_a_clear_error(source: Source, src: Path) -> None:
    lines = (f"x = {i}  # some text here, and more of it: backtracking grows as n**4\n"
             for i in range(3000))
    (src / "lib" / "big.py").write_text("".join(lines))
    started = time.monotonic()
    with pytest.raises(InvalidName, match=r"took over 5 s and was stopped: simplify it"):
        source.search(r"(.*)(.*)(.*)\3\2\1x", None, None, 100)
    assert time.monotonic() - started < 7
    for bad in ("(", "a\x00b"):
        with pytest.raises(InvalidName, match="search pattern"):
            source.search(bad, None, None, 10)
    assert len(source.search("x", None, None, 50)) == 50


def test_no_git_left_running(source: Source) -> None:
    source.search("SIZE", None, None, 1)
    kids = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "git"], capture_output=True, text=True
    ).stdout
    assert kids == ""
