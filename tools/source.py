"""Each target's code in a git repository the server owns; revisions = base commit + patch.

`repo: local` targets are imported from their `path` into a fresh repository, with a fixed
author and date so the same tree always gives the same commit. Builds happen in worktrees
at exact revisions, never in the user's tree.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel

from autoopt.tools.errors import InvalidName, PatchError, RuleViolation, TargetSpecError
from autoopt.tools.journal import Journal, Step
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workspace import Workspace, inside

FRONTIER = "refs/autoopt/frontier"
IMPORTED = "refs/autoopt/imported"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "autoopt",
    "GIT_AUTHOR_EMAIL": "autoopt@localhost",
    "GIT_COMMITTER_NAME": "autoopt",
    "GIT_COMMITTER_EMAIL": "autoopt@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?)")


class PatchInfo(BaseModel):
    """What a patch touches, and its identity."""

    files: list[str]
    sha256: str
    numeric_only: bool


def git(repo: Path, *args: str, input_text: str | None = None, check: bool = True) -> str:
    import os

    env = {**os.environ, **_IDENTITY, "GIT_TERMINAL_PROMPT": "0"}
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


def touched_files(patch: str) -> list[str]:
    """Paths a unified diff touches (both sides of renames), without a/ b/ prefixes."""
    files: list[str] = []
    for line in patch.splitlines():
        if line.startswith(("--- ", "+++ ")):
            name = line[4:].split("\t")[0].strip()
            if name == "/dev/null":
                continue
            if name[:2] in ("a/", "b/"):
                name = name[2:]
            if name not in files:
                files.append(name)
    return files


def is_numeric_only(patch: str) -> bool:
    """True when every changed line differs from its counterpart only in numeric literals."""
    removed, added = [], []
    for line in patch.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    if not removed or len(removed) != len(added):
        return False
    changed = [(r, a) for r, a in zip(removed, added, strict=True) if r != a]
    return bool(changed) and all(
        _NUMBER.sub("#", r).strip() == _NUMBER.sub("#", a).strip() for r, a in changed
    )


class Source:
    """The server-owned repository of one target."""

    def __init__(self, workspace: Workspace, spec: TargetSpec) -> None:
        self.workspace = workspace
        self.spec = spec
        self.repo = workspace.state_dir / "sources" / spec.name

    # -- the repository -------------------------------------------------------------
    def ensure(self) -> Path:
        """Clone or import the source once; re-import a local tree that changed."""
        if self.spec.source.repo == "local":
            self._import_local()
        elif not (self.repo / ".git").exists():
            self.repo.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(
                [
                    "git",
                    "clone",
                    "--branch",
                    self.spec.source.branch,
                    self.spec.source.repo,
                    str(self.repo),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise TargetSpecError(
                    f"cannot clone {self.spec.source.repo} (branch {self.spec.source.branch}) "
                    f"for target {self.spec.name}: {proc.stderr.strip()[-500:]}"
                )
            git(self.repo, "update-ref", FRONTIER, "HEAD")
        return self.repo

    def _import_local(self) -> None:
        if not self.spec.source.path:
            raise TargetSpecError(f"target {self.spec.name}: 'repo: local' needs 'path:'")
        tree = inside(self.workspace.root, self.spec.source.path)
        if not tree.is_dir():
            raise TargetSpecError(f"target {self.spec.name}: source path {tree} is not a folder")
        if not (self.repo / ".git").exists():
            self.repo.mkdir(parents=True, exist_ok=True)
            git(self.repo, "init", "-q", "-b", self.spec.source.branch)
        staging = self.repo.parent / f".{self.spec.name}.import"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(tree, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env_index = str(self.repo / ".git" / "autoopt-import.index")
        tree_id = _write_tree(self.repo, staging, env_index)
        shutil.rmtree(staging, ignore_errors=True)
        previous = git(self.repo, "rev-parse", "-q", "--verify", IMPORTED, check=False).strip()
        if previous and git(self.repo, "rev-parse", f"{previous}^{{tree}}").strip() == tree_id:
            return
        parents = ["-p", previous] if previous else []
        commit = git(
            self.repo,
            "commit-tree",
            tree_id,
            *parents,
            "-m",
            f"import {self.spec.source.path}",
        ).strip()
        git(self.repo, "update-ref", IMPORTED, commit)
        git(self.repo, "update-ref", f"refs/heads/{self.spec.source.branch}", commit)
        frontier = git(self.repo, "rev-parse", "-q", "--verify", FRONTIER, check=False).strip()
        if not frontier or frontier == previous:
            git(self.repo, "update-ref", FRONTIER, commit)

    def frontier(self) -> str:
        self.ensure()
        return git(self.repo, "rev-parse", FRONTIER).strip()

    def set_frontier(self, commit: str) -> None:
        git(self.repo, "update-ref", FRONTIER, commit)

    def resolve(self, base: str | None) -> str:
        """The full commit id of `base` (a commit, branch or tag), or of the frontier."""
        self.ensure()
        if base is None:
            return self.frontier()
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
    def check_patch(self, patch: str, *, allow_constants: bool = False) -> PatchInfo:
        """Scope and constant-tuning rules; raises RuleViolation naming the files."""
        files = touched_files(patch)
        if not files:
            raise PatchError("the patch touches no file: give a unified diff (git diff output)")
        bad = [f for f in files if ".." in f.split("/") or f.startswith("/")]
        outside = [f for f in files if f not in bad and not self.spec.is_editable(f)]
        if bad or outside:
            editable = ", ".join(self.spec.scope.editable) or "(nothing)"
            raise RuleViolation(
                f"the patch touches files outside {self.spec.name}'s editable scope: "
                f"{', '.join(bad + outside)}. Editable: {editable}; read-only: "
                f"{', '.join(self.spec.scope.readonly) or '(none)'}."
            )
        numeric = is_numeric_only(patch)
        if numeric and not allow_constants:
            raise RuleViolation(
                "the patch only changes numeric literals: that is configuration tuning, not a "
                "code-level optimization (the methodology asks: does it change HOW the code "
                "works, or just WHAT numbers it uses?). Change the code, or set "
                "allow_constant_tuning=true to run it anyway (recorded with the run)."
            )
        return PatchInfo(files=files, sha256=patch_hash(patch), numeric_only=numeric)

    def worktree(self, commit: str, dest: Path, patch: str | None, journal: Journal) -> str:
        """Check out `commit` at `dest`, apply and commit `patch`; the tree's commit id."""
        git(self.repo, "worktree", "prune")
        git(self.repo, "worktree", "add", "--detach", "-f", str(dest), commit)
        journal.add(
            Step(
                phase="source",
                shell=f'git -C "$REPO" worktree add --detach "$TREE" {commit}',
                argv=["git", "worktree", "add", "--detach", str(dest), commit],
            )
        )
        if not patch:
            return commit
        patch_file = dest.parent / "patch.diff"
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
        argv = ["git", "apply", str(patch_file)]
        subprocess.run(argv, cwd=dest, check=True, capture_output=True)
        journal.add(
            Step(phase="source", shell='git -C "$TREE" apply "$PATCH"', argv=argv, cwd=str(dest))
        )
        git(dest, "add", "-A")
        git(dest, "commit", "-q", "-m", "autoopt: apply patch")
        return git(dest, "rev-parse", "HEAD").strip()

    def remove_worktree(self, dest: Path) -> None:
        git(self.repo, "worktree", "remove", "--force", str(dest), check=False)
        shutil.rmtree(dest, ignore_errors=True)

    def bundle(self, commit: str, dest: Path) -> None:
        """A git bundle holding `commit`, so a clean shell can check it out."""
        ref = "refs/heads/autoopt-base"
        git(self.repo, "update-ref", ref, commit)
        git(self.repo, "bundle", "create", str(dest), ref)

    # -- reading --------------------------------------------------------------------
    def read(self, path: str, start: int, end: int, revision: str | None) -> tuple[str, int]:
        """Lines start..end (1-based, inclusive) of `path` at a revision; and the line count."""
        commit = self.resolve(revision)
        _check_rel(path)
        proc = subprocess.run(
            ["git", "-C", str(self.repo), "show", f"{commit}:{path}"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise InvalidName(
                f"no file {path!r} at {commit[:12]} of {self.spec.name}; "
                "search_source lists what exists"
            )
        lines = proc.stdout.splitlines()
        chosen = lines[max(0, start - 1) : end]
        width = len(str(end))
        text = "\n".join(f"{n:>{width}}  {t}" for n, t in enumerate(chosen, start=max(1, start)))
        return text, len(lines)

    def search(self, pattern: str, glob: str | None, revision: str | None, limit: int) -> list[str]:
        """`git grep -n -E` over a revision; lines as path:line:text."""
        commit = self.resolve(revision)
        argv = ["git", "-C", str(self.repo), "grep", "-n", "-I", "-E", "-e", pattern, commit]
        if glob:
            _check_rel(glob)
            argv += ["--", glob]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise InvalidName(f"bad search pattern {pattern!r}: {proc.stderr.strip()}")
        prefix = f"{commit}:"
        hits = [line.removeprefix(prefix) for line in proc.stdout.splitlines()]
        return hits[:limit]


def _check_rel(path: str) -> None:
    if path.startswith(("/", "-")) or ".." in path.split("/") or "\x00" in path:
        raise InvalidName(f"path {path!r} must be relative to the source root, without '..'")


def _write_tree(repo: Path, tree: Path, index: str) -> str:
    import os

    env = {**os.environ, **_IDENTITY, "GIT_INDEX_FILE": index, "GIT_WORK_TREE": str(tree)}
    base = ["git", "--git-dir", str(repo / ".git")]
    subprocess.run([*base, "read-tree", "--empty"], env=env, check=True)
    subprocess.run([*base, "add", "-A", "-f", "."], env=env, check=True, cwd=tree)
    return subprocess.run(
        [*base, "write-tree"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


__all__ = ["FRONTIER", "PatchInfo", "Source", "is_numeric_only", "touched_files"]
