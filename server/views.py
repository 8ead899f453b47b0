"""What the tools return: small, typed views of the engine's records."""

from __future__ import annotations

from pydantic import BaseModel, Field

from autoopt.tools.targets import TargetSpec


class Readiness(BaseModel):
    available: bool
    reason: str | None = None


class TargetInfo(BaseModel):
    name: str
    valid: bool
    error: str | None = Field(None, description="why target.md did not parse")
    spec: TargetSpec | None = None
    readiness: dict[str, Readiness] = Field(default_factory=dict)
    has_hints: bool = False


class TargetList(BaseModel):
    workspace: str
    program_md: str = Field(description="the program.md served as autoopt://program.md")
    targets: list[TargetInfo]


class BuildResult(BaseModel):
    build_id: str
    status: str = Field(description="done, or running (then call next_call)")
    target: str
    backend: str | None = None
    base: str | None = Field(None, description="the base commit")
    commit: str | None = Field(None, description="the built tree's commit (base + patch)")
    patch_sha256: str | None = None
    patch_files: list[str] = Field(default_factory=list)
    duration_s: float | None = None
    log_tail: str = ""
    progress: str | None = None
    next_call: str | None = None


class CancelResult(BaseModel):
    run_id: str
    kind: str = Field(description="run_ab, profile_memory, profile_cpu or build")
    status: str = Field(description="the job's status now")
    message: str


class DeployResult(BaseModel):
    deployment_id: str
    build_id: str
    kind: str
    endpoint: str | None
    pid: int | None


class WorkloadRun(BaseModel):
    deployment_id: str
    metrics: dict[str, float]
    exit_code: int
    duration_s: float
    log_tail: str


class TeardownResult(BaseModel):
    deployment_id: str | None = None
    build_id: str | None = None
    torn_down: bool
    deployments: list[str] = Field(
        default_factory=list, description="with build_id: the deployments it stopped"
    )


class SourceText(BaseModel):
    target: str
    path: str
    revision: str
    start_line: int
    end_line: int
    total_lines: int
    text: str


class SourceMatches(BaseModel):
    target: str
    revision: str
    pattern: str
    matches: list[str]
    truncated: bool


class RunResult(BaseModel):
    """A persisted A/B run: the decision first, then the numbers behind it."""

    run_id: str
    target: str
    backend: str
    status: str
    verdict: str | None = Field(None, description="KEEP | DISCARD | INCONCLUSIVE")
    reason: str | None = None
    seed_rule_keep: bool | None = Field(None, description="the seed's rule, for reference")
    warnings: list[str] = Field(default_factory=list)
    base: str
    commits: dict[str, str]
    patch_sha256: str | None
    patch_files: list[str]
    runs: int
    warmup: int
    order: str
    seed: int
    metric: str
    direction: str
    min_effect_pct: float
    values: dict[str, list[float | None]] = Field(
        default_factory=dict, description="primary metric per arm, in run order (None = failed)"
    )
    failed: dict[str, int] = Field(default_factory=dict)
    report: dict[str, object] | None = None
    error: str | None = None
    plot: str | None = None
    progress: str | None = Field(None, description="while running: samples done of planned")
    next_call: str | None = Field(None, description="while running: the call that waits")
