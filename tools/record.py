"""record_experiment: the server writes the record of a run it made, from what it ran.

results/<target>/<env>/<exp_id>/ gets the scripts (rendered from the run's journal),
metrics.log (every value of every run, in execution order), diff.patch, the base commit
as a git bundle for `repo: local` targets, the workload files, and README.md; one row is
appended to results/<target>/<env>/results.tsv under a lock. A KEEP moves the frontier.
Every figure is the run's own: n per arm as analysed, the looks a sequential run took, and
the ratio of geometric means with its 95% CI as run_ab reported it. A record is never
rewritten; later evidence (a profile diff after a KEEP) is appended as an addendum. A run
is recorded once: asking again under its exp_id returns that record (an idempotent retry),
under another exp_id is refused.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from autoopt.tools import scripts
from autoopt.tools.abrun import ACTIVE, ABRun
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
    "stopped",
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
    addendum: bool = False
    existing: bool = False  # already recorded: returned as it is, nothing written


def env_name(backend: str) -> str:
    return backend


def pct(x: float | None) -> str:
    """A signed % as run_ab's answer prints it: +3.1%, -0.42%."""
    return "-" if x is None else f"{x:+.1f}%" if abs(x) >= 1 else f"{x:+.2g}%"


def verdict_of(run: ABRun) -> str | None:
    """The run's verdict; FAILED for a run that failed before any decision (a broken build)."""
    verdict = run.report.decision.get("verdict") if run.report else None
    if verdict is None and run.status == "failed":
        return "FAILED"
    return str(verdict) if verdict else None


def reason_of(run: ABRun) -> str | None:
    """The decision's reason without the verdict in front; the error of a failed run."""
    decision = run.report.decision if run.report else {}
    reason = decision.get("reason")
    if not isinstance(reason, str):
        return run.error if run.status == "failed" else None
    return reason.removeprefix(f"{decision.get('verdict')}: ")


def _why_stopped(decision: dict[str, object], min_effect_pct: float) -> str:
    """Why a sequential run stopped at a look (the verdict itself is said elsewhere)."""
    verdict = decision.get("verdict")
    alpha = decision.get("one_sided_alpha")
    level = f"one-sided alpha {alpha:.2g}" if isinstance(alpha, float) else "the look's alpha"
    if verdict == "KEEP":
        return f"the gain crossed the look's boundary ({level})"
    if verdict == "SAME":
        return f"the change was shown within ±{min_effect_pct:g}% ({level})"
    if verdict == "DISCARD":
        broken = any(g.get("violated") for g in decision.get("guardrails") or [])  # type: ignore[union-attr]
        return ("a guardrail was shown broken" if broken else
                f"the {min_effect_pct:g}% minimum gain was ruled out ({level})")
    if verdict == "FAILED":
        return "an arm had no usable run"
    return f"{verdict}"


def condition(reason: str, metric: str) -> str:
    """A decision's reason without its first clause when that clause is the primary
    metric's change and CI (for a text that already gives them)."""
    first, _, rest = reason.partition("; ")
    said = first.startswith(f"{metric} ") and ("CI" in first or "exact ratio" in first)
    return rest if said and rest else reason


def stop_error(run: ABRun) -> str:
    """Why the run stopped before its plan, without the words 'stopped early'."""
    return (run.error or "").removeprefix("stopped early: ").removesuffix("; stopped early")


def extent(run: ABRun) -> str:
    """How many runs per arm really ran, and for a sequential run the looks taken and why it
    stopped: '10 runs per arm, stopped at look 2 of 4: KEEP: ...'. Never the planned
    number when fewer ran."""
    counted = [s for s in run.samples if not s.warmup]
    n = {arm: sum(s.arm == arm for s in counted) for arm in ("A", "B")}
    done = min(n.values())
    per_arm = f"{n['A']} runs per arm" if n["A"] == n["B"] else f"{n['A']} A and {n['B']} B runs"
    error = stop_error(run)
    if run.status not in ("done", *ACTIVE) or error:
        why = f" ({run.status})" if run.status not in ("done", *ACTIVE) else ""
        tail = f": {error}" if error and run.status != "failed" else ""  # failed: the reason
        return f"{per_arm}, stopped early{why} ({run.runs} planned){tail}"
    looks = run.looks if run.sequential else []
    decision = run.report.decision if run.report else {}
    if looks and done in looks:
        k, last = looks.index(done) + 1, len(looks)
        if k < last:
            return f"{per_arm}, stopped at look {k} of {last}: " + _why_stopped(
                decision, run.min_effect_pct)
        return f"{per_arm}, the cap (look {k} of {last}; no earlier look decided)"
    if done < run.runs:
        return f"{per_arm} ({run.runs} planned)"
    return per_arm


def estimate(run: ABRun) -> str:
    """The primary metric's change B vs A with its 95% CI, as run_ab reports it."""
    primary = (run.report.decision.get("primary") if run.report else None) or {}
    change = primary.get("change_pct")
    if change is None:
        return f"{run.metric}: no ratio" + (f" ({primary['note']})" if primary.get("note") else "")
    lo, hi = primary.get("ci_low"), primary.get("ci_high")
    ci = f" (95% CI {pct(100 * (lo - 1))} to {pct(100 * (hi - 1))})" if (
        lo is not None and hi is not None) else ""
    return (f"{run.metric} {pct(change)} B vs A{ci}, ratio of geometric means "
            f"{_fmt(primary.get('ratio_geomean'), 4)}")


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
    """The results.tsv status: the verdict lowercased (keep, same, discard, inconclusive,
    failed), or how an unfinished run ended (crash, cancelled, interrupted)."""
    if run.status in ("crashed", "cancelled", "interrupted"):
        return "crash" if run.status == "crashed" else run.status
    return (verdict_of(run) or "inconclusive").lower()


def _correctness(run: ABRun, spec: TargetSpec) -> list[str]:
    """What the correctness gate compared and ran (## Correctness of target.md)."""
    lines = []
    if run.outputs is not None:
        lines.append(f"- **Output:** {run.outputs.summary()}; saved per run in the run's "
                     "outputs/ folder")
    else:
        lines.append("- **Output:** not compared (a run from before the gate)")
    for arm in ("A", "B"):
        left = sorted({f for x in run.samples if x.arm == arm for f in x.left})
        if left:
            lines.append(f"- **Left in the tree by {arm}'s runs** (removed before each next "
                         f"run): {', '.join(left[:10])}")
    for arm, t in sorted(run.tests.items()):
        failing = f"; failing: {', '.join(t.failing)}" if t.failing else ""
        lines.append(f"- **Tests on {arm}:** {'pass' if t.passed else 'FAIL'} "
                     f"(`{t.command}`, exit {t.exit_code}, {t.duration_s:.1f} s{failing})")
    if not run.tests:
        lines.append("- **Tests:** none declared (## Correctness tests:)" if not
                     spec.correctness.tests else "- **Tests:** not run")
    return lines


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
    report = run.report
    analysed = (
        f"{report.n_a} A / {report.n_b} B runs analysed"
        + (f" ({report.failed_a} A and {report.failed_b} B run(s) failed)"
           if report.failed_a or report.failed_b else "")
        if report else "no analysis"
    )
    warmup = f" + {run.warmup} warmup pair(s)" if run.warmup else ""
    out = [f"# {exp_id}: {description}", ""]
    out += [
        f"- **Target:** {run.target} (backend {run.backend})",
        f"- **Decision:** {verdict_of(run) or run.status} — "
        + condition(reason_of(run) or run.error or "-", run.metric),
        f"- **Result:** {estimate(run)}; {analysed}",
        f"- **Runs:** {extent(run)}{warmup}; order {run.order}, seed {run.seed}"
        + (", sequential looks at " + "/".join(map(str, run.looks)) if run.sequential else ""),
        f"- **Output type:** {output_type}",
        f"- **Branch:** `{branch}` (commit {run.commits.get('B', '-')})",
        f"- **Base commit (both arms):** {run.base}",
        f"- **Run id:** {run.id}",
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
    out += ["## Correctness", "", *_correctness(run, spec), ""]
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
        "| metric | A median | B median | ratio of geometric means B/A | 95% CI | one-sided p "
        "| n A/B |",
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


def _analysed(run: ABRun, arm: str, metric: str) -> list[float]:
    """The values the analysis used (a sequential run's first `look` per arm); a metric
    that was not compared: every successful counted run's."""
    for m in run.report.metrics if run.report else []:
        if m.metric == metric:
            return list(m.a.values if arm == "A" else m.b.values)
    return _metric_values(run, arm, metric)


def _centre(xs: list[float]) -> float | None:
    """The value the ratio is made of: the geometric mean (the mean if a value is <= 0)."""
    import math

    if not xs:
        return None
    if min(xs) > 0:
        return math.exp(math.fsum(math.log(x) for x in xs) / len(xs))
    return math.fsum(xs) / len(xs)


def _ratio(run: ABRun | dict, metric: str) -> float | None:
    """A run's ratio of geometric means B/A for `metric` (run.json data or an ABRun)."""
    data = run.model_dump(mode="json") if isinstance(run, ABRun) else run
    report = data.get("report") or {}
    primary = (report.get("decision") or {}).get("primary") or {}
    if data.get("metric") == metric and primary.get("ratio_geomean") is not None:
        return float(primary["ratio_geomean"])
    for m in report.get("metrics") or []:
        if m.get("metric") == metric and (m.get("comparison") or {}).get("ratio_geomean"):
            return float(m["comparison"]["ratio_geomean"])
    return None


def chained_ratio(results: Path, run: ABRun) -> float | None:
    """This run's B against the baseline's frontier: the product of the ratios (for this run's
    metric) of the KEEPs that moved the frontier from there to this run's base, times this
    run's own ratio. A base that is no recorded KEEP's commit is the baseline's frontier."""
    from autoopt.tools.state import load_json
    from autoopt.tools.status import tsv_rows

    product = _ratio(run, run.metric)
    tsv = results / "results.tsv"
    if product is None or not tsv.exists():
        return product
    keeps = {
        row.get("commit", ""): row
        for row in tsv_rows(tsv.read_text())
        if row.get("status") == "keep" and row.get("commit")
    }
    base, seen = run.base, set()
    while (row := keeps.get(base[:12])) is not None and base[:12] not in seen:
        seen.add(base[:12])
        data = load_json(results / row.get("exp_id", "-") / "run.json", set_aside=False)
        if not isinstance(data, dict) or not data.get("patch"):
            break  # a KEEP without a patch (an A/A) did not move the frontier
        ratio = _ratio(data, run.metric)
        if ratio is None:
            return None  # that KEEP did not measure this metric: no chain
        product *= ratio
        base = str(data.get("base") or "")
    return product


def _row(
    run: ABRun,
    exp_id: str,
    branch: str,
    parent: str,
    description: str,
    baseline_value: float | None,
    chained: float | None = None,
) -> dict[str, str]:
    a = _centre(_analysed(run, "A", run.metric))
    b = _centre(_analysed(run, "B", run.metric))
    primary = (run.report.decision.get("primary") if run.report else None) or {}

    def b_mean(metric: str, agg: str = "mean") -> str:
        xs = _analysed(run, "B", metric)
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
        "delta_vs_baseline": "-" if chained is None else pct(100 * (chained - 1)),
        "delta_vs_parent": pct(primary.get("change_pct")),
        "cpu_pct": b_mean("cpu_pct"),
        "latency_p99_ms": b_mean("latency_p99_ms"),
        "error_rate": b_mean("error_rate", "max"),
        "pod_restarts": b_mean("restarts", "max"),  # the seed's column: restarts, any backend
        "status": _status(run),
        "description": " ".join(description.split()).replace("\t", " "),
        "n_a": str(run.report.n_a) if run.report else "0",
        "n_b": str(run.report.n_b) if run.report else "0",
        "ratio": _fmt(primary.get("ratio_geomean"), 4),
        "ci_low": _fmt(primary.get("ci_low"), 4),
        "ci_high": _fmt(primary.get("ci_high"), 4),
        "p_value": format_p(primary.get("p_gain")),
        "run_id": run.id,
        "stopped": " ".join(extent(run).split())[:200],
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


def recorded_as(results: Path, run_id: str) -> str | None:
    """The exp_id under which this run is recorded (results.tsv's run_id column), if any."""
    from autoopt.tools.status import tsv_rows

    tsv = results / "results.tsv"
    rows = tsv_rows(tsv.read_text()) if tsv.exists() else []
    return next((r.get("exp_id") for r in rows if r.get("run_id") == run_id), None)


def record(
    workspace: Workspace,
    spec: TargetSpec,
    source: Source,
    run: ABRun,
    *,
    exp_id: str,
    description: str | None,
    hypothesis: str | None,
    evidence: str | None,
    output_type: OutputType,
    tag: str,
    profile: str | None = None,
    addendum: str | None = None,
) -> ExperimentRecord:
    """Write the experiment's directory and results.tsv row; move the frontier on KEEP.
    A run is one experiment: recording it again under its exp_id returns the record as it
    is (with `addendum`: appends that to the README); under another exp_id it is refused."""
    check_name(exp_id, "exp_id")
    check_name(tag, "tag")
    env = env_name(run.backend)
    results = workspace.results_for(run.target, env)
    folder = results / exp_id
    existing = recorded_as(results, run.id)
    if existing is not None and existing != exp_id:
        raise AlreadyExists(
            f"run {run.id} is already recorded as {existing} (results/{run.target}/{env}/"
            f"{existing}): a run is one experiment. Call with exp_id={existing!r} to get that "
            "record (with addendum= to append later evidence to it), or make a new run."
        )
    if folder.exists() and (addendum or _run_of(folder) == run.id):
        return existing_record(workspace, source, run, folder, addendum)
    stored = store.load(workspace, run.target, env, profile) if profile else None
    if run.status in ACTIVE:
        raise RuleViolation(f"run {run.id} is still running; record it when it has finished")
    if folder.exists():
        raise AlreadyExists(
            f"results/{run.target}/{env}/{exp_id} exists; records are never overwritten. "
            "Choose another exp_id, or pass addendum= (and this record's run_id) to append "
            "later evidence to it."
        )
    if not (description and description.strip() and hypothesis and hypothesis.strip()):
        raise RuleViolation("a new record needs a description and a hypothesis")
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
        if addendum:
            readme = staging / "README.md"
            readme.write_text(readme.read_text() + _addendum_text(addendum))
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tsv = results / "results.tsv"
    parent = _parent_branch(source)
    row = _row(
        run, exp_id, branch, parent, description, _baseline_value(tsv, run.metric),
        chained_ratio(results, run),
    )
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


def _addendum_text(text: str) -> str:
    return f"\n## Addendum ({time.strftime('%Y-%m-%d %H:%M %Z')})\n\n{text.strip()}\n"


def _run_of(folder: Path) -> str | None:
    """The id of the run a record folder holds."""
    from autoopt.tools.state import load_json

    recorded = load_json(folder / "run.json", set_aside=False)
    return recorded.get("id") if isinstance(recorded, dict) else None


def existing_record(
    workspace: Workspace, source: Source, run: ABRun, folder: Path, addendum: str | None
) -> ExperimentRecord:
    """The record in `folder`, which must be this run's. With `addendum`, append it to the
    README as '## Addendum (<date>)'. Nothing else changes: not the numbers, the row, the
    scripts or the frontier."""
    from autoopt.tools.status import tsv_rows

    recorded_id = _run_of(folder)
    where = str(folder.relative_to(workspace.root))
    if recorded_id != run.id:
        raise RuleViolation(
            f"{where} records run {recorded_id}, not {run.id}: an addendum goes to the record "
            "of its own run, and never changes its numbers (a new run needs a new exp_id)"
        )
    if addendum:
        readme = folder / "README.md"
        write_atomic(readme, readme.read_text() + _addendum_text(addendum))
    tsv = folder.parent / "results.tsv"
    rows = tsv_rows(tsv.read_text()) if tsv.exists() else []
    row = next((r for r in rows if r.get("exp_id") == folder.name), {})
    return ExperimentRecord(
        exp_id=folder.name,
        target=run.target,
        env=folder.parent.name,
        directory=where,
        files=sorted(p.name for p in folder.iterdir()),
        status=row.get("status", _status(run)),
        branch=row.get("branch", ""),
        frontier_moved=False,
        frontier=source.frontier(),
        row=row,
        addendum=bool(addendum),
        existing=not addendum,
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
