"""Containment: every process a spawn starts can be found, and killed, as a whole.

A spawned process gets a *scope* `<owner>/<key>` before it runs (owner: the server's pid
and start time; key: a deployment id or a fresh one). The scope lives in the kernel, not in
a file the server might not get to write:
- in the environment variable AUTOOPT_SCOPE, inherited by everything the process starts,
  setsid daemons included;
- in a cgroup of its own (`<cgroup2>/autoopt/<owner>_<key>`), created before the fork and
  joined before exec, where a writable cgroup v2 hierarchy exists. A cgroup also holds the
  descendants that clear their environment.

sweep(scope) kills the scope's cgroup and every process carrying its tag. recover() sweeps
every scope whose server is gone, on any workspace, except the kept ones: a deployment made
with the deploy tool outlives its server by design, so keep(scope) marks it in a folder all
servers on this machine share (removed at reboot, as the processes are), until it is swept.
kill -9 of a server leaves nothing else running once the next server starts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

ENV = "AUTOOPT_SCOPE"
_SCOPE = re.compile(r"(\d+)\.(\d+)/([A-Za-z0-9_.-]+)")


@functools.cache
def owner() -> str:
    """This server's part of every scope: pid.start (centiseconds since the epoch)."""
    return f"{os.getpid()}.{_started(os.getpid()) or 0}"


def _started(pid: int) -> int | None:
    from autoopt.tools.process import process_started

    started = process_started(pid)
    return None if started is None else round(started * 100)


def new_scope(key: str | None = None) -> str:
    return f"{owner()}/{key or uuid4().hex[:10]}"


def _name(scope: str) -> str:
    """A scope as a file or cgroup name (the owner part holds no '_')."""
    return scope.replace("/", "_")


def _scope(name: str) -> str:
    return name.replace("_", "/", 1)


def _kept_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"autoopt-{os.getuid()}" / "kept-scopes"


def keep(scope: str) -> None:
    """Mark `scope` as kept: no server's recover() sweeps it, only sweep(scope) itself."""
    folder = _kept_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _name(scope)).touch()


def kept(scope: str) -> bool:
    return (_kept_dir() / _name(scope)).exists()


def owner_alive(scope: str) -> bool:
    """Whether the server that made `scope` still runs (a pid reused later does not count)."""
    m = _SCOPE.fullmatch(scope)
    if m is None:
        return False
    started = _started(int(m[1]))
    return started is not None and abs(started - int(m[2])) <= 1


@functools.cache
def cgroup_root() -> Path | None:
    """`<cgroup2 mount>/<this process's cgroup>/autoopt` when it can be made and used here."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        mine = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mount = next((f[1] for f in map(str.split, mounts) if len(f) > 2 and f[2] == "cgroup2"), None)
    own = next((line[3:] for line in mine if line.startswith("0::")), None)
    if mount is None or own is None:
        return None
    root = Path(mount) / own.lstrip("/") / "autoopt"
    probe = root / f"probe-{os.getpid()}"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        ok = (probe / "cgroup.procs").exists()
        probe.rmdir()
    except OSError:
        return None
    return root if ok else None


def cgroup(scope: str) -> Path | None:
    root = cgroup_root()
    return None if root is None else root / _name(scope)


def prepare(scope: str) -> Callable[[], None] | None:
    """Make the scope's cgroup; the function a child runs before exec to join it."""
    group = cgroup(scope)
    if group is None:
        return None
    try:
        group.mkdir(exist_ok=True)
    except OSError:
        return None
    procs = os.fsencode(group / "cgroup.procs")

    def join() -> None:  # runs in the forked child: no allocation-heavy work here
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return join


@dataclass
class Swept:
    """What a sweep killed: pids and their command lines."""

    scope: str
    killed: dict[int, str]


def sweep(scope: str) -> Swept:
    """SIGKILL everything in `scope` (its cgroup and every process with its tag), wait until
    it is gone, remove the cgroup."""
    me = os.getpid()
    group = cgroup(scope)
    killed: dict[int, str] = {}
    for _ in range(3):  # a process forking while it is killed can add one more round
        members = _cgroup_pids(group)
        pids = {p for p in members | tagged({scope}).get(scope, set()) if _running(p)} - {me}
        if not pids:
            break
        for pid in pids:
            killed.setdefault(pid, _cmdline(pid))
        if group is not None and me not in members:
            with contextlib.suppress(OSError):  # the whole cgroup at once, forks included
                (group / "cgroup.kill").write_text("1")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(pids)
    if group is not None:
        _remove_cgroup(group)
    (_kept_dir() / _name(scope)).unlink(missing_ok=True)
    return Swept(scope, killed)


def recover(keep: set[str]) -> list[Swept]:
    """Sweep every scope whose server is gone, but those in `keep` and the kept ones (a kept
    scope with no process left loses its mark); what was killed."""
    scopes = set(tagged(None))
    root = cgroup_root()
    if root is not None and root.is_dir():
        for group in root.iterdir():
            scope = _scope(group.name)
            if _SCOPE.fullmatch(scope):
                scopes.add(scope)
    folder = _kept_dir()
    marks = {_scope(m.name) for m in folder.iterdir()} if folder.is_dir() else set()
    for mark in marks - scopes:  # nothing carries it any more
        (folder / _name(mark)).unlink(missing_ok=True)
    dead = {scope for scope in scopes - keep - marks if not owner_alive(scope)}
    return [s for s in (sweep(scope) for scope in sorted(dead)) if s.killed]


def tagged(scopes: set[str] | None) -> dict[str, set[int]]:
    """Live processes by scope tag (all tags when `scopes` is None), read from /proc."""
    out: dict[str, set[int]] = {}
    needle = f"{ENV}=".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if needle not in data:
            continue
        for var in data.split(b"\0"):
            if var.startswith(needle):
                scope = var[len(needle):].decode(errors="replace")
                if scopes is None or scope in scopes:
                    out.setdefault(scope, set()).add(int(entry.name))
    return out


def _cgroup_pids(group: Path | None) -> set[int]:
    if group is None:
        return set()
    try:
        return {int(p) for p in (group / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200] or "?"


def _wait_gone(pids: set[int], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_running(p) for p in pids):
            return
        time.sleep(0.01)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _remove_cgroup(group: Path) -> None:
    for _ in range(100):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # still populated for a moment after the kill
            time.sleep(0.01)
