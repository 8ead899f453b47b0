"""Each target's code in a git repository the server owns; revisions = base commit + patch.

`repo: local` targets are imported from their `path` into a fresh repository, with a fixed
author and date so the same tree always gives the same commit; `pypi:` and `debian:`
targets are fetched once (tools/fetch.py) and imported the same way; git URLs are cloned,
at `commit:` when given. Builds happen in worktrees at exact revisions, never in the
user's tree.

Several server processes may share one workspace: every step that changes the repository's
refs or worktree admin files holds a per-target lock (`<sources>/.<name>.lock`), and an
import hashes the user's folder through a private index, so nothing shared is half-written.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import keyword
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import threading
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from autoopt.tools import fetch
from autoopt.tools.errors import InvalidName, PatchError, RuleViolation, TargetSpecError
from autoopt.tools.journal import Journal, Step
from autoopt.tools.state import locked
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workspace import Workspace, inside

FRONTIER = "refs/autoopt/frontier"
IMPORTED = "refs/autoopt/imported"
PIN = "refs/autoopt/pin"  # a `commit:` fetched from origin
_IDENTITY = {
    "GIT_AUTHOR_NAME": "autoopt",
    "GIT_AUTHOR_EMAIL": "autoopt@localhost",
    "GIT_COMMITTER_NAME": "autoopt",
    "GIT_COMMITTER_EMAIL": "autoopt@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}
# git's empty tree (SHA-1 and SHA-256 repositories): never imported.
EMPTY_TREES = frozenset(
    {
        "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
    }
)
# What an import leaves out (as shutil.ignore_patterns("__pycache__", "*.pyc") did).
_IGNORED = ("__pycache__", "*.pyc")
SEARCH_TIMEOUT_S = 5.0  # a search_source pattern runs this long at most
LINE_CAP = 2000  # characters of one search hit
_EXCLUDE = tuple(f":(exclude,glob){p}" for p in ("**/__pycache__/**", "**/*.pyc", "**/*.pyc/**"))


class PatchInfo(BaseModel):
    """What a patch touches, and its identity."""

    files: list[str]
    sha256: str
    numeric_only: bool


def git(
    repo: Path,
    *args: str,
    input_text: str | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> str:
    env = {**os.environ, **_IDENTITY, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=input_text,
        capture_output=True,
        text=True,
        env=env,
    )
    if check and proc.returncode != 0:
        raise PatchError(f"git {' '.join(args[:3])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def patch_hash(patch: str) -> str:
    return hashlib.sha256(patch.encode()).hexdigest()


def code_tokens(path: str, text: str) -> list[str]:
    """The code of a file as tokens, comments and layout left out (Python: `tokenize`, its
    indentation kept; C-like files: // and /* */; shell-like files: #); a number is one
    token with its sign, marked by a leading NUL."""
    name = path.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else name
    if ext in ("py", "pyi") and (tokens := _python_tokens(text)) is not None:
        return _signed(tokens)
    comments = "#" if (ext in _HASH_EXT or name in _HASH_NAMES or ext in ("py", "pyi")) else ""
    comments += "c" if ext in _C_EXT else ""
    found = ((m.lastgroup, m.group()) for m in _TOKEN_RE[comments].finditer(text))
    return _signed([("\0" if k == "num" else "") + t for k, t in found if k != "skip"])


def is_numeric_only(changes: list[tuple[str, str | None, str | None]]) -> bool:
    """True when each (path, old text, new text) differs only in numeric literals once
    comments and layout are left out, and some number changed (None: no such file)."""
    numbers = False
    for path, old, new in changes:
        if old is None or new is None:
            return False
        a, b = code_tokens(path, old), code_tokens(path, new)
        if len(a) != len(b):
            return False
        for x, y in zip(a, b, strict=True):
            if x != y and not x[:1] == y[:1] == "\0":
                return False
            numbers |= x != y
    return numbers


def _python_tokens(text: str) -> list[str] | None:
    """Python's tokens without comments and non-logical newlines; None when it cannot
    tokenize (the generic tokenizer then reads it)."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
    layout = {tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE}
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in layout:
                out.append(tokenize.tok_name[tok.type])
            elif tok.type not in skip:
                out.append(("\0" if tok.type == tokenize.NUMBER else "") + tok.string)
    except (tokenize.TokenError, SyntaxError):
        return None
    return out


def _signed(tokens: list[str]) -> list[str]:
    """Fold a unary + or - into the number after it, so `1` to `-1` is a numeric change."""
    out: list[str] = []
    for tok in tokens:
        before = out[-2] if len(out) > 1 else ""
        operand = before[:1] == "\0" or before in (")", "]", "}") or (
            (before[:1].isalpha() or before[:1] == "_") and not keyword.iskeyword(before)
        )
        if tok[:1] == "\0" and out and out[-1] in ("-", "+") and not operand:
            out[-1] = "\0" + out[-1] + tok[1:]
        else:
            out.append(tok)
    return out


_C_EXT = frozenset(
    re.findall(r"\w+", "c h cc cpp cxx hpp hh hxx go rs java js mjs ts jsx tsx kt scala "
               "swift cs m mm zig proto css scss less dart groovy php")
)
_HASH_EXT = frozenset(
    re.findall(r"\w+", "sh bash zsh rb pl pm r yaml yml toml cfg conf ini mk cmake pyx pxd php")
)
_HASH_NAMES = frozenset({"Makefile", "makefile", "GNUmakefile", "Dockerfile", "CMakeLists.txt"})
_STRING = r"""(?P<str>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
_NUM = r"(?P<num>(?:\d|\.\d)(?:[eEpP][-+]|[\w.])*)"


def _token_re(comments: str) -> re.Pattern[str]:
    skip = [r"\s+"]
    if "c" in comments:
        skip += [r"//[^\n]*", r"/\*.*?(?:\*/|\Z)"]
    if "#" in comments:
        skip += [r"#[^\n]*"]
    return re.compile(
        rf"(?P<skip>{'|'.join(skip)})|{_STRING}|{_NUM}|(?P<word>[^\W\d]\w*)|(?P<op>\S)",
        re.DOTALL,
    )


_TOKEN_RE = {k: _token_re(k) for k in ("", "#", "c", "#c")}


class Source:
    """The server-owned repository of one target."""

    def __init__(self, workspace: Workspace, spec: TargetSpec) -> None:
        self.workspace = workspace
        self.spec = spec
        self.repo = workspace.state_dir / "sources" / spec.name

    # -- the repository -------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """The per-target lock (across processes) for ref and worktree-admin steps."""
        with locked(self.repo.parent / f".{self.spec.name}.lock"):
            yield

    def ensure(self) -> Path:
        """Clone, fetch or import the source once; re-import a local tree that changed."""
        kind = self.spec.source.kind
        if kind == "local":
            self._import_local()
        elif kind != "git":
            self._import_fetched()
        elif not (self.repo / ".git").exists():
            self._clone()
        elif self.spec.source.commit:
            self._repin()
        return self.repo

    def _clone(self) -> None:
        """Clone into a private folder and rename it into place, so no process ever sees a
        half-made repository; the lock keeps a second process from cloning too."""
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if (self.repo / ".git").exists():
                return
            tmp = Path(tempfile.mkdtemp(dir=self.repo.parent, prefix=f".{self.spec.name}.clone-"))
            try:
                clone = tmp / "repo"
                src = self.spec.source
                # At a pinned commit every branch is fetched anyway: no --branch to get wrong.
                branch = [] if src.commit else ["--branch", src.branch]
                proc = subprocess.run(
                    ["git", "clone", *branch, src.repo, str(clone)], capture_output=True, text=True
                )
                if proc.returncode != 0:
                    raise TargetSpecError(
                        f"cannot clone {src.repo} (branch {src.branch}) for target "
                        f"{self.spec.name}: {proc.stderr.strip()[-500:]}"
                    )
                base = self._pinned(clone) if src.commit else "HEAD"
                git(clone, "update-ref", IMPORTED, base)
                git(clone, "update-ref", FRONTIER, base)
                try:
                    clone.rename(self.repo)
                except OSError as err:
                    raise TargetSpecError(
                        f"cannot clone target {self.spec.name} into {self.repo}: {err}"
                    ) from err
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def _pinned(self, repo: Path) -> str:
        """The commit `commit:` names (a commit id or tag), fetched when `repo` lacks it."""
        want = self.spec.source.commit or ""
        found = None
        if not want.startswith("-"):
            found = _git_ok(repo, "rev-parse", "-q", "--verify", f"{want}^{{commit}}")
            if not found:
                git(repo, "update-ref", "-d", PIN)
                git(repo, "fetch", "-q", "origin", f"+{want}:{PIN}", check=False)
                found = _git_ok(repo, "rev-parse", "-q", "--verify", f"{PIN}^{{commit}}")
        if not found:
            raise TargetSpecError(
                f"target {self.spec.name}: commit: {want} is no commit or tag of "
                f"{self.spec.source.repo}; give a commit id or tag that exists there"
            )
        return found

    def _repin(self) -> None:
        """Move the base to a changed `commit:` (no network when the clone holds it)."""
        pinned = _git_ok(self.repo, "rev-parse", f"{self.spec.source.commit}^{{commit}}") or ""
        known = _git_ok(self.repo, "rev-parse", "-q", "--verify", IMPORTED)
        if pinned and pinned == known:
            return
        with self._lock():
            commit, (previous, frontier) = self._pinned(self.repo), self._heads()
            if commit != previous:
                self._set_base(commit, previous, frontier)

    def _init_local(self) -> None:
        """An empty repository for a local import, made aside and moved into place."""
        self.repo.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if (self.repo / ".git").exists():
                return
            tmp = Path(tempfile.mkdtemp(dir=self.repo.parent, prefix=f".{self.spec.name}.init-"))
            try:
                git(tmp, "init", "-q", "-b", self.spec.source.branch)
                (tmp / ".git").rename(self.repo / ".git")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def _import_local(self) -> None:
        """Commit the folder's tree when it differs from the last import.

        Fast path, no lock: hash the folder through a private index and compare with the
        imported tree. Otherwise, under the lock, hash again (a view older than the last
        import must not win), commit, and move the refs in one compare-and-swap transaction.
        """
        if not self.spec.source.path:
            raise TargetSpecError(f"target {self.spec.name}: 'repo: local' needs 'path:'")
        folder = inside(self.workspace.root, self.spec.source.path)
        if not folder.is_dir():
            raise TargetSpecError(f"target {self.spec.name}: source path {folder} is not a folder")
        if not (self.repo / ".git").exists():
            self._init_local()
        tree_id = self._folder_tree(folder)
        known = _git_ok(self.repo, "rev-parse", f"{IMPORTED}^{{tree}}", FRONTIER, "--")
        if known is not None and known.split()[0] == tree_id:
            return
        self._commit_import(lambda: self._folder_tree(folder), f"import {self.spec.source.path}")

    def _import_fetched(self) -> None:
        """Fetch and import a `pypi:` or `debian:` source once. The import's message names
        the pin, so a later ensure() is a no-op without network."""
        src, downloads = self.spec.source, self.workspace.state_dir / "downloads"
        if src.pypi:
            label = "pypi {}=={}".format(*fetch.pypi_pin(src.pypi))
            label += f" ({src.dist})" if src.dist else ""
        else:
            name, version = fetch.debian_pin(src.debian or "")
            label = f"debian {name}={version}"
        message = f"import {label}"
        if not (self.repo / ".git").exists():
            self._init_local()
        out = _git_ok(self.repo, "for-each-ref", "--format=%(refname) %(subject)", "refs/autoopt/")
        refs = dict(line.split(" ", 1) for line in (out or "").splitlines())
        if FRONTIER in refs and refs.get(IMPORTED) == message:
            return
        with tempfile.TemporaryDirectory(prefix="autoopt-fetch-") as tmp:
            if src.pypi:
                tree = fetch.unpack(fetch.pypi_archive(src.pypi, src.dist, downloads), Path(tmp))
            else:
                tree = fetch.debian_tree(name, version, downloads, Path(tmp))
            self._commit_import(lambda: self._folder_tree(tree), message)

    def _commit_import(self, tree_of: Callable[[], str], message: str) -> None:
        """Under the lock, hash the tree again (a view older than the last import must not
        win) and commit it as the new import, unless the last import is the same."""
        with self._lock():
            tree_id = tree_of()
            previous, frontier = self._heads()
            same = previous and _tree_of(self.repo, previous) == tree_id
            if same and git(self.repo, "log", "-1", "--format=%s", previous).strip() == message:
                if not frontier:
                    git(self.repo, "update-ref", FRONTIER, previous, "")
                return
            parents = ["-p", previous] if previous else []
            commit = git(self.repo, "commit-tree", tree_id, *parents, "-m", message).strip()
            branch = f"update refs/heads/{self.spec.source.branch} {commit}"
            self._set_base(commit, previous, frontier, branch)

    def _heads(self) -> tuple[str, str]:
        """The imported and frontier commits ('' when missing)."""
        return (
            _git_ok(self.repo, "rev-parse", "-q", "--verify", IMPORTED) or "",
            _git_ok(self.repo, "rev-parse", "-q", "--verify", FRONTIER) or "",
        )

    def _set_base(self, commit: str, previous: str, frontier: str, *extra: str) -> None:
        """Move IMPORTED from `previous` to `commit` (and `extra` moves) in one
        compare-and-swap transaction. The frontier follows only while nobody moved it (a
        kept experiment); a frontier on the empty tree (left by older versions) is healed."""
        moves = [_ref_move(IMPORTED, commit, previous), *extra]
        if not frontier or frontier == previous or _tree_of(self.repo, frontier) in EMPTY_TREES:
            moves.append(_ref_move(FRONTIER, commit, frontier))
        git(self.repo, "update-ref", "--stdin", input_text="\n".join(moves) + "\n")

    def _folder_tree(self, folder: Path) -> str:
        """The tree id of `folder` as an import stores it, written to the object store only
        (objects are immutable and written atomically); refuses an empty tree.

        A symlink is stored as a link (its target path, as git does), never as what it
        points at; one that is absolute or leads out of `folder` is refused, named."""
        fetch.check_links(folder, f"target {self.spec.name}'s source {folder}")
        with tempfile.TemporaryDirectory(prefix="autoopt-import-") as tmp:
            tree_id = _write_tree(self.repo, folder, str(Path(tmp) / "index"))
        if tree_id in EMPTY_TREES:
            raise TargetSpecError(
                f"target {self.spec.name}: source folder {folder} has no files to import "
                f"({' and '.join(_IGNORED)} are left out); put the target's code there"
            )
        return tree_id

    def frontier(self) -> str:
        """The frontier commit (the base new experiments start from)."""
        self.ensure()
        return git(self.repo, "rev-parse", FRONTIER).strip()

    def set_frontier(self, commit: str) -> None:
        """Move the frontier to `commit` (a kept experiment's B)."""
        with self._lock():
            git(self.repo, "update-ref", FRONTIER, commit)

    def resolve(self, base: str | None) -> str:
        """The full commit id of `base` (a commit, branch or tag), or of the frontier."""
        self.ensure()
        if base is None:
            return git(self.repo, "rev-parse", FRONTIER).strip()
        if base.startswith("-") or not re.fullmatch(r"[\w./@^~-]+", base) or ".." in base:
            raise InvalidName(f"invalid revision {base!r}")
        out = git(self.repo, "rev-parse", "-q", "--verify", f"{base}^{{commit}}", check=False)
        if not out.strip():
            raise InvalidName(
                f"unknown revision {base!r} in {self.spec.name}'s source; "
                "omit base to use the frontier"
            )
        return out.strip()

    # -- patches --------------------------------------------------------------------
    def check_patch(
        self, patch: str, *, allow_constants: bool = False, base: str | None = None
    ) -> PatchInfo:
        """Scope and constant-tuning rules on what git would change: every path the patch
        names (both sides of renames and copies, binary hunks, modes, deletions), then
        every path that differs once it is applied to `base` (default: the frontier) in a
        scratch index. Raises RuleViolation naming the files, PatchError when git cannot
        apply it."""
        commit = self.resolve(base)
        with tempfile.TemporaryDirectory(prefix="autoopt-check-") as tmp:
            patch_file, env = Path(tmp) / "patch.diff", {"GIT_INDEX_FILE": f"{tmp}/index"}
            patch_file.write_text(patch)
            declared = _declared_files(self.repo, patch_file, patch)
            self._check_scope(declared)
            git(self.repo, "read-tree", commit, env=env)
            applied = subprocess.run(
                ["git", "-C", str(self.repo), "apply", "--cached", str(patch_file)],
                capture_output=True, text=True, env={**os.environ, **env},
            )
            if applied.returncode != 0:
                raise PatchError(
                    f"the patch does not apply to {commit[:12]}: "
                    f"{applied.stderr.strip()[-1500:]}. Regenerate it against this base "
                    "(read_source shows the current code)."
                )
            tree = git(self.repo, "write-tree", env=env).strip()
        changes = _tree_changes(self.repo, commit, tree)
        if not changes:
            raise PatchError(f"the patch changes nothing in {commit[:12]}")
        files = list(dict.fromkeys([*declared, *changes]))
        self._check_scope(files)
        numeric = is_numeric_only([(p, *_blob_pair(self.repo, *c)) for p, c in changes.items()])
        if numeric and not allow_constants:
            raise RuleViolation(
                "the patch only changes numeric literals: that is configuration tuning, not a "
                "code-level optimization (the methodology asks: does it change HOW the code "
                "works, or just WHAT numbers it uses?). Change the code, or set "
                "allow_constant_tuning=true to run it anyway (recorded with the run)."
            )
        return PatchInfo(files=files, sha256=patch_hash(patch), numeric_only=numeric)

    def _check_scope(self, files: list[str]) -> None:
        bad = [f for f in files if ".." in f.split("/") or f.startswith("/")]
        outside = [f for f in files if f not in bad and not self.spec.is_editable(f)]
        if bad or outside:
            editable = ", ".join(self.spec.scope.editable) or "(nothing)"
            raise RuleViolation(
                f"the patch touches files outside {self.spec.name}'s editable scope: "
                f"{', '.join(bad + outside)}. Editable: {editable}; read-only: "
                f"{', '.join(self.spec.scope.readonly) or '(none)'}."
            )

    def worktree(self, commit: str, dest: Path, patch: str | None, journal: Journal) -> str:
        """Check out `commit` at `dest`, apply and commit `patch`; the tree's commit id."""
        self._add_worktree(commit, dest)
        journal.add(_checkout_step(commit, dest))
        if not patch:
            return commit
        return self._apply(commit, dest, patch, dest.parent / "patch.diff", None, journal)

    def slot_worktree(
        self,
        commit: str,
        dest: Path,
        patch: str | None,
        files: list[str],
        patch_file: Path,
        journal: Journal,
        note: str,
        same: str | None = None,
    ) -> str:
        """Re-use the persistent tree at `dest` (a build-cache slot; made when missing or
        broken): force-check out `commit` there, so git rewrites only the files that differ
        and the build products (untracked) stay, then apply `patch` and commit only its
        `files`; `same` is the slot's commit when it already holds this base + patch (kept
        as it is). The journal records a fresh worktree: a replay is a cold build."""
        head = _git_ok(dest, "rev-parse", "HEAD") if (dest / ".git").is_file() else None
        if head is None:
            shutil.rmtree(dest, ignore_errors=True)
            self._add_worktree(commit, dest)
        elif patch and head == same:  # the same tree again: nothing to rewrite
            git(dest, "update-index", "-q", "--refresh", check=False)
            git(dest, "reset", "-q", "--hard")
        else:  # refresh first: a file only touched (same content) is then not rewritten
            git(dest, "update-index", "-q", "--refresh", check=False)
            git(dest, "checkout", "-q", "--force", "--detach", commit, "--")
        journal.add(_checkout_step(commit, dest, note))
        if not patch:
            return commit
        if head is not None and head == same:
            patch_file.write_text(patch)
            journal.add(_apply_step(dest, patch_file))
            return head
        return self._apply(commit, dest, patch, patch_file, files, journal)

    def _add_worktree(self, commit: str, dest: Path) -> None:
        with self._lock():
            git(self.repo, "worktree", "prune")
            git(self.repo, "worktree", "add", "--detach", "--no-checkout", "-f", str(dest), commit)
        # What `worktree add` runs to check out, done outside the lock.
        git(dest, "reset", "--hard", "-q", "--no-recurse-submodules")

    def _apply(
        self,
        commit: str,
        dest: Path,
        patch: str,
        patch_file: Path,
        files: list[str] | None,
        journal: Journal,
    ) -> str:
        """Apply `patch` in `dest` and commit it (only `files` when given, else all)."""
        patch_file.write_text(patch)
        check = subprocess.run(
            ["git", "apply", "--check", "-v", str(patch_file)],
            cwd=dest,
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise PatchError(
                f"the patch does not apply to {commit[:12]}: {check.stderr.strip()[-1500:]}. "
                "Regenerate it against this base (read_source shows the current code)."
            )
        step = journal.add(_apply_step(dest, patch_file))
        subprocess.run(step.argv, cwd=dest, check=True, capture_output=True)
        if files is None:
            git(dest, "add", "-A")
        else:  # a slot's build products are untracked files: never add them
            git(dest, "add", "--", *files)
        git(dest, "commit", "-q", "-m", "autoopt: apply patch")
        return git(dest, "rev-parse", "HEAD").strip()

    def remove_worktree(self, dest: Path) -> None:
        """Delete the tree, then drop its admin entry under the lock."""
        shutil.rmtree(dest, ignore_errors=True)
        with self._lock():
            git(self.repo, "worktree", "prune", check=False)

    def bundle(self, commit: str, dest: Path) -> None:
        """A git bundle holding `commit` as refs/heads/autoopt-base, so a clean shell can
        check it out. The ref lives in a private repository borrowing this one's objects, so
        concurrent callers never share it."""
        ref = "refs/heads/autoopt-base"
        with tempfile.TemporaryDirectory(prefix="autoopt-bundle-") as tmp:
            private = Path(tmp)
            git(private, "init", "-q", "--bare")
            objects = (self.repo / ".git" / "objects").resolve()
            (private / "objects" / "info" / "alternates").write_text(f"{objects}\n")
            git(private, "update-ref", ref, commit)
            git(private, "bundle", "create", str(Path(dest).resolve()), ref)

    # -- reading --------------------------------------------------------------------
    def read(self, path: str, start: int, end: int, revision: str | None) -> tuple[str, int]:
        """Lines start..end (1-based, inclusive) of `path` at a revision; and the line count.
        Read from the revision's tree only: a symlink there is named, never followed."""
        commit = self.resolve(revision)
        _check_rel(path)
        path = posixpath.normpath(path)  # ./a and a//b as git names them (no '..' left)
        entry = git(self.repo, "ls-tree", "-z", "--full-tree", commit, "--", path,
                    env={"GIT_LITERAL_PATHSPECS": "1"}).split("\0")[0]
        meta, _, found = entry.partition("\t")
        mode, kind, blob = meta.split()[:3] if found == path else ("", "", "")
        if kind != "blob":
            what = "a folder" if kind == "tree" else "no file"
            raise InvalidName(
                f"{path!r} is {what} at {commit[:12]} of {self.spec.name}; "
                "search_source lists what exists"
            )
        data = subprocess.run(
            ["git", "-C", str(self.repo), "cat-file", "blob", blob], capture_output=True
        ).stdout
        text = data.decode("utf-8", "replace")
        if mode == "120000":
            raise InvalidName(
                f"{path!r} is a symlink (to {text!r}) at {commit[:12]} of {self.spec.name}; "
                "links are not followed: read the file it names"
            )
        lines = text.splitlines()
        chosen = lines[max(0, start - 1) : end]
        width = len(str(end))
        text = "\n".join(f"{n:>{width}}  {t}" for n, t in enumerate(chosen, start=max(1, start)))
        return text, len(lines)

    def search(self, pattern: str, glob: str | None, revision: str | None, limit: int) -> list[str]:
        """`git grep -n -E` over a revision's blobs (a symlink's blob is its target path);
        lines as path:line:text. Bounded: SEARCH_TIMEOUT_S, `limit` lines, LINE_CAP
        characters a line."""
        commit = self.resolve(revision)
        if "\x00" in pattern:
            raise InvalidName("a search pattern cannot hold a NUL character")
        argv = ["git", "-C", str(self.repo), "grep", "-n", "-I", "-E", "-e", pattern, commit]
        if glob:
            _check_rel(glob)
            argv += ["--", glob]
        lines, code, err = bounded_lines(argv, limit, SEARCH_TIMEOUT_S)
        if code is None:
            raise InvalidName(
                f"search pattern {pattern!r} took over {SEARCH_TIMEOUT_S:g} s and was "
                "stopped: simplify it (no nested or back-referenced groups such as "
                "(.*)(.*)\\2), or narrow it with glob"
            )
        if code not in (0, 1) and len(lines) < limit:
            raise InvalidName(f"bad search pattern {pattern!r}: {err.strip()[-500:]}")
        prefix = f"{commit}:"
        return [line.removeprefix(prefix) for line in lines]


def bounded_lines(
    argv: list[str], limit: int, timeout: float, cap: int = 0
) -> tuple[list[str], int | None, str]:
    """Run `argv` and read at most `limit` lines of its output, each cut at `cap`
    characters (LINE_CAP by default), then stop it. (lines, exit code or None when it ran
    past `timeout` seconds and was killed, stderr's tail)."""
    cap = cap or LINE_CAP
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    with contextlib.suppress(OSError):  # below the server's priority: it stays responsive
        os.setpriority(os.PRIO_PROCESS, proc.pid, 10)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        while len(lines) < limit and (raw := proc.stdout.readline(cap)):
            cut = not raw.endswith(b"\n")
            while cut and (rest := proc.stdout.readline(cap)) and not rest.endswith(b"\n"):
                pass
            lines.append(raw.decode("utf-8", "replace").rstrip("\n") + (" …" if cut else ""))
        if len(lines) >= limit:
            proc.kill()
        err = proc.stderr.read(4096).decode("utf-8", "replace")
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    return lines, (None if expired.is_set() else code), err


def _declared_files(repo: Path, patch_file: Path, patch: str) -> list[str]:
    """The paths a patch names as git reads it (`git apply --numstat -z`), plus the
    sources of its renames and copies (which --numstat leaves out)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "apply", "--numstat", "-z", str(patch_file)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        if "No valid patches" in proc.stderr:
            raise PatchError("the patch touches no file: give a unified diff (git diff output)")
        raise PatchError(f"git cannot read the patch: {proc.stderr.strip()[-1500:]}")
    files = [rec.split("\t", 2)[2] for rec in proc.stdout.split("\0") if rec.count("\t") >= 2]
    for line in patch.splitlines():
        for head in ("rename from ", "copy from "):
            if line.startswith(head):
                files.append(_unquote(line[len(head) :]))
    return list(dict.fromkeys(files))


def _unquote(name: str) -> str:
    """A path as git writes it in a header: C-quoted when it holds special characters."""
    if len(name) > 1 and name[0] == name[-1] == '"':
        return codecs.escape_decode(name[1:-1].encode())[0].decode("utf-8", "replace")
    return name


def _tree_changes(repo: Path, old: str, new: str) -> dict[str, tuple[str, str, str, str]]:
    """path -> (old mode, new mode, old blob, new blob) for every path that differs."""
    out = git(repo, "diff-tree", "-r", "-z", "--no-renames", "--raw", old, new).split("\0")
    changes = {}
    for meta, path in zip(out[0::2], out[1::2], strict=False):
        if meta.startswith(":"):
            old_mode, new_mode, old_blob, new_blob = meta[1:].split()[:4]
            changes[path] = (old_mode, new_mode, old_blob, new_blob)
    return changes


def _blob_pair(
    repo: Path, old_mode: str, new_mode: str, old_blob: str, new_blob: str
) -> tuple[str | None, str | None]:
    """The two sides of a change as text; None for a side that is missing, binary, not a
    regular file, or of another mode."""
    if old_mode != new_mode or old_mode not in ("100644", "100755"):
        return None, None
    texts = []
    for blob in (old_blob, new_blob):
        data = subprocess.run(
            ["git", "-C", str(repo), "cat-file", "blob", blob], capture_output=True
        ).stdout
        texts.append(None if b"\0" in data else data.decode("utf-8", "replace"))
    return texts[0], texts[1]


def _check_rel(path: str) -> None:
    if not path or path.startswith(("/", "-")) or ".." in path.split("/") or "\x00" in path:
        raise InvalidName(f"path {path!r} must be relative to the source root, without '..'")


def _write_tree(repo: Path, tree: Path, index: str) -> str:
    """Stage `tree` (a folder) into the private `index` and write its tree object."""
    env = {**os.environ, **_IDENTITY, "GIT_INDEX_FILE": index}
    base = ["git", "--git-dir", str(repo / ".git"), "--work-tree", str(tree)]
    steps = [[*base, "add", "-A", "-f", "--", ".", *_EXCLUDE], [*base, "write-tree"]]
    for argv in steps:
        proc = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True)
        if proc.returncode != 0:
            raise TargetSpecError(f"cannot import {tree}: {proc.stderr.strip()[-1000:]}")
    return proc.stdout.strip()


def _checkout_step(commit: str, dest: Path, note: str | None = None) -> Step:
    return Step(
        phase="source",
        shell=f'git -C "$REPO" worktree add --detach "$TREE" {commit}',
        argv=["git", "worktree", "add", "--detach", str(dest), commit],
        note=note,
    )


def _apply_step(dest: Path, patch_file: Path) -> Step:
    argv = ["git", "apply", str(patch_file)]
    return Step(phase="source", shell='git -C "$TREE" apply "$PATCH"', argv=argv, cwd=str(dest))


def _git_ok(repo: Path, *args: str) -> str | None:
    """Stdout of a git command, or None when it fails (a missing ref)."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _tree_of(repo: Path, commit: str) -> str:
    return git(repo, "rev-parse", f"{commit}^{{tree}}").strip()


def _ref_move(ref: str, new: str, old: str) -> str:
    """An `update-ref --stdin` line that only succeeds while `ref` is still `old`."""
    return f"update {ref} {new} {old}" if old else f"create {ref} {new}"


__all__ = ["FRONTIER", "PatchInfo", "Source", "code_tokens", "is_numeric_only"]
