"""record_experiment: the server writes the record of a run it made, from what it ran.

results/<target>/<env>/<exp_id>/ gets the scripts (rendered from the run's journal),
metrics.log (every value of every run, in execution order), diff.patch, the base commit
as a git bundle for `repo: local` targets, the workload files, and README.md; one row is
appended to results/<target>/<env>/results.tsv under a lock. A KEEP moves the frontier.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from autoopt.tools import scripts
from autoopt.tools.abrun import ABRun
from autoopt.tools.errors import AlreadyExists, RuleViolation
from autoopt.tools.profiling import store
from autoopt.tools.profiling.model import Profile
from autoopt.tools.source import Source, git
from autoopt.tools.state import append_locked, write_atomic
from autoopt.tools.stats import format_p
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workspace import Workspace, check_name

OutputType = Literal["pr", "issue", "report"]
COLUMNS = [
    "exp_id",
    "branch",
    "parent_branch",
    "commit",
    "metric_name",
    "metric_value",
    "baseline_value",
    "delta_vs_baseline",
    "delta_vs_parent",
    "cpu_pct",
    "latency_p99_ms",
    "error_rate",
    "pod_restarts",
    "status",
    "description",
    "n_a",
    "n_b",
    "ratio",
    "ci_low",
    "ci_high",
    "p_value",
    "run_id",
]


class ExperimentRecord(BaseModel):
    exp_id: str
    target: str
    env: str
    directory: str
    files: list[str]
    status: str
    branch: str
    frontier_moved: bool
    frontier: str
    row: dict[str, str]


def env_name(backend: str) -> str:
    return backend


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _median(xs: list[float]) -> float | None:
    import statistics

    return statistics.median(xs) if xs else None


def _metric_values(run: ABRun, arm: str, metric: str) -> list[float]:
    return [
        s.metrics[metric]
        for s in run.samples
        if s.arm == arm and s.ok and not s.warmup and metric in s.metrics
    ]


def metrics_log(run: ABRun) -> str:
    """One line per run, in execution order: run, arm, warmup, ok, then every metric."""
    lines = [
        f"# run {run.id} target={run.target} backend={run.backend} base={run.base} "
        f"seed={run.seed} order={run.order}"
    ]
    for s in run.samples:
        values = " ".join(f"{k}={v:g}" for k, v in sorted(s.metrics.items()))
        error = f" error={s.error!r}" if s.error else ""
        lines.append(
            f"run={s.run} arm={s.arm} warmup={int(s.warmup)} ok={int(s.ok)} "
            f"{values}{error}".rstrip()
        )
    return "\n".join(lines) + "\n"


def _status(run: ABRun) -> str:
    if run.status in ("crashed", "cancelled", "interrupted", "failed"):
        return "crash" if run.status == "crashed" else run.status
    verdict = (run.report.decision.get("verdict") if run.report else None) or "inconclusive"
    return str(verdict).lower()


def _readme(
    run: ABRun,
    spec: TargetSpec,
    exp_id: str,
    description: str,
    hypothesis: str,
    evidence: str | None,
    output_type: OutputType,
    branch: str,
) -> str:
    decision = run.report.decision if run.report else {}
    out = [f"# {exp_id}: {description}", ""]
    out += [
        f"- **Target:** {run.target} (backend {run.backend})",
        f"- **Decision:** {decision.get('verdict', run.status)} — "
        f"{decision.get('reason', run.error)}",
        f"- **Output type:** {output_type}",
        f"- **Branch:** `{branch}` (commit {run.commits.get('B', '-')})",
        f"- **Base commit (both arms):** {run.base}",
        f"- **Run:** {run.id}, {run.runs} runs per arm + {run.warmup} warmup pair(s), "
        f"order {run.order}, seed {run.seed}",
        f"- **Primary metric:** {run.metric} ({run.direction} is better), minimum "
        f"worthwhile effect {run.min_effect_pct:g}%",
        "- **Seed rule (for reference):** "
        + ("KEEP" if decision.get("seed_rule_keep") else "not KEEP"),
        "",
        "## Hypothesis",
        "",
        hypothesis,
        "",
    ]
    if evidence:
        out += ["## Profile evidence", "", evidence, ""]
    warnings = decision.get("warnings") or []
    if warnings:
        out += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]  # type: ignore[union-attr]
    out += [
        "## How to reproduce",
        "",
        "Needs bash, git and python3"
        + (
            " and a Docker engine"
            if run.backend == "docker"
            else " and kubectl with the cluster's context"
            if run.backend == "kubernetes"
            else ""
        )
        + ".",
        "",
        "```bash",
        "./build.sh      # arm a = base, arm b = base + diff.patch",
        "./deploy.sh     # start both arms",
        "./workload.sh   # the recorded workload",
        "./collect.sh    # peak RSS and friends",
        "./teardown.sh",
        "./reproduce.sh  # or: replay the whole recorded schedule",
        "```",
        "",
    ]
    out += [
        "## Summary statistics",
        "",
        "| metric | A median | B median | ratio B/A | 95% CI | one-sided p | n A/B |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in run.report.metrics if run.report else []:
        c = m.comparison or {}
        out.append(
            f"| {m.metric} | {_fmt(m.a.summary.get('median'))} | {_fmt(m.b.summary.get('median'))}"  # type: ignore[arg-type]
            f" | {_fmt(c.get('ratio_geomean'), 4)} | {_fmt(c.get('ci_low'), 4)} to "  # type: ignore[arg-type]
            f"{_fmt(c.get('ci_high'), 4)} | {format_p(c.get('p_gain'))} | "  # type: ignore[arg-type]
            f"{len(m.a.values)}/{len(m.b.values)} |"
        )
    guards = decision.get("guardrails") or []
    if guards:
        out += ["", "Guardrails:", ""]
        out += [f"- {'pass' if g['passed'] else 'FAIL'}: {g['reason']}" for g in guards]  # type: ignore[index,union-attr]
    out += [
        "",
        f"## Actual per-run values ({run.metric}, execution order)",
        "",
        "| run | arm | warmup | value | ok |",
        "|---|---|---|---|---|",
    ]
    for s in run.samples:
        out.append(
            f"| {s.run} | {s.arm} | {'yes' if s.warmup else ''} | "
            f"{_fmt(s.metrics.get(run.metric))} | {'yes' if s.ok else s.error} |"
        )
    a, b = _metric_values(run, "A", run.metric), _metric_values(run, "B", run.metric)
    out += [
        "",
        "## Expected",
        "",
        f"Replaying should give {run.metric} near A ≈ {_fmt(_median(a))} and "
        f"B ≈ {_fmt(_median(b))} {run.unit} (medians above); every value is in metrics.log.",
        "",
    ]
    return "\n".join(out)


def _row(
    run: ABRun,
    exp_id: str,
    branch: str,
    parent: str,
    description: str,
    baseline_value: float | None,
) -> dict[str, str]:
    a = _median(_metric_values(run, "A", run.metric))
    b = _median(_metric_values(run, "B", run.metric))
    primary = (run.report.decision.get("primary") if run.report else None) or {}

    def b_mean(metric: str, agg: str = "mean") -> str:
        xs = _metric_values(run, "B", metric)
        if not xs:
            return "-"
        return _fmt(max(xs) if agg == "max" else sum(xs) / len(xs), 3)

    base = baseline_value if baseline_value is not None else a
    return {
        "exp_id": exp_id,
        "branch": branch,
        "parent_branch": parent,
        "commit": run.commits.get("B", run.base)[:12],
        "metric_name": run.metric,
        "metric_value": _fmt(b),
        "baseline_value": _fmt(base),
        "delta_vs_baseline": "-" if not (b and base) else f"{100 * (b / base - 1):+.1f}%",
        "delta_vs_parent": "-" if not (b and a) else f"{100 * (b / a - 1):+.1f}%",
        "cpu_pct": b_mean("cpu_pct"),
        "latency_p99_ms": b_mean("latency_p99_ms"),
        "error_rate": b_mean("error_rate", "max"),
        "pod_restarts": b_mean("restarts", "max"),  # the seed's column: restarts, any backend
        "status": _status(run),
        "description": " ".join(description.split()).replace("\t", " "),
        "n_a": str(len(_metric_values(run, "A", run.metric))),
        "n_b": str(len(_metric_values(run, "B", run.metric))),
        "ratio": _fmt(primary.get("ratio_geomean"), 4),
        "ci_low": _fmt(primary.get("ci_low"), 4),
        "ci_high": _fmt(primary.get("ci_high"), 4),
        "p_value": format_p(primary.get("p_gain")),
        "run_id": run.id,
    }


def append_row(tsv: Path, row: dict[str, str]) -> None:
    """Append one row (header first if new), under an exclusive lock, in one write."""
    line = "\t".join(row.get(c, "-") for c in COLUMNS) + "\n"
    append_locked(tsv, line, header="\t".join(COLUMNS) + "\n")


def _baseline_value(tsv: Path, metric: str) -> float | None:
    if not tsv.exists():
        return None
    for line in tsv.read_text().splitlines()[1:]:
        cells = line.split("\t")
        if len(cells) > 5 and cells[0] == "baseline" and cells[4] == metric:
            try:
                return float(cells[5])
            except ValueError:
                return None
    return None


def record(
    workspace: Workspace,
    spec: TargetSpec,
    source: Source,
    run: ABRun,
    *,
    exp_id: str,
    description: str,
    hypothesis: str,
    evidence: str | None,
    output_type: OutputType,
    tag: str,
    profile: str | None = None,
) -> ExperimentRecord:
    """Write the experiment's directory and results.tsv row; move the frontier on KEEP."""
    check_name(exp_id, "exp_id")
    check_name(tag, "tag")
    stored = store.load(workspace, run.target, env_name(run.backend), profile) if profile else None
    if run.status == "running":
        raise RuleViolation(f"run {run.id} is still running; record it when it has finished")
    env = env_name(run.backend)
    results = workspace.results_for(run.target, env)
    folder = results / exp_id
    if folder.exists():
        raise AlreadyExists(
            f"results/{run.target}/{env}/{exp_id} exists; records are never overwritten. "
            "Choose another exp_id."
        )
    results.mkdir(parents=True, exist_ok=True)
    staging = results / f".{exp_id}.tmp-{time.time_ns()}"
    staging.mkdir()
    try:
        branch = _write(
            workspace,
            spec,
            source,
            run,
            staging,
            exp_id=exp_id,
            tag=tag,
            description=description,
            hypothesis=hypothesis,
            evidence=evidence,
            output_type=output_type,
            profile=stored,
        )
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tsv = results / "results.tsv"
    parent = _parent_branch(source)
    row = _row(run, exp_id, branch, parent, description, _baseline_value(tsv, run.metric))
    append_row(tsv, row)
    moved = False
    if _status(run) == "keep" and run.patch:
        source.set_frontier(run.commits["B"])
        git(source.repo, "update-ref", "refs/autoopt/frontier-branch-" + tag, run.commits["B"])
        (source.repo / ".git" / "autoopt-frontier-branch").write_text(branch)
        moved = True
    return ExperimentRecord(
        exp_id=exp_id,
        target=run.target,
        env=env,
        directory=str(folder.relative_to(workspace.root)),
        files=sorted(p.name for p in folder.iterdir()),
        status=row["status"],
        branch=branch,
        frontier_moved=moved,
        frontier=source.frontier(),
        row=row,
    )


def _parent_branch(source: Source) -> str:
    marker = source.repo / ".git" / "autoopt-frontier-branch"
    return marker.read_text().strip() if marker.exists() else source.spec.source.branch


def _write(
    workspace: Workspace,
    spec: TargetSpec,
    source: Source,
    run: ABRun,
    folder: Path,
    *,
    exp_id: str,
    tag: str,
    description: str,
    hypothesis: str,
    evidence: str | None,
    output_type: OutputType,
    profile: Profile | None,
) -> str:
    branch = f"autoopt/{run.target}/{tag}-{exp_id}"
    git(source.repo, "branch", "-f", branch, run.commits.get("B", run.base))
    if spec.source.kind == "git":
        setup = scripts.clone_setup(spec.source.repo, spec.source.branch, spec.source.commit)
    else:  # local, pypi and debian trees exist only in the server's repository
        source.bundle(run.base, folder / "source.bundle")
        setup = scripts.bundle_setup("source.bundle")
    if run.patch:
        write_atomic(folder / "diff.patch", run.patch)
    if run.backend != "local" and spec.build.dockerfile:
        # build.sh runs `docker build -f "$HERE/Dockerfile" ... "$TREE"`: the Dockerfile lives
        # in the workspace, outside the source tree
        shutil.copy2(workspace.root / spec.build.dockerfile, folder / "Dockerfile")
    workload_dir = folder / "workload"
    workload_dir.mkdir()
    target_dir = workspace.target_dir(run.target)
    for rel in run.workload_files:
        src = workspace.root / rel
        if src.is_file():  # as in the target's folder ($WORKLOAD_DIR in the scripts)
            dest = workload_dir / src.relative_to(target_dir) if src.is_relative_to(
                target_dir) else workload_dir / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    files = {
        "build.sh": scripts.render_build(run, setup),
        "deploy.sh": scripts.render_phase(run, "deploy", "deploy.sh: start each arm"),
        "workload.sh": scripts.render_phase(run, "workload", "workload.sh: the recorded workload"),
        "collect.sh": scripts.render_phase(run, "collect", "collect.sh: read each arm's metrics"),
        "teardown.sh": scripts.render_phase(run, "teardown", "teardown.sh: stop each arm"),
        "reproduce.sh": scripts.render_reproduce(run),
    }
    if profile is not None:
        files["profile.sh"] = scripts.render_profile(
            run,
            profile.steps,
            label=profile.label,
            revision=profile.revision,
            folder=str(store.profiles_dir(workspace, profile.target, profile.env)),
        )
        src = store.file_of(workspace, profile.target, profile.env, profile.label, "stacks")
        if src.is_file():
            shutil.copy2(src, folder / "profile-stacks.txt")
    for name, text in files.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    (folder / "metrics.log").write_text(metrics_log(run))
    (folder / "README.md").write_text(
        _readme(run, spec, exp_id, description, hypothesis, evidence, output_type, branch)
    )
    (folder / "run.json").write_text(run.model_dump_json(indent=1))
    if run.plot and Path(run.plot).is_file():
        shutil.copy2(run.plot, folder / "plot.png")
    return branch
