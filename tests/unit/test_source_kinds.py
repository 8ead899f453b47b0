"""Source kinds beyond `repo: local`: pypi: and debian: pins fetched once, git at a commit or tag.

The pypi tests download from the package index as pip is configured here and fail (not skip)
when it is unreachable; the Debian test skips only when the Debian archive is unreachable.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from autoopt.tools import fetch, scripts
from autoopt.tools.errors import TargetSpecError
from autoopt.tools.source import FRONTIER, IMPORTED, Source, git
from autoopt.tools.targets import parse_target
from autoopt.tools.workspace import Workspace

pytestmark = pytest.mark.timeout(120)

TARGET = """# Target: {name}

## Source
{source}

## Primary Metric
name: wall_s
direction: lower

## Scope
editable:
  - "*.py"
"""


@pytest.fixture(autouse=True)
def _own_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOOPT_STATE_DIR", raising=False)


def make(root: Path, source: str, name: str = "demo") -> Source:
    folder = root / "targets" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "target.md").write_text(TARGET.format(name=name, source=source))
    return Source(Workspace(root), parse_target(folder))


def show(source: Source, path: str, rev: str = FRONTIER) -> str:
    return git(source.repo, "show", f"{rev}:{path}")


def subject(source: Source, ref: str = IMPORTED) -> str:
    return git(source.repo, "log", "-1", "--format=%s", ref).strip()


def spy(monkeypatch: pytest.MonkeyPatch, tool: str, *, fail: bool = True) -> list[list[str]]:
    """The calls of `tool` (pip, apt-get) from now on; with `fail`, each one raises."""
    real, calls = subprocess.run, []

    def run(argv: list[str], *args: object, **kwargs: object) -> object:
        if tool in argv[:3]:
            calls.append(argv)
            assert not fail, f"{tool} called: {argv}"
        return real(argv, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(fetch.subprocess, "run", run)
    return calls


# -- pypi -----------------------------------------------------------------------------
def test_pypi_wheel_is_imported_once_and_cached(tmp_path: Path, monkeypatch) -> None:
    source = make(tmp_path, "pypi: six==1.16.0")
    first = source.frontier()
    assert '__version__ = "1.16.0"' in show(source, "six.py")
    assert "six-1.16.0.dist-info/METADATA" in git(
        source.repo, "ls-tree", "-r", "--name-only", first
    )
    assert subject(source) == "import pypi six==1.16.0"
    cached = list((tmp_path / ".autoopt" / "downloads" / "pypi" / "six-1.16.0").glob("*.whl"))
    assert [p.name for p in cached] == ["six-1.16.0-py2.py3-none-any.whl"]

    calls = spy(monkeypatch, "pip")
    # A re-ensure (a second server process) is a no-op; another target with the same pin
    # imports from the cache, to the same commit (fixed identity and date).
    assert Source(source.workspace, source.spec).frontier() == first
    assert make(tmp_path, "pypi: six==1.16.0", name="other").frontier() == first
    assert calls == []


def test_pypi_sdist_forced_strips_the_top_folder(tmp_path: Path) -> None:
    source = make(tmp_path, "pypi: six==1.16.0\ndist: sdist")
    source.ensure()
    names = git(source.repo, "ls-tree", "--name-only", FRONTIER).split()
    assert {"setup.py", "six.py", "PKG-INFO"} <= set(names)
    assert subject(source) == "import pypi six==1.16.0 (sdist)"


def test_pypi_platform_wheel_is_taken_only_when_forced(tmp_path: Path) -> None:
    """`dist: wheel` takes the wheel pip picked for this machine (chromadb's manylinux one);
    unforced, a cached platform wheel is no pure-Python wheel and is not reused."""
    cache = tmp_path / "chromadb-1.5.9"
    cache.mkdir()
    wheel = cache / "chromadb-1.5.9-cp39-abi3-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(b"")
    assert fetch._cached_dist(cache, "wheel") == wheel
    assert fetch._cached_dist(cache, None) is None


def test_pypi_needs_an_exact_pin(tmp_path: Path) -> None:
    for pin in ("six", "six>=1.16", "six==", "six==1.16.0; python_version>'3'"):
        with pytest.raises(TargetSpecError, match="not an exact pin: write name==version"):
            make(tmp_path, f"pypi: {pin}").ensure()


def test_pypi_unknown_version_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TargetSpecError) as err:
        make(tmp_path, "pypi: six==0.0.999").ensure()
    text = str(err.value)
    assert text.startswith("cannot fetch six==0.0.999 from the package index: ")
    assert "No matching distribution" in text
    assert "`pip index versions six`" in text and "repo: local" in text


def test_pypi_unreachable_index_says_so_without_trying_the_sdist(tmp_path: Path, monkeypatch):
    for key, value in {
        "PIP_CONFIG_FILE": os.devnull,  # none of this machine's mirrors
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "1",
    }.items():
        monkeypatch.setenv(key, value)
    calls = spy(monkeypatch, "pip", fail=False)
    with pytest.raises(TargetSpecError) as err:
        make(tmp_path, "pypi: six==1.16.0").ensure()
    assert "cannot fetch six==1.16.0 from the package index: " in str(err.value)
    assert "Connection refused" in str(err.value)
    assert [argv[5] for argv in calls] == ["--only-binary=:all:"]


def test_dist_needs_pypi_and_a_known_kind(tmp_path: Path) -> None:
    with pytest.raises(TargetSpecError, match="dist: needs pypi:"):
        make(tmp_path, "repo: local\npath: src\ndist: sdist")
    with pytest.raises(TargetSpecError, match=r"dist must be one of sdist \| wheel, not 'egg'"):
        make(tmp_path, "pypi: six==1.16.0\ndist: egg")


# -- safe unpacking --------------------------------------------------------------------
def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for info in members:
            t.addfile(info, io.BytesIO(b"x") if info.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    "members",
    [
        [_file("pkg-1.0/ok.py"), _file("pkg-1.0/../../evil")],
        [_file("/tmp/evil")],
        [_link("pkg-1.0/up", "../../.."), _file("pkg-1.0/ok.py")],
        [_link("pkg-1.0/etc", "/etc"), _file("pkg-1.0/etc/evil")],
    ],
    ids=["dotdot", "absolute", "link-up", "link-absolute"],
)
def test_archives_leading_outside_are_refused(tmp_path: Path, members) -> None:
    archive = _tar(tmp_path / "pkg-1.0.tar.gz", members)
    with pytest.raises(TargetSpecError, match=r"refusing|cannot unpack"):
        fetch.unpack(archive, tmp_path / "out" / "x")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "evil").exists()


def test_zip_with_dotdot_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/__init__.py", "")
        z.writestr("../evil.py", "")
    with pytest.raises(TargetSpecError, match=r"refusing .*'\.\./evil\.py' leads outside"):
        fetch.unpack(archive, tmp_path / "out")


def test_a_link_outside_an_unpacked_tree_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "ok").symlink_to("ok.py")
    fetch.check_links(tmp_path / "tree")
    (tmp_path / "tree" / "out").symlink_to(tmp_path)
    with pytest.raises(TargetSpecError, match="out links outside it"):
        fetch.check_links(tmp_path / "tree")


# -- git at a commit or tag ------------------------------------------------------------
@pytest.fixture
def upstream(tmp_path: Path) -> tuple[str, str, str]:
    """A bare repository with two commits (app.py: v = 1, then v = 2) and tag v1 on the
    first; (url, first commit, second commit)."""
    work, bare = tmp_path / "up-work", tmp_path / "up.git"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    commits = []
    for v in (1, 2):
        (work / "app.py").write_text(f"v = {v}\n")
        git(work, "add", "app.py")
        git(work, "commit", "-q", "-m", f"v{v}")
        commits.append(git(work, "rev-parse", "HEAD").strip())
    git(work, "tag", "-a", "v1", "-m", "first", commits[0])
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return f"file://{bare}", commits[0], commits[1]


def test_git_at_a_tag_or_commit(tmp_path: Path, upstream) -> None:
    url, first, second = upstream
    for name, pin in (("head", ""), ("tag", "\ncommit: v1"), ("sha", f"\ncommit: {first}")):
        source = make(tmp_path / name, f"repo: {url}{pin}")
        want = second if name == "head" else first
        assert source.frontier() == want
        assert show(source, "app.py") == f"v = {2 if name == 'head' else 1}\n"
        assert git(source.repo, "rev-parse", IMPORTED).strip() == want


def test_git_repin_moves_an_unmoved_frontier(tmp_path: Path, upstream) -> None:
    url, first, second = upstream
    assert make(tmp_path, f"repo: {url}\ncommit: v1").frontier() == first
    assert make(tmp_path, f"repo: {url}\ncommit: {second[:10]}").frontier() == second


def test_git_unknown_commit_or_tag(tmp_path: Path, upstream) -> None:
    url = upstream[0]
    for pin in ("v9", "0" * 40):
        with pytest.raises(TargetSpecError, match=f"commit: {pin} is no commit or tag of"):
            make(tmp_path / pin, f"repo: {url}\ncommit: {pin}").ensure()


def test_clone_setup_checks_out_the_pin(tmp_path: Path, upstream) -> None:
    url, first, _ = upstream
    script = scripts.clone_setup(url, "main", "v1")
    env = {**os.environ, "REPO": str(tmp_path / "repo"), "BASE": first}
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=True, env=env)
    assert git(tmp_path / "repo", "rev-parse", "HEAD").strip() == first
    assert (tmp_path / "repo" / "app.py").read_text() == "v = 1\n"


# -- debian ----------------------------------------------------------------------------
def _debian_unreachable() -> str | None:
    """Why the Debian test cannot run here, or None."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("apt-get", "dpkg-source")):
        return "needs root with apt-get and dpkg-source"
    lines = fetch.debsrc_lines()
    if not lines:
        return "no Debian sources in /etc/apt"
    url = urlparse(next(w for w in lines[0].split() if "://" in w))
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError as err:
        return f"the Debian archive {url.hostname} is unreachable: {err}"
    return None


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")
def test_debian_not_installed_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TargetSpecError, match="install a binary package built from it"):
        make(tmp_path, "debian: no-such-source-pkg").ensure()


def test_debian_source_at_the_installed_version(tmp_path: Path, monkeypatch) -> None:
    if reason := _debian_unreachable():
        pytest.skip(reason)
    _, version = fetch.debian_pin("hostname")  # essential: installed on every Debian system
    source = make(tmp_path, "debian: hostname")
    first = source.frontier()
    assert subject(source) == f"import debian hostname={version}"
    names = git(source.repo, "ls-tree", "-r", "--name-only", first).split()
    assert "hostname.c" in names and "debian/changelog" in names
    assert not any(n.startswith(".pc/") for n in names)
    calls = spy(monkeypatch, "apt-get")
    assert make(tmp_path, "debian: hostname", name="other").frontier() == first
    assert calls == []
