"""experiment_status: where the loop stands for one target and environment (resume)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from autoopt.tools.abrun import ABRun, runs_dir
from autoopt.tools.state import append_locked, load_json, load_state
from autoopt.tools.workspace import Workspace, check_name


class InterruptedRun(BaseModel):
    run_id: str
    status: str
    samples: int
    error: str | None = None


class ExperimentStatus(BaseModel):
    target: str
    env: str
    frontier: str = Field(description="the commit the next experiment builds on")
    frontier_branch: str
    candidates: str = Field(description="candidates.md, or empty")
    results_tail: list[dict[str, str]] = Field(description="the last rows of results.tsv")
    experiments: list[str]
    profiles: list[str] = Field(description="the latest profile files, newest first")
    interrupted_runs: list[InterruptedRun]
    live_deployments: list[str]


def tsv_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def experiment_status(
    workspace: Workspace,
    target: str,
    env: str,
    frontier: str,
    frontier_branch: str,
    live: list[str],
    tail: int = 10,
) -> ExperimentStatus:
    check_name(env, "environment name")
    results = workspace.results_for(target, env)
    tsv = results / "results.tsv"
    rows = tsv_rows(tsv.read_text()) if tsv.exists() else []
    candidates = results / "candidates.md"
    profiles = results / "profiles"
    profile_files = (
        sorted(
            (p for p in profiles.iterdir() if p.is_file()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if profiles.is_dir()
        else []
    )
    interrupted = []
    folder = runs_dir(workspace.state_dir)
    for path in sorted(folder.glob("*/run.json")) if folder.is_dir() else []:
        data = load_json(path, {})
        if not (isinstance(data, dict) and data.get("target") == target and data.get(
                "status") in ("crashed", "cancelled", "interrupted", "failed")):
            continue
        if (run := load_state(path, ABRun.model_validate, None)) is not None:
            interrupted.append(InterruptedRun(run_id=run.id, status=run.status,
                                              samples=len(run.samples), error=run.error))
    return ExperimentStatus(
        target=target,
        env=env,
        frontier=frontier,
        frontier_branch=frontier_branch,
        candidates=candidates.read_text() if candidates.exists() else "",
        results_tail=rows[-tail:],
        experiments=sorted(p.name for p in results.iterdir() if p.is_dir() and p.name != "profiles")
        if results.is_dir()
        else [],
        profiles=[str(p.relative_to(workspace.root)) for p in profile_files[:20]],
        interrupted_runs=interrupted[-20:],
        live_deployments=live,
    )


def append_candidate(
    workspace: Workspace,
    target: str,
    env: str,
    *,
    title: str,
    evidence: str,
    root_cause: str,
    fix: str,
    targeted_workload: str,
) -> str:
    """Append one candidate to candidates.md (Phase 2); returns the file's path."""
    results = workspace.results_for(target, env)
    results.mkdir(parents=True, exist_ok=True)
    path = results / "candidates.md"
    entry = (
        f"\n## {title.strip()}\n\n- **Profile evidence:** {evidence.strip()}\n"
        f"- **Root cause:** {root_cause.strip()}\n- **Proposed structural fix:** "
        f"{fix.strip()}\n- **Targeted workload:** {targeted_workload.strip()}\n"
    )
    append_locked(path, entry, header=f"# Candidates: {target} ({env})\n")
    return str(path.relative_to(workspace.root))
