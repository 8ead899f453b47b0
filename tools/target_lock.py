"""One benchmark at a time per target, across every server process on the workspace.

Two A/B runs of one target at once would share the machine's two cores and each would
measure the other's load, so the second run waits for the first and says so in its
progress. The lock is an fcntl lock on `.autoopt/locks/<target>.lock`; the holder writes
who it is into the file so a waiter can name it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

POLL_S = 0.5


@asynccontextmanager
async def target_lock(
    state_dir: Path, target: str, holder: str, waiting: Callable[[str], Awaitable[None]]
) -> AsyncIterator[None]:
    """Hold the target's lock for the block; `waiting(who)` is awaited once while blocked."""
    path = state_dir / "locks" / f"{target}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    told = True
                    who = path.read_text(errors="replace").strip() or "another server"
                    await waiting(who)
                await anyio.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (server pid {os.getpid()})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
