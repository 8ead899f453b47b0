"""CPU pinning for duet runs: the CPU set the current task's processes run on.

A duet run_ab runs both arms at the same time, each in its own anyio task; the task sets
`pinned(cpus)` and every process it spawns (process.spawn: the service, the batch program,
the workload driver) starts with that affinity (sched_setaffinity before exec), and a docker
container gets `--cpuset-cpus`. A context variable, so two concurrent arms never see each
other's set and no backend signature changes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_CPUS: ContextVar[tuple[int, ...] | None] = ContextVar("autoopt_cpus", default=None)


def current() -> tuple[int, ...] | None:
    """The CPU set of this task's processes, or None (no pinning)."""
    return _CPUS.get()


def cpuset_text(cpus: tuple[int, ...]) -> str:
    """`0,2,3` (what taskset -c and --cpuset-cpus read)."""
    return ",".join(map(str, cpus))


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    token = _CPUS.set(cpus)
    try:
        yield
    finally:
        _CPUS.reset(token)


def usable() -> tuple[int, ...]:
    """The CPUs this process may run on."""
    return tuple(sorted(os.sched_getaffinity(0)))


def halves(cpus: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two disjoint, equal-sized CPU sets (one CPU is left out of an odd count)."""
    if len(cpus) < 2:
        raise ValueError(f"duet needs at least 2 usable CPUs, this process has {len(cpus)}")
    half = len(cpus) // 2
    return cpus[:half], cpus[half : 2 * half]


def preexec(
    cpus: tuple[int, ...] | None, then: Callable[[], None] | None
) -> Callable[[], None] | None:
    """A preexec_fn that pins the child to `cpus` and runs `then` (another preexec_fn)."""
    if cpus is None:
        return then

    def run() -> None:
        os.sched_setaffinity(0, cpus)
        if then is not None:
            then()

    return run
