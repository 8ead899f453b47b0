"""Child processes: own process group, output to files, exact peak RSS from wait4.

A process is reaped by os.wait4 (not by asyncio's child watcher), so its rusage — the
kernel's record of its peak RSS — is kept. Stopping escalates SIGTERM -> SIGKILL on the
whole group, and is safe to call twice. Each child has a scope (tools/contain.py): when it
ends or is stopped, whatever it started is killed too, daemons that left its group included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from autoopt.tools import contain, pinning

POLL_S = 0.02
FAST_POLL_S, FAST_FOR_S = 0.002, 0.25  # most processes end within a quarter second


def process_started(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), or None when there is none: with the pid,
    it tells a process from a later one that got the same pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass
class Exit:
    """How a process ended."""

    code: int
    signal: int | None
    max_rss_kb: int
    cpu_s: float
    elapsed_s: float


@dataclass
class Child:
    """A started process and where its output goes."""

    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    scope: str = ""
    started: float = field(default_factory=time.monotonic)
    exit: Exit | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> Exit | None:
        """Reap without blocking; the Exit once the process is gone."""
        if self.exit is not None:
            return self.exit
        try:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.exit = Exit(-1, None, 0, 0.0, time.monotonic() - self.started)
            return self.exit
        if pid == 0:
            return None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -(sig or 0)
        self.exit = Exit(
            code=code,
            signal=sig,
            max_rss_kb=usage.ru_maxrss,
            cpu_s=usage.ru_utime + usage.ru_stime,
            elapsed_s=time.monotonic() - self.started,
        )
        self.popen.returncode = code  # tell Popen it is reaped
        return self.exit

    async def wait(self, timeout: float | None = None) -> Exit | None:
        """Wait for the end; None when `timeout` passed first."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while (done := self.poll()) is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            await anyio.sleep(FAST_POLL_S if now - start < FAST_FOR_S else POLL_S)
        return done

    async def stop(self, grace: float = 5.0) -> Exit:
        """SIGTERM the group, SIGKILL after `grace`; idempotent; runs even when cancelled."""
        with anyio.CancelScope(shield=True):
            if self.poll() is None:
                kill_group(self.pid, signal.SIGTERM)
                if await self.wait(grace) is None:
                    kill_group(self.pid, signal.SIGKILL)
                    await self.wait()
            kill_group(self.pid, signal.SIGKILL)  # leftovers in the group
            await sweep(self.scope)
            assert self.exit is not None
            return self.exit

    def tail(self, lines: int = 30) -> str:
        return tail_text(self.stderr, lines) or tail_text(self.stdout, lines)


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def sweep(scope: str) -> None:
    """Kill what is left in `scope` (off the event loop: it waits for the kills)."""
    if scope:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(contain.sweep, scope)


def spawn(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    logs: Path,
    name: str,
    scope: str | None = None,
) -> Child:
    """Start `argv` in its own session (process group) and scope (a fresh one unless
    given), output to `<logs>/<name>.out|.err`."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    scope = scope or contain.new_scope()
    with open(out, "wb") as fout, open(err, "wb") as ferr:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, contain.ENV: scope},
            stdin=subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
            preexec_fn=pinning.preexec(pinning.current(), contain.prepare(scope)),
        )
    return Child(popen, out, err, scope=scope)


async def run(
    argv: list[str], *, cwd: Path, env: dict[str, str], logs: Path, name: str, timeout: float
) -> tuple[Child, Exit, bool]:
    """Run to completion; (child, exit, timed_out). A cancel stops the whole group."""
    child = spawn(argv, cwd=cwd, env=env, logs=logs, name=name)
    try:
        done = await child.wait(timeout)
    except BaseException:
        await child.stop(grace=2.0)
        raise
    if done is None:
        return child, await child.stop(grace=2.0), True
    kill_group(child.pid, signal.SIGKILL)  # no orphans left in its group
    await sweep(child.scope)  # nor anywhere else
    return child, done, False


def tail_text(path: Path, lines: int = 30, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A small, explicit environment for children (PATH, HOME, LANG + what we set)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "USER")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(extra or {})
    return env
