"""PostgreSQL plans as evidence: EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) parsed into one
line per node, slow nodes flagged, and stored as a profile (one path per node, its own
time in ms) so diff_profiles compares two plans; pg_stat_statements' top statements too."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from autoopt.tools.profiling.model import Frame, Profile, ProfileBuilder

BIG_ROWS = 10_000  # a seq scan reading at least this many rows per loop is of a big table
MISESTIMATE = 10.0  # actual vs estimated rows per loop, either way
MISESTIMATE_MIN_ROWS = 100  # ... when the larger of the two is at least this
HIGH_LOOPS = 1_000
MAX_LINES = 40


class PlanNode(BaseModel):
    """One plan node, with what the flags and the lines need."""

    id: int = Field(description="pre-order number, 1 = the root")
    depth: int
    label: str = Field(description="node type, relation and index: the diff key")
    self_ms: float = Field(description="its own time over all loops (children's subtracted)")
    total_ms: float = Field(description="its inclusive time over all loops")
    rows: float = Field(description="actual rows per loop")
    plan_rows: float
    loops: int
    detail: str = Field("", description="condition or filter, sort method, batches")
    flags: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    """A parsed EXPLAIN ANALYZE."""

    query: str
    execution_ms: float
    planning_ms: float
    nodes: list[PlanNode]
    flags: list[str] = Field(description="one line per flagged node, slowest first")


def _label(node: dict[str, Any]) -> str:
    kind = node.get("Node Type", "?")
    if node.get("Strategy") in ("Hashed", "Sorted", "Mixed") and kind == "Aggregate":
        kind = {"Hashed": "HashAggregate", "Sorted": "GroupAggregate"}.get(
            node["Strategy"], "MixedAggregate")
    if node.get("Join Type") and node["Join Type"] != "Inner":
        kind = f"{kind} ({node['Join Type']})"
    if node.get("Index Name"):
        kind += f" using {node['Index Name']}"
    if node.get("Relation Name"):
        kind += f" on {node['Relation Name']}"
    elif node.get("CTE Name"):
        kind += f" on CTE {node['CTE Name']}"
    if node.get("Subplan Name"):
        kind = f"{node['Subplan Name']}: {kind}"
    return kind


def _detail(node: dict[str, Any]) -> str:
    parts = []
    for key in ("Index Cond", "Hash Cond", "Merge Cond", "Join Filter", "Filter", "Recheck Cond"):
        if node.get(key):
            parts.append(f"{key.lower()} {node[key]}")
    if node.get("Sort Key"):
        parts.append(f"sort {', '.join(node['Sort Key'])}")
    if node.get("Sort Method"):
        parts.append(f"{node['Sort Method']} {node.get('Sort Space Used', '?')} kB "
                     f"{node.get('Sort Space Type', '').lower()}".rstrip())
    if node.get("Hash Batches", 1) > 1:
        parts.append(f"{node['Hash Batches']} hash batches")
    if node.get("HashAgg Batches", 1) > 1:
        parts.append(f"{node['HashAgg Batches']} hashagg batches")
    return "; ".join(parts)


def _flags(node: dict[str, Any], rows: float, loops: int, temp_written: int) -> list[str]:
    out = []
    read = rows + node.get("Rows Removed by Filter", 0)
    if node.get("Node Type") == "Seq Scan" and read >= BIG_ROWS:
        every = f" in each of {loops} loops" if loops > 1 else ""
        out.append(f"seq scan: reads {read:,.0f} rows of {node.get('Relation Name')}{every}, "
                   f"keeps {rows:,.0f}" + (f" (filter {node['Filter']})"
                                          if node.get("Filter") else ""))
    est = float(node.get("Plan Rows", 0))
    low, high = sorted((rows, est))
    if high >= MISESTIMATE_MIN_ROWS and high > MISESTIMATE * max(low, 1.0):
        out.append(f"misestimate: {est:,.0f} rows estimated, {rows:,.0f} actual "
                   f"({high / max(low, 1.0):,.0f}x)")
    if node.get("Sort Space Type") == "Disk" or "external" in str(node.get("Sort Method", "")):
        out.append(f"spill: sort to disk ({node.get('Sort Space Used', '?')} kB)")
    if node.get("Hash Batches", 1) > 1 or node.get("HashAgg Batches", 1) > 1:
        batches = node.get("Hash Batches") or node.get("HashAgg Batches")
        out.append(f"spill: hash in {batches} batches (work_mem too small for its input)")
    elif temp_written > 0 and not any(f.startswith("spill") for f in out):
        out.append(f"spill: {temp_written} temp blocks written")
    if loops >= HIGH_LOOPS:
        out.append(f"loops: runs {loops:,} times")
    return out


def parse(explain_json: list[dict[str, Any]] | dict[str, Any], query: str) -> Plan:
    """The plan of `query` from psql's FORMAT JSON output (a one-element list)."""
    top = explain_json[0] if isinstance(explain_json, list) else explain_json
    nodes: list[PlanNode] = []

    def walk(node: dict[str, Any], depth: int) -> float:
        loops = int(node.get("Actual Loops", 1)) or 1
        total = float(node.get("Actual Total Time", 0.0)) * loops
        me = PlanNode(id=len(nodes) + 1, depth=depth, label=_label(node), self_ms=0.0,
                      total_ms=total, rows=float(node.get("Actual Rows", 0)),
                      plan_rows=float(node.get("Plan Rows", 0)), loops=loops,
                      detail=_detail(node))
        nodes.append(me)
        children = node.get("Plans", [])
        child_total, child_temp = 0.0, 0
        for child in children:
            child_total += walk(child, depth + 1)
            child_temp += int(child.get("Temp Written Blocks", 0))
        me.self_ms = max(0.0, total - child_total)
        temp = int(node.get("Temp Written Blocks", 0)) - child_temp
        me.flags = _flags(node, me.rows, loops, temp)
        return total

    walk(top["Plan"], 0)
    flagged = sorted((n for n in nodes if n.flags), key=lambda n: -n.self_ms)
    flags = [f"#{n.id} {n.label} ({n.self_ms:.1f} ms): {f}" for n in flagged for f in n.flags]
    return Plan(query=query, execution_ms=float(top.get("Execution Time", 0.0)),
                planning_ms=float(top.get("Planning Time", 0.0)), nodes=nodes, flags=flags)


def lines(plan: Plan) -> list[str]:
    """The plan tree, one line per node: own ms, rows actual/estimated per loop, loops."""
    out = []
    for n in plan.nodes[:MAX_LINES]:
        loops = f" x{n.loops} loops" if n.loops > 1 else ""
        mark = " FLAG" if n.flags else ""
        detail = f"; {n.detail}" if n.detail else ""
        out.append(f"{'  ' * n.depth}#{n.id} {n.label}: {n.self_ms:.1f} ms, rows "
                   f"{n.rows:,.0f}/{n.plan_rows:,.0f}{loops}{detail}{mark}"[:220])
    if len(plan.nodes) > MAX_LINES:
        out.append(f"... {len(plan.nodes) - MAX_LINES} more nodes in the stored plan")
    return out


def to_profile(plan: Plan, *, label: str, target: str, env: str) -> Profile:
    """The plan as a profile: a path per node (root..node labels), its own time in ms."""
    builder = ProfileBuilder()
    path: list[Frame] = []
    for n in plan.nodes:
        path = [*path[: n.depth], Frame(name=n.label)]
        builder.add(path, max(n.self_ms, 1e-6))
    return Profile(
        kind="plan", label=label, target=target, env=env, workload=plan.query,
        tool="explain", measure="ms in the plan node itself (EXPLAIN ANALYZE, all loops)",
        unit="ms", total=builder.total, frames=builder.frames, stacks=builder.stacks,
        overhead="moderate", overhead_note="EXPLAIN ANALYZE times every node (a few % more)",
        notes=plan.flags,
    )


def one_line(sql: str, width: int = 100) -> str:
    return re.sub(r"\s+", " ", sql).strip()[:width]


STATEMENTS_SQL = (
    "SELECT json_agg(s) FROM (SELECT query, calls, total_exec_time, mean_exec_time, rows, "
    "shared_blks_hit + shared_blks_read AS blocks, temp_blks_written FROM pg_stat_statements "
    "WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE 'SHOW %' "
    "ORDER BY total_exec_time DESC LIMIT 10) s"
)


def statements_profile(rows: list[dict[str, Any]], names: dict[str, str], *, label: str,
                       target: str, env: str, workload: str | None) -> Profile:
    """pg_stat_statements' top statements (STATEMENTS_SQL's rows) as a profile: one path per
    statement, named by its query file when the text matches one (`names`: one_line(text)
    with constants as $n -> file stem), its total execution time in ms."""
    builder = ProfileBuilder()
    notes = []
    for r in rows:
        text = one_line(r["query"])
        name = names.get(text) or text
        builder.add([Frame(name=name)], max(float(r["total_exec_time"]), 1e-6),
                    count=int(r["calls"]))
        notes.append(f"{name}: {r['calls']} calls, {r['total_exec_time']:.1f} ms total, "
                     f"{r['mean_exec_time']:.1f} ms mean, {r['rows']} rows, {r['blocks']} "
                     f"blocks, {r['temp_blks_written']} temp blocks written")
    return Profile(
        kind="plan", label=label, target=target, env=env, workload=workload,
        tool="pg_stat_statements", measure="ms of execution per statement over the workload",
        unit="ms", total=builder.total, frames=builder.frames, stacks=builder.stacks,
        overhead="low", overhead_note="pg_stat_statements counts every statement",
        notes=notes,
    )


def normalized(sql: str) -> str:
    """A query file's text as pg_stat_statements shows it: comments dropped, literals
    $1, $2 ... (numbers and quoted strings, left to right), one line."""
    body = re.sub(r"--[^\n]*", "", sql).strip().rstrip(";")
    count = 0

    def dollar(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    body = re.sub(r"'(?:[^']|'')*'|(?<![\w$.])\d+(?:\.\d+)?(?![\w.])", dollar, body)
    return one_line(body)
