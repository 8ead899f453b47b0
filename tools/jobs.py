"""Server-side jobs: long work that outlives the tool call that started it.

A job runs in its owner's task group: the server process that started it. Its record,
`.autoopt/jobs/<id>.json`, holds the kind, status, latest progress, the owner (pid and
process start time) and, once finished, the tool's answer or error, so any server process
on the workspace can report it. A call waits for a job for a bounded time and then answers
either with the result or with the job's progress; `wait` picks up where it left off, in
this process or another. When the owner stops, its jobs are cancelled (status
`interrupted`); a job whose owner died without that is marked interrupted by whoever
reads it next.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, Field

from autoopt.tools.errors import AutooptError, NotFound
from autoopt.tools.process import process_started
from autoopt.tools.prune import prune_jobs
from autoopt.tools.state import load_state, save_model, write_atomic
from autoopt.tools.workspace import check_name

JobStatus = Literal["running", "done", "failed", "cancelled", "interrupted"]
Report = Callable[[float, float | None, str], Awaitable[None]]
POLL_S = 0.5
STOPPED = ("the server stopped (its client closed the connection, or it got SIGTERM or "
            "SIGINT); what was measured so far is kept")


class Owner(BaseModel):
    """A server process, recognised by its pid and start time (pids are reused)."""

    pid: int
    started: float

    @classmethod
    def me(cls) -> Owner:
        return _me()

    def alive(self) -> bool:
        if self == _me():
            return True
        started = process_started(self.pid)
        return started is not None and abs(started - self.started) < 1.0


@functools.cache
def _me() -> Owner:
    """This server process (asked once, when first needed: psutil stays out of start-up)."""
    return Owner(pid=os.getpid(), started=process_started(os.getpid()) or 0.0)


class JobRecord(BaseModel):
    """What any server process can tell about a job."""

    id: str
    kind: str = Field(description="the tool that started it: run_ab, profile_memory, ...")
    target: str
    status: JobStatus = "running"
    owner: Owner
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    done: float = 0
    total: float | None = None
    message: str = ""
    error: str | None = None
    result: dict[str, Any] | None = Field(None, description="the tool's answer, once done")

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def progress_text(self) -> str:
        if not self.done and not self.message:
            return ""
        of = f"/{self.total:g}" if self.total else ""
        return f"{self.done:g}{of} {self.message}".strip()


@dataclass
class _Live:
    """A job running in this process."""

    record: JobRecord
    finished: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    listeners: list[Report] = field(default_factory=list)
    on_stop: Callable[[JobStatus, str], None] | None = None
    stop: tuple[JobStatus, str] | None = None


class Jobs:
    """The jobs of one server process, and the records of every process's jobs."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "jobs"
        self._live: dict[str, _Live] = {}
        self._group: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Jobs]:
        """Host jobs for the block; on exit every job still running is interrupted."""
        async with anyio.create_task_group() as group:
            self._group = group
            watcher = anyio.CancelScope()
            group.start_soon(self._watch_requests, watcher)
            try:
                yield self
            finally:
                self.interrupt_all()
                watcher.cancel()
                self._group = None

    async def _watch_requests(self, scope: anyio.CancelScope) -> None:
        """Stop requests from other servers (cancel_run there): `<id>.stop` files."""
        with scope:
            while True:
                await anyio.sleep(POLL_S)
                self._take_requests()

    def _take_requests(self) -> None:
        for job_id in list(self._live):
            request = self.folder / f"{job_id}.stop"
            if request.exists():
                message = request.read_text(errors="replace") or "stopped by request"
                request.unlink(missing_ok=True)
                self.stop(job_id, "cancelled", message)

    def request_stop(self, job_id: str, message: str) -> None:
        """Ask the server that runs a job to stop it (it checks twice a second)."""
        write_atomic(self.folder / f"{check_name(job_id, 'job id')}.stop", message)

    # -- records ----------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self.folder / f"{check_name(job_id, 'job id')}.json"

    def _save(self, record: JobRecord) -> None:
        record.updated = time.time()
        save_model(self._path(record.id), record)

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record; a running job whose owner is gone is marked interrupted."""
        live = self._live.get(job_id)
        if live is not None:
            return live.record
        record = load_state(self._path(job_id), JobRecord.model_validate, None)
        if record is None:
            return None
        if not record.finished and not record.owner.alive():
            record.status = "interrupted"
            record.error = (f"the server that ran this job (pid {record.owner.pid}) ended "
                            "before it finished; what was measured so far is kept")
            self._save(record)
        return record

    def require(self, job_id: str, what: str = "job") -> JobRecord:
        record = self.get(job_id)
        if record is None:
            raise NotFound(f"unknown {what} {job_id!r}: no job with that id on this workspace")
        return record

    def list(self) -> list[JobRecord]:
        names = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        found = [self.get(p.stem) for p in names]
        return sorted((r for r in found if r), key=lambda r: r.created)

    # -- running ----------------------------------------------------------------------
    def start(
        self,
        job_id: str,
        kind: str,
        target: str,
        work: Callable[[Report], Awaitable[object]],
        render: Callable[[Any], dict[str, Any] | None],
        on_stop: Callable[[JobStatus, str], None] | None = None,
    ) -> JobRecord:
        """Run `work` as a job; `render` turns its value into the stored answer."""
        if self._group is None:
            raise AutooptError("the server is not accepting jobs (it is starting or stopping)")
        record = JobRecord(id=job_id, kind=kind, target=target, owner=Owner.me())
        live = _Live(record=record, on_stop=on_stop)
        self._live[job_id] = live
        self._save(record)
        prune_jobs(self.folder, target)  # the oldest job records beyond the bound

        async def report(done: float, total: float | None, message: str) -> None:
            record.done, record.total, record.message = done, total, message
            self._save(record)
            for listener in list(live.listeners):
                try:
                    await listener(done, total, message)
                except Exception:  # a waiter that went away must not stop the job
                    live.listeners.remove(listener)

        async def body() -> None:
            try:
                with live.scope:
                    value = await work(report)
                    record.result = render(value)
                    record.status = "done"
            except AutooptError as exc:
                record.status, record.error = "failed", str(exc)
            except Exception as exc:
                record.status = "failed"
                record.error = f"{type(exc).__name__}: {exc}"
            finally:
                if record.status == "running":  # stopped: cancel_run, or the server stopping
                    record.status, record.error = live.stop or ("interrupted", STOPPED)
                with anyio.CancelScope(shield=True):
                    self._save(record)
                    live.finished.set()
                    self._live.pop(job_id, None)

        self._group.start_soon(body, name=f"job {job_id}")
        return record

    def stop(self, job_id: str, status: JobStatus, message: str) -> bool:
        """Ask a job of this process to stop; False when it is not running here."""
        live = self._live.get(job_id)
        if live is None:
            return False
        live.stop = (status, message)
        if live.on_stop:
            live.on_stop(status, message)
        live.scope.cancel()
        return True

    def interrupt_all(self, message: str = STOPPED) -> None:
        for job_id in list(self._live):
            self.stop(job_id, "interrupted", message)

    async def wait(
        self, job_id: str, wait_s: float, on_progress: Report | None = None
    ) -> JobRecord:
        """Wait up to `wait_s` for the job to finish (here or in another process)."""
        live = self._live.get(job_id)
        if live is not None:
            if on_progress:
                live.listeners.append(on_progress)
            try:
                with anyio.move_on_after(wait_s):
                    await live.finished.wait()
            finally:
                if on_progress in live.listeners:
                    live.listeners.remove(on_progress)
            return self.require(job_id) if live.finished.is_set() else live.record
        deadline = time.monotonic() + wait_s
        last = None
        while True:
            record = self.require(job_id)
            if record.finished or time.monotonic() >= deadline:
                return record
            if on_progress and (record.done, record.message) != last:
                last = (record.done, record.message)
                await on_progress(record.done, record.total, record.message)
            await anyio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    async def wait_started(
        self, job_id: str, wait_s: float, on_progress: Report | None
    ) -> JobRecord:
        """The starting call's wait: cancelling that call stops the job (a user's stop)."""
        try:
            return await self.wait(job_id, wait_s, on_progress)
        except anyio.get_cancelled_exc_class():
            self.stop(job_id, "cancelled", "the client cancelled the call that started the "
                      "job; what was measured so far is kept")
            live = self._live.get(job_id)
            if live is not None:
                with anyio.CancelScope(shield=True):
                    await live.finished.wait()
            raise
