"""The Backend protocol and the values that cross it: Build, Deployment, Sample.

One protocol, several implementations (local processes, Docker, Kubernetes). The
orchestration in run_ab never branches on the backend, nor on the target's kind: for a
service, deploy starts it and the workload drives it; for a batch program, deploy prepares
the tree and the workload command is the measured process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from autoopt.tools.jobs import Owner
from autoopt.tools.journal import Journal
from autoopt.tools.targets import TargetSpec

Progress = Callable[[str], Awaitable[None]]


class Build(BaseModel):
    """A built revision: base commit + optional patch, in its own tree (and image)."""

    id: str
    target: str
    backend: str
    base: str = Field(description="the base commit both arms share")
    commit: str = Field(description="the tree's commit (base, or base + patch)")
    patch_sha256: str | None = None
    patch_files: list[str] = Field(default_factory=list)
    allow_constant_tuning: bool = False
    tree: str
    home: str = Field("", description="the build's folder (logs, deployments); default: tree/..")
    incremental: str | None = Field(
        None, description="the build-cache slot built in: 'slot-k, reused from <commit12>'"
    )
    image: str | None = None
    duration_s: float = 0.0
    log_tail: str = ""
    created: float = Field(default_factory=time.time)
    journal: Journal = Field(default_factory=Journal)
    owner: Owner | None = Field(None, description="the server that made it")
    kept: bool = Field(False, description="made with the build tool: outlives its server")
    used: float = 0.0
    gone: str | None = Field(None, description="why the tree was removed, once it was")
    building: bool = Field(False, description="saved before the build ran, until it is done")


    @property
    def folder(self) -> Path:
        return Path(self.home or Path(self.tree).parent)


class Deployment(BaseModel):
    """A running (or, for a batch target, prepared) build."""

    id: str
    build_id: str
    target: str
    backend: str
    kind: str
    endpoint: str | None = None
    port: int | None = None
    pid: int | None = Field(None, description="the real service process, not a wrapper")
    pid_start: float | None = Field(None, description="its start time, to recognise it later")
    container: str | None = None
    namespace: str | None = None
    started: float = Field(default_factory=time.time)
    tree: str | None = Field(None, description="the built tree (local backend)")
    scope: str | None = Field(None, description="what its processes carry (tools/contain.py)")
    log_dir: str = ""
    journal: Journal = Field(default_factory=Journal)


class WorkloadResult(BaseModel):
    """One workload invocation: its key=value metrics and how it ended."""

    metrics: dict[str, float] = Field(default_factory=dict)
    exit_code: int
    duration_s: float
    log_tail: str = ""
    output: list[str] = Field(
        default_factory=list, description="the last lines of stdout that are not metrics"
    )
    stdout_file: str | None = Field(None, description="the whole stdout, while it exists")
    peak_rss_mb: float | None = Field(None, description="batch targets: the measured process")
    cpu_s: float | None = None


class Sample(BaseModel):
    """Everything measured for one run of one arm."""

    run: int
    arm: str
    build_id: str
    ok: bool
    error: str | None = None
    warmup: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    died: bool = False
    restarts: int = 0
    oom_killed: bool = False
    log_tail: str = ""
    block: int | None = Field(None, description="its block (one AUTOOPT_BLOCK_SEED)")
    output_fp: str | None = Field(None, description="fingerprint of the compared output")
    left: list[str] = Field(
        default_factory=list, description="files the run left in the built tree (removed)"
    )
    timings: dict[str, float] = Field(default_factory=dict)
    smaps: dict[str, float] = Field(default_factory=dict)


class Backend(Protocol):
    """What every backend provides. Methods raise AutooptError subclasses."""

    name: str

    def unavailable_reason(self) -> str | None:
        """None when usable, else why not (shown by list_targets)."""
        ...

    async def build(
        self, spec: TargetSpec, build: Build, progress: Progress | None = None
    ) -> Build:
        """Build the checked-out tree of `build` (its image, for container backends)."""
        ...

    async def deploy(self, spec: TargetSpec, build: Build) -> Deployment:
        """Start the service (or prepare a batch tree) and wait until it is healthy."""
        ...

    async def run_workload(
        self,
        spec: TargetSpec,
        deployment: Deployment,
        argv: list[str],
        shell: str,
        *,
        name: str,
        timeout: float = 600.0,
        env: dict[str, str] | None = None,
    ) -> WorkloadResult:
        """Drive the service with `argv`, or run the batch program; parse its metrics.
        `shell` is the line the journal records for it; `env` what the command sets."""
        ...

    async def collect(
        self, spec: TargetSpec, deployment: Deployment, result: WorkloadResult
    ) -> dict[str, object]:
        """Peak RSS, RSS, CPU, restarts and OOM of the deployment after a workload."""
        ...

    async def teardown(self, deployment: Deployment) -> None:
        """Stop and remove everything the deployment started. Idempotent."""
        ...

    async def reset_peak(self, deployment: Deployment) -> bool:
        """Reset the service's peak RSS so the next reading belongs to the workload."""
        ...

    async def discard(self, build: Build) -> None:
        """Remove a build's artifacts (an image) once no run needs them. Idempotent."""
        ...

    def forget_orphans(self) -> list[str]:
        """Remove what a crashed server left behind; what was removed."""
        ...
