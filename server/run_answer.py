"""What run_ab and get_run answer: the decision first, in a few lines; detail on request.

The default answer is a short text (decision, reason, the primary metric's change and CI,
one line per guardrail, the metrics that stayed constant in one line, warnings) and a lean
structured view. The whole run (every metric's statistics, the samples, the commands) is
one call away: `get_run(run_id, detail=true)` or the resource `autoopt://runs/{id}/run.json`;
the picture is `autoopt://runs/{id}/plot.png`, or inline with `include_plot=true`.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from mcp_types import CallToolResult, ImageContent, TextContent
from pydantic import BaseModel, Field

from autoopt.server.jobs_view import StillRunning, capped
from autoopt.tools.abrun import ABRun
from autoopt.tools.record import condition, extent, reason_of, stop_error, verdict_of

TEXT_LIMIT = 3000  # characters of run_ab's and get_run's text
_CONSTANT = re.compile(r"^(\w+) (?:remained (\S+) in every B run|was (0) in every run)")


class RunView(BaseModel):
    """An A/B run's headline; guardrail lines and warnings are in the text, everything in
    `full` (detail=true) or the `detail` resource."""

    run_id: str
    status: str = Field(description="running | done | cancelled | interrupted | crashed | failed")
    verdict: str | None = Field(None, description="KEEP | SAME | DISCARD | INCONCLUSIVE | FAILED")
    reason: str | None = None
    metric: str
    change_pct: float | None = Field(None, description="B vs A, ratio of geometric means, in %")
    ci_pct: list[float] | None = Field(None, description="95% CI of change_pct")
    values: dict[str, list[float | None]] = Field(
        default_factory=dict, description="primary metric per arm, run order (None = failed)"
    )
    failed: dict[str, int] = Field(default_factory=dict)
    progress: str | None = Field(None, description="while running: samples done of planned")
    next_call: str | None = Field(None, description="while running: the call that waits")
    full: dict[str, Any] | None = None


class _Lines(BaseModel):
    """What the text adds to the view: one line per guardrail, constants, warnings."""

    runs: str
    guardrails: list[str]
    unchanged: list[str]
    warnings: list[str]
    error: str | None
    plot: str | None
    correctness: str | None = None


def correctness_line(run: ABRun) -> str | None:
    """How the correctness gate saw the run (output compared, tests), unless the reason
    already says it."""
    parts = []
    reason = reason_of(run) or ""
    if run.outputs is not None and run.outputs.status != "unchecked":
        summary = run.outputs.summary()
        if summary not in reason:
            parts.append(summary)
    left = sorted({f for x in run.samples if x.arm == "B" for f in x.left})
    if left:
        parts.append(f"B runs left {len(left)} file(s) in the built tree, removed before the "
                     f"next run (a cache cannot carry over): {', '.join(left[:3])}")
    if run.tests and "tests fail" not in reason:
        state = {arm: "pass" if t.passed else "FAIL" for arm, t in run.tests.items()}
        parts.append("tests " + ", ".join(f"{state[a]} on {a}" for a in sorted(state)))
    return "; ".join(parts) or None


def _split(decision: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Guardrail lines, and the names of guardrail metrics that stayed constant."""
    lines, constant = [], []
    for check in decision.get("guardrails") or []:
        reason = str(check.get("reason", ""))
        if check.get("passed") and (m := _CONSTANT.match(reason)):
            constant.append(f"{m.group(1)}={m.group(2) or m.group(3)}")
            continue
        state = "pass" if check.get("passed") else "FAIL" if check.get("violated") else "unproven"
        lines.append(f"{state}: {reason}")
    return lines, constant


def _reason(run: ABRun) -> str | None:
    """The decision's reason without the verdict in front (the view has it) and without the
    guardrail tail (each guardrail has its line)."""
    reason = reason_of(run)
    return reason.split("; guardrails pass:")[0] if reason else None


def run_view(run: ABRun, still: StillRunning | None = None, detail: bool = False
             ) -> tuple[RunView, _Lines]:
    decision: dict[str, Any] = run.report.decision if run.report else {}
    primary = decision.get("primary") or {}
    values: dict[str, list[float | None]] = {"A": [], "B": []}
    for sample in run.samples:
        if not sample.warmup:
            values[sample.arm].append(sample.metrics.get(run.metric) if sample.ok else None)
    guardrails, constant = _split(decision)
    warnings = list(decision.get("warnings") or [])
    if verdict_of(run) == "FAILED":  # the reason says it: no line per guardrail repeating it
        guardrails = []
        warnings = [w for w in warnings if not w.startswith(("B failed in", "A (baseline) fail"))]
    lo, hi = primary.get("ci_low"), primary.get("ci_high")
    plot = f"autoopt://runs/{run.id}/plot.png" if run.plot and Path(run.plot).is_file() else None
    error = stop_error(run)
    said = error in extent(run) or error in (reason_of(run) or "")
    lines = _Lines(runs=extent(run), guardrails=guardrails, unchanged=constant,
                   warnings=warnings, error=None if said else run.error, plot=plot,
                   correctness=correctness_line(run))
    return RunView(
        run_id=run.id,
        status="running" if still else run.status,
        verdict=verdict_of(run),
        reason=_reason(run),
        metric=run.metric,
        change_pct=primary.get("change_pct"),
        ci_pct=[round((lo - 1) * 100, 3), round((hi - 1) * 100, 3)]
        if lo is not None and hi is not None else None,
        values=values,
        failed={a: sum(1 for s in run.samples if s.arm == a and not s.ok and not s.warmup)
                for a in ("A", "B")},
        progress=still.progress if still else None,
        next_call=still.next_call if still else None,
        full=_full(run) if detail else None,
    ), lines


def _full(run: ABRun) -> dict[str, Any]:
    """Everything about the run but the journal and the patch text (both in run.json)."""
    return run.model_dump(mode="json", exclude={"journal", "patch", "schedule"})


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:+.1f}%" if abs(x) >= 1 else f"{x:+.2g}%"


def run_text(view: RunView, more: _Lines) -> str:
    """The answer as the model reads it: a few lines, the decision first."""
    if view.progress:
        return f"{view.run_id} [running] {view.progress}. Next: {view.next_call}"
    head = f"{view.run_id} [{view.status}] {view.verdict or 'no decision'}"
    if view.change_pct is not None:
        ci = f" (95% CI {_pct(view.ci_pct[0])} to {_pct(view.ci_pct[1])})" if view.ci_pct else ""
        head += f": {view.metric} {_pct(view.change_pct)}{ci}"
    failed = sum(view.failed.values())
    head += f"; {more.runs}" + (f"; {failed} failed" if failed else "")
    lines = [head]
    if view.reason:
        shown = condition(view.reason, view.metric) if view.change_pct is not None else None
        lines.append(f"Reason: {shown or view.reason}")
    if more.correctness:
        lines.append(f"Correctness: {more.correctness}")
    if more.error:
        lines.append(f"Error: {more.error}")
    lines += [f"Guardrail {g}" for g in more.guardrails]
    if more.unchanged:
        lines.append(f"Unchanged in every B run: {', '.join(more.unchanged)}")
    lines += [f"Warning: {w}" for w in more.warnings]
    lines.append(f"Detail: get_run(run_id='{view.run_id}', detail=true) or "
                 f"autoopt://runs/{view.run_id}/run.json"
                 + (f"; picture {more.plot} (or include_plot=true)" if more.plot else ""))
    return capped(lines, TEXT_LIMIT)


def run_result(run: ABRun, still: StillRunning | None = None, *, detail: bool = False,
               include_plot: bool = False) -> CallToolResult:
    """The lean view, its short text, and the picture only when asked for."""
    view, more = run_view(run, still, detail)
    content: list[TextContent | ImageContent] = [
        TextContent(type="text", text=run_text(view, more))
    ]
    if include_plot and run.plot and Path(run.plot).is_file():
        data = base64.b64encode(Path(run.plot).read_bytes()).decode()
        content.append(ImageContent(type="image", data=data, mime_type="image/png"))
    structured = view.model_dump(mode="json", exclude_none=True)
    return CallToolResult(content=content, structured_content=structured)
