"""Incremental build trees: a target's persistent build-cache slots (local backend).

`<state>/buildcache/<target>/slot-<k>/` (k < SLOTS) holds `tree/`, a git worktree of the
source repo kept with its build products across builds, A/B runs and server restarts;
`lock`, flocked for a Build's whole life (the kernel frees it when the server dies); and
`slot.json`, the commit last checked out there. A build takes the free slot that last held
the same tree, else one on the same base, else any free one (used before an empty one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from pydantic import BaseModel

from autoopt.tools.state import load_state, save_model

SLOTS = 3


class SlotState(BaseModel):
    """What a slot's tree holds: the commit checked out (base, or base + patch)."""

    commit: str
    base: str
    patch_sha256: str | None = None
    updated: float = 0.0


class Lease:
    """A held slot: its folder, the flock's descriptor, and what it held when taken."""

    def __init__(self, folder: Path, fd: int, last: SlotState | None) -> None:
        self.folder, self.fd, self.last = folder, fd, last

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def tree(self) -> Path:
        return self.folder / "tree"

    def describe(self) -> str:
        """`slot-k, reused from <commit12>` (or a first build there)."""
        if self.last is None:
            return f"{self.name}, a first build (empty slot)"
        return f"{self.name}, reused from {self.last.commit[:12]}"

    def save(self, commit: str, base: str, patch_sha256: str | None) -> None:
        state = SlotState(commit=commit, base=base, patch_sha256=patch_sha256, updated=time.time())
        save_model(self.folder / "slot.json", state)

    def release(self) -> None:
        """Free the slot (idempotent); its tree stays for the next build."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def slots_dir(state_dir: Path, target: str) -> Path:
    return state_dir / "buildcache" / target


def _state(folder: Path) -> SlotState | None:
    return load_state(folder / "slot.json", SlotState.model_validate, None)


def acquire(state_dir: Path, target: str, base: str, patch_sha256: str | None) -> Lease | None:
    """The best free slot, locked; None when every slot is held."""

    def rank(folder: Path) -> int:
        last = _state(folder)
        if last is None or not (folder / "tree").is_dir():
            return 3
        if last.base == base:
            return 0 if last.patch_sha256 == patch_sha256 else 1
        return 2

    folders = [slots_dir(state_dir, target) / f"slot-{k}" for k in range(SLOTS)]
    for folder in sorted(folders, key=rank):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another build of this or another server
            os.close(fd)
            continue
        tree = folder / "tree"
        return Lease(folder, fd, _state(folder) if tree.is_dir() else None)
    return None
