"""What the tools return: small, typed views of the engine's records."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from autoopt.tools.command import parse_command
from autoopt.tools.record import ExperimentRecord
from autoopt.tools.status import ExperimentStatus, InterruptedRun
from autoopt.tools.targets import TargetSpec

READY = "ready"


class TargetInfo(BaseModel):
    """A target in brief (the text adds guardrails and workload); `spec`, the whole parsed
    target.md, only with detail=true."""

    name: str
    valid: bool
    error: str | None = Field(None, description="why target.md did not parse")
    metric: str | None = Field(None, description="primary metric (direction, unit)")
    editable: list[str] = Field(default_factory=list)
    readiness: dict[str, str] = Field(
        default_factory=dict, description="backend -> 'ready' or why not"
    )
    spec: dict[str, Any] | None = None

    @classmethod
    def of(cls, spec: TargetSpec, readiness: dict[str, str], detail: bool) -> TargetInfo:
        unit = f", {spec.primary.unit}" if spec.primary.unit else ""
        return cls(
            name=spec.name,
            valid=True,
            metric=f"{spec.primary.name} ({spec.primary.direction} is better{unit})",
            editable=spec.scope.editable,
            readiness=readiness,
            spec=spec.model_dump(mode="json") if detail else None,
        )

    flag: str | None = Field(None, description="why its results need care (nondeterminism)")

    def line(self, spec: TargetSpec | None, hints: bool, said: set[str]) -> str:
        """One paragraph for the model: what it is, what may change, where it runs (a reason
        already in `said`, given for an earlier target, is not repeated)."""
        if spec is None:
            return f"{self.name}: INVALID: {self.error}"
        ready = ", ".join(b for b, r in self.readiness.items() if r == READY) or "none"
        editable = ", ".join(self.editable) or "nothing"
        out = [f"{self.name} ({spec.kind}): {self.metric}; editable {editable}"]
        out += [f"  guardrail: {g.text}" for g in spec.guardrails]
        if self.flag:
            out.append(f"  FLAG: {self.flag}")
        out += [f"  {key}: {shown}" for key, shown in commands(spec).items()]
        out.append(f"  runs on: {ready}" + "".join(
            f"; not {b}: {r if r not in said else '(as above)'}"
            for b, r in self.readiness.items() if r != READY))
        said.update(self.readiness.values())
        if hints:
            out.append(f"  hints: autoopt://targets/{self.name}/hints.md")
        return "\n".join(out)


def commands(spec: TargetSpec) -> dict[str, str]:
    """The target's commands as they run: argv and the variables they set (parsed once,
    as the backends do); a workload script by its path."""
    out = {}
    for key in ("run", "workload"):
        text = getattr(spec.local, key)
        if text:
            cmd = parse_command(text)
            env = f" env={json.dumps(cmd.env)}" if cmd.env else ""
            out[key] = f"argv={json.dumps(cmd.argv)}{env}"
    if "workload" not in out and spec.workload.script:
        out["workload"] = f"script {spec.workload.script}"
    if spec.local.python:
        out["python"] = spec.local.python
    return out


class TargetList(BaseModel):
    program_md: str = Field(description="the program.md served as autoopt://program.md")
    targets: list[TargetInfo]


class BuildResult(BaseModel):
    build_id: str
    status: str = Field(description="done, or running (then call next_call)")
    commit: str | None = Field(None, description="the built tree's commit (base + patch)")
    patch_files: list[str] = Field(default_factory=list)
    duration_s: float | None = None
    progress: str | None = None
    next_call: str | None = None


class CancelResult(BaseModel):
    run_id: str
    kind: str = Field(description="run_ab, profile_memory, profile_cpu or build")
    status: str = Field(description="the job's status now")
    message: str


class DeployResult(BaseModel):
    deployment_id: str
    endpoint: str | None = None
    pid: int | None = None


class WorkloadRun(BaseModel):
    metrics: dict[str, float] = Field(description="its own + peak_rss_mb, cpu_s, wall_s")
    output: list[str] = Field(description="last non-metric lines")
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
    """Where the lines come from; the lines themselves are the text content."""

    revision: str
    start_line: int
    end_line: int
    total_lines: int


class SourceMatches(BaseModel):
    """The search; the matches themselves (path:line:text) are the text content."""

    revision: str
    count: int
    truncated: bool


class StatusView(BaseModel):
    """Where the loop stands; the text adds candidates.md, results.tsv rows and profiles."""

    frontier: str
    frontier_branch: str
    experiments: list[str]
    interrupted_runs: list[InterruptedRun]

    @classmethod
    def of(cls, s: ExperimentStatus) -> StatusView:
        return cls(frontier=s.frontier, frontier_branch=s.frontier_branch,
                   experiments=s.experiments, interrupted_runs=s.interrupted_runs)


def status_text(s: ExperimentStatus) -> str:
    out = [f"{s.target}/{s.env}: frontier {s.frontier[:12]} ({s.frontier_branch}); "
           f"experiments: {', '.join(s.experiments) or 'none'}"]
    if s.results_tail:
        keys = list(s.results_tail[0])
        out += ["results.tsv (last rows):", "\t".join(keys)]
        out += ["\t".join(row.get(k, "") for k in keys) for row in s.results_tail]
    out += [f"interrupted: {r.run_id} ({r.status}, {r.samples} samples): {r.error}"
            for r in s.interrupted_runs]
    if s.live_deployments:
        out.append(f"live deployments: {', '.join(s.live_deployments)}")
    if s.profiles:
        out.append(f"profiles (newest first): {', '.join(s.profiles[:8])}")
    out.append(s.candidates.strip() or "candidates.md: none yet")
    return "\n".join(out)


class RecordView(BaseModel):
    """A written experiment record; the text adds the results.tsv row and the files."""

    exp_id: str
    status: str
    directory: str
    branch: str
    frontier_moved: bool

    @classmethod
    def of(cls, r: ExperimentRecord) -> RecordView:
        return cls(exp_id=r.exp_id, status=r.status, directory=r.directory, branch=r.branch,
                   frontier_moved=r.frontier_moved)


def record_text(r: ExperimentRecord) -> str:
    if r.existing:
        return (f"{r.exp_id} [{r.status}]: this run is already recorded in {r.directory}; "
                "returned as it is, nothing written (a run is one experiment: a new record "
                "needs a new run)")
    if r.addendum:
        return (f"{r.exp_id} [{r.status}]: addendum appended to {r.directory}/README.md; "
                "the record's numbers, row and files are unchanged")
    moved = f"frontier moved to {r.frontier[:12]}" if r.frontier_moved else "frontier unchanged"
    row = "; ".join(f"{k}={v}" for k, v in r.row.items() if v)
    return (f"{r.exp_id} [{r.status}] recorded in {r.directory} (branch {r.branch}; {moved})\n"
            f"results.tsv: {row}\nfiles: {', '.join(r.files)}")
