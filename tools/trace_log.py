"""ClickHouse's own profiler output: top stacks from system.trace_log, per-query memory from
system.query_log, stored as a profile (tools/profiling) so two of them diff.

The SQL is built here from validated values only: identifiers come from a fixed set or a
checked pattern, and every client value (trace type, window, query id, LIKE pattern, limit)
is a server-side bound parameter. The same SQL runs on a server over HTTP and on chdb
(tools/clickhouse_executor.py).

What a stack's value means depends on the trace type:
  Memory          bytes of the allocations that crossed memory_profiler_step (size > 0)
  MemorySample    bytes of randomly sampled allocations (frees are reported apart)
  JemallocSample  bytes of jemalloc-sampled allocations
  MemoryPeak      the tracked memory when this stack set a new peak: max per stack, and the
                  total is the overall maximum (shares of it are not additive)
  CPU, Real       samples of the CPU-time / wall-clock query profiler
"""

from __future__ import annotations

import math
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from urllib.parse import urlencode

from pydantic import BaseModel, Field

from autoopt.tools.clickhouse_executor import (
    URL_ENV,
    ClickHouseError,
    ClickHouseUnavailable,
    Executor,
    Rows,
    open_executor,
)
from autoopt.tools.errors import InvalidName
from autoopt.tools.journal import Step
from autoopt.tools.profiling.model import Frame, Profile, ProfileBuilder
from autoopt.tools.workspace import Workspace, check_name

TraceType = Literal["Memory", "MemorySample", "MemoryPeak", "CPU", "Real", "JemallocSample"]
MemoryContext = Literal["Global", "User", "Process", "Thread"]
TRACE_TYPES: tuple[str, ...] = get_args(TraceType)
MEMORY_CONTEXTS: tuple[str, ...] = get_args(MemoryContext)
MAX_LIMIT = 200  # stacks returned to the client
STORE_LIMIT = 1000  # stacks kept in the stored profile (so diffs see beyond the top N)
DEFAULT_TIMEOUT_S = 30
MAX_TIMEOUT_S = 300
QUERY_TEXT_CHARS = 300
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_QUERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MEMORY = ("Memory", "MemorySample", "JemallocSample")

MEASURES = {
    "Memory": "bytes allocated by allocations that crossed memory_profiler_step "
              "(trace_log Memory)",
    "MemorySample": "bytes of sampled allocations (trace_log MemorySample, "
                    "memory_profiler_sample_probability)",
    "JemallocSample": "bytes of jemalloc-sampled allocations (trace_log JemallocSample)",
    "MemoryPeak": "tracked memory when the stack set a new peak (trace_log MemoryPeak; max per "
                  "stack, total = overall max, shares not additive)",
    "CPU": "CPU-time profiler samples (trace_log CPU, query_profiler_cpu_time_period_ns)",
    "Real": "wall-clock profiler samples (trace_log Real, query_profiler_real_time_period_ns)",
}


# -- validated request ------------------------------------------------------------------

@dataclass(frozen=True)
class TraceLogRequest:
    """A query_trace_log call after validation: safe to turn into SQL."""

    trace_type: str
    database: str = "system"
    since: datetime | None = None
    until: datetime | None = None
    query_id: str | None = None
    query_like: str | None = None
    memory_context: str | None = None
    limit: int = 20
    timeout_s: int = DEFAULT_TIMEOUT_S
    lines: bool = False

    @property
    def unit(self) -> Literal["bytes", "samples"]:
        return "samples" if self.trace_type in ("CPU", "Real") else "bytes"

    @property
    def kind(self) -> Literal["memory", "cpu"]:
        return "cpu" if self.unit == "samples" else "memory"


def parse_time(value: str, what: str) -> datetime:
    """An ISO 8601 date or datetime; a value without an offset is UTC."""
    if len(value) > 40:
        raise InvalidName(f"{what} is too long for an ISO datetime")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidName(f"{what}={value!r} is not an ISO datetime "
                          "(e.g. 2026-11-24T12:00:00 or 2026-11-24T12:00:00+01:00)") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def validate(
    trace_type: str = "Memory",
    *,
    database: str = "system",
    since: str | None = None,
    until: str | None = None,
    query_id: str | None = None,
    query_like: str | None = None,
    memory_context: str | None = None,
    limit: int = 20,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    lines: bool = False,
) -> TraceLogRequest:
    """Check every parameter; raise InvalidName saying the rule."""
    if trace_type not in TRACE_TYPES:
        raise InvalidName(f"unknown trace_type {trace_type!r}: use one of "
                          f"{', '.join(TRACE_TYPES)}")
    if not _IDENT.fullmatch(database):
        raise InvalidName(f"invalid database {database!r}: a plain identifier, e.g. 'system'")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidName(f"limit={limit!r}: between 1 and {MAX_LIMIT} stacks "
                          "(the stored profile keeps more)")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) \
            or not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise InvalidName(f"timeout_s={timeout_s!r}: between 1 and {MAX_TIMEOUT_S} seconds")
    if query_id is not None and not _QUERY_ID.fullmatch(query_id):
        raise InvalidName(f"invalid query_id {query_id!r}: letters, digits and . _ : - "
                          "(at most 128), as ClickHouse prints them")
    if query_like is not None and not 1 <= len(query_like) <= 500:
        raise InvalidName("query_like must be a LIKE pattern of 1 to 500 characters")
    if memory_context is not None and memory_context not in MEMORY_CONTEXTS:
        raise InvalidName(f"unknown memory_context {memory_context!r}: use one of "
                          f"{', '.join(MEMORY_CONTEXTS)}")
    start = parse_time(since, "since") if since else None
    end = parse_time(until, "until") if until else None
    if start and end and start >= end:
        raise InvalidName(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
    return TraceLogRequest(trace_type=trace_type, database=database, since=start, until=end,
                           query_id=query_id, query_like=query_like,
                           memory_context=memory_context, limit=limit, timeout_s=timeout_s,
                           lines=lines)


# -- SQL ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sql:
    """One statement and its bound parameters."""

    text: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Schema:
    """What the server's trace_log/query_log look like (versions differ)."""

    trace_columns: dict[str, str]
    query_columns: dict[str, str]

    @property
    def trace_types(self) -> list[str]:
        """The values of trace_log.trace_type's Enum8 on this server."""
        return re.findall(r"'([A-Za-z]+)'\s*=", self.trace_columns.get("trace_type", ""))

    @property
    def has_query_log(self) -> bool:
        return {"query_id", "memory_usage", "query", "type"} <= set(self.query_columns)


def table(req: TraceLogRequest, name: Literal["trace_log", "query_log"]) -> str:
    return f"`{req.database}`.`{name}`"


def settings(req: TraceLogRequest) -> dict[str, str | int]:
    """Per-query settings: the server stops the query at timeout_s; symbolization on."""
    return {"max_execution_time": req.timeout_s, "allow_introspection_functions": 1}


def schema_sql(req: TraceLogRequest) -> Sql:
    return Sql(
        "SELECT table, name, type FROM system.columns "
        "WHERE database = {database:String} AND table IN ('trace_log', 'query_log') "
        "ORDER BY table, position",
        {"database": req.database},
    )


def where_sql(req: TraceLogRequest, schema: Schema) -> Sql:
    """The trace_log filter every statement shares."""
    conds = ["trace_type = {trace_type:String}"]
    params: dict[str, Any] = {"trace_type": req.trace_type}
    if req.since:
        params["since"] = math.floor(req.since.timestamp())
        conds.append("event_date >= toDate(toDateTime({since:Int64}))")
        conds.append("event_time >= toDateTime({since:Int64})")
    if req.until:
        params["until"] = math.ceil(req.until.timestamp())
        conds.append("event_date <= toDate(toDateTime({until:Int64}))")
        conds.append("event_time < toDateTime({until:Int64})")
    if req.query_id:
        params["query_id"] = req.query_id
        conds.append("query_id = {query_id:String}")
    if req.memory_context:
        params["memory_context"] = req.memory_context
        conds.append("memory_context = {memory_context:String}")
    if req.query_like:
        params["query_like"] = req.query_like
        window = (" AND event_date >= toDate(toDateTime({since:Int64})) - 1"
                  if req.since else "")
        conds.append(f"query_id IN (SELECT query_id FROM {table(req, 'query_log')} "
                     f"WHERE query LIKE {{query_like:String}}{window})")
    return Sql(" AND ".join(conds), params)


def value_expr(req: TraceLogRequest) -> tuple[str, str]:
    """(value, freed) aggregate expressions for one stack (or all rows)."""
    if req.trace_type in _MEMORY:
        return "sumIf(size, size > 0)", "-sumIf(size, size < 0)"
    if req.trace_type == "MemoryPeak":
        return "max(size)", "toInt64(0)"
    return "count()", "toInt64(0)"


def totals_sql(req: TraceLogRequest, schema: Schema) -> Sql:
    where = where_sql(req, schema)
    value, freed = value_expr(req)
    return Sql(
        f"SELECT count() AS rows, {value} AS total, {freed} AS freed, "
        f"uniqExact(trace) AS stacks, countIf(empty(trace)) AS empty_traces, "
        f"uniqExact(query_id) AS queries, toString(min(event_time)) AS first, "
        f"toString(max(event_time)) AS last "
        f"FROM {table(req, 'trace_log')} WHERE {where.text}",
        where.params,
    )


def contexts_sql(req: TraceLogRequest, schema: Schema) -> Sql | None:
    """Rows and value per memory-tracker level (one allocation can be traced per level)."""
    if req.kind != "memory" or "memory_context" not in schema.trace_columns:
        return None
    where = where_sql(req, schema)
    value, _ = value_expr(req)
    return Sql(
        f"SELECT toString(memory_context) AS context, count() AS rows, {value} AS value "
        f"FROM {table(req, 'trace_log')} WHERE {where.text} "
        f"GROUP BY context ORDER BY context",
        where.params,
    )


def stacks_sql(req: TraceLogRequest, schema: Schema, n: int) -> Sql:
    """The heaviest n stacks, symbolized on the server (leaf first, as ClickHouse stores)."""
    where = where_sql(req, schema)
    value, freed = value_expr(req)
    symbolize = "arrayMap(x -> demangle(addressToSymbol(x)), trace)"
    logged = ""
    names = symbolize
    if "symbols" in schema.trace_columns:  # servers that symbolize when they write the row
        logged = ", any(symbols) AS logged"
        names = (f"if(length(logged) = length(trace) AND NOT has(logged, ''), "
                 f"arrayMap(s -> toString(s), logged), {symbolize})")
    lines = ", arrayMap(x -> addressToLine(x), trace) AS lines" if req.lines else ""
    order = "value DESC, samples DESC, trace ASC"
    return Sql(
        f"SELECT trace, samples, value, freed, {names} AS names{lines} FROM ("
        f"SELECT trace, count() AS samples, {value} AS value, {freed} AS freed{logged} "
        f"FROM {table(req, 'trace_log')} WHERE {where.text} "
        f"GROUP BY trace ORDER BY {order} LIMIT {{n:UInt32}}) ORDER BY {order}",
        {**where.params, "n": n},
    )


def queries_sql(req: TraceLogRequest, schema: Schema) -> Sql:
    """Per query_id: the traced value and samples (the heaviest `limit` queries)."""
    where = where_sql(req, schema)
    value, _ = value_expr(req)
    return Sql(
        f"SELECT query_id, count() AS samples, {value} AS value "
        f"FROM {table(req, 'trace_log')} WHERE {where.text} AND query_id != '' "
        f"GROUP BY query_id ORDER BY value DESC, query_id ASC LIMIT {{n:UInt32}}",
        {**where.params, "n": req.limit},
    )


def query_log_sql(req: TraceLogRequest, schema: Schema) -> Sql:
    """query_log facts (peak memory, duration, text) for the queries of queries_sql."""
    inner = queries_sql(req, schema)
    return Sql(
        f"SELECT query_id, max(memory_usage) AS memory_usage, "
        f"max(query_duration_ms) AS duration_ms, toString(argMax(type, event_time)) AS status, "
        f"argMax(substring(query, 1, {QUERY_TEXT_CHARS}), event_time) AS query "
        f"FROM {table(req, 'query_log')} "
        f"WHERE toString(type) NOT IN ('QueryStart', '1') "
        f"AND query_id IN (SELECT query_id FROM ({inner.text})) "
        f"GROUP BY query_id",
        inner.params,
    )


# -- results ---------------------------------------------------------------------------------

class TraceStack(BaseModel):
    """One distinct stack of the selection."""

    rank: int
    value: float = Field(description="bytes or samples (see measure)")
    percent: float = Field(description="value as % of the selection's total")
    samples: int = Field(description="trace_log rows merged into this stack")
    freed_bytes: float | None = Field(None, description="MemorySample/JemallocSample frees")
    leaf: str = Field(description="the innermost frame (the allocating function)")
    frames: list[str] = Field(description="root..leaf; unresolved frames as 0x<address>")
    unresolved_frames: int


class QueryMemory(BaseModel):
    """One query of the selection: what trace_log saw, and query_log's own numbers."""

    query_id: str
    value: float = Field(description="traced bytes or samples of this query")
    samples: int
    peak_memory_mb: float | None = Field(None, description="query_log memory_usage")
    duration_ms: float | None = None
    status: str | None = None
    query: str | None = Field(None, description=f"first {QUERY_TEXT_CHARS} characters")


class Symbolization(BaseModel):
    """How many distinct addresses of the returned stacks resolved to a function name."""

    addresses: int
    unresolved: int
    unresolved_share: float = Field(description="unresolved / addresses (0..1)")
    note: str = ""


class TraceLogResult(BaseModel):
    """query_trace_log's answer."""

    endpoint: str = Field(description="where the SQL ran (no password)")
    executor: str = Field(description="http | chdb")
    server_version: str | None = None
    database: str
    trace_type: str
    measure: str
    unit: Literal["bytes", "samples"]
    since: str | None = None
    until: str | None = None
    query_id: str | None = None
    query_like: str | None = None
    memory_context: str | None = None
    rows: int = Field(description="trace_log rows matched")
    total: float = Field(description="over ALL matched rows, not only the returned stacks")
    freed_bytes: float | None = None
    stacks_total: int = Field(description="distinct stacks matched")
    limit: int
    truncated: bool = Field(description="more stacks matched than were returned")
    stacks: list[TraceStack]
    symbolization: Symbolization
    contexts: dict[str, float] = Field(default_factory=dict,
                                       description="value per memory-tracker level")
    queries: list[QueryMemory] = Field(default_factory=list)
    query_log: bool = Field(description="query_log was available for per-query memory")
    first_event: str | None = None
    last_event: str | None = None
    profile_files: dict[str, str] = Field(default_factory=dict,
                                          description="the stored profile and its views")
    profile_label: str | None = None
    notes: list[str] = Field(default_factory=list)
    elapsed_s: float


# -- running -----------------------------------------------------------------------------------

def read_schema(ex: Executor, req: TraceLogRequest) -> Schema:
    sql = schema_sql(req)
    rows = ex.query(sql.text, sql.params, settings(req)).rows
    trace = {name: typ for tbl, name, typ in rows if tbl == "trace_log"}
    query = {name: typ for tbl, name, typ in rows if tbl == "query_log"}
    return Schema(trace_columns=trace, query_columns=query)


def check_schema(req: TraceLogRequest, schema: Schema, endpoint: str, version: str | None) -> None:
    """Clear errors for a server that cannot answer this request."""
    server = f"{endpoint} (ClickHouse {version or '?'})"
    if not schema.trace_columns:
        raise ClickHouseError(
            f"{server} has no {req.database}.trace_log: enable <trace_log> in the server "
            "config (targets/clickhouse/profiling/trace_log.xml), run the workload with "
            "memory_profiler_step set, then SYSTEM FLUSH LOGS")
    missing = {"trace", "trace_type", "event_time", "query_id"} - set(schema.trace_columns)
    if req.kind == "memory":
        missing |= {"size"} - set(schema.trace_columns)
    if missing:
        raise ClickHouseError(f"{req.database}.trace_log on {server} lacks column(s) "
                              f"{', '.join(sorted(missing))}: the server is too old for "
                              f"{req.trace_type} traces")
    known = schema.trace_types
    if known and req.trace_type not in known:
        raise ClickHouseError(f"{server} has no trace_type {req.trace_type!r}; its trace_log "
                              f"knows {', '.join(known)}")
    if req.memory_context and "memory_context" not in schema.trace_columns:
        raise ClickHouseError(f"{req.database}.trace_log on {server} has no memory_context "
                              "column; omit memory_context")
    if req.query_like and not schema.has_query_log:
        raise ClickHouseError(f"query_like needs {req.database}.query_log (with query_id, "
                              f"query, type, memory_usage) on {server}; it has none")


def frame_of(address: int, name: str, line: str | None) -> Frame:
    """A profile frame from an address, its symbol ('' = unresolved) and addressToLine."""
    file = module = None
    number = None
    if line:
        path, sep, tail = line.rpartition(":")
        if sep and tail.isdigit():
            file, number = path, int(tail)
        else:
            module = line
    if name:
        return Frame(name=name, file=file, line=number, module=module)
    return Frame(name=f"0x{address:x}", file=file, line=number, module=module, symbolized=False)


def run_query(ex: Executor, req: TraceLogRequest, *, steps: list[Step] | None = None,
              endpoint_note: str = "") -> tuple[TraceLogResult, ProfileBuilder]:
    """Run the statements; the result for the client and the stacks for the stored profile."""
    started = time.monotonic()
    log = steps if steps is not None else []

    def run(sql: Sql) -> Rows:
        t0 = time.monotonic()
        rows = ex.query(sql.text, sql.params, settings(req))
        log.append(Step(phase="profile", shell=shell_line(sql, req), elapsed_s=round(
            time.monotonic() - t0, 3), note=f"{ex.kind} {ex.endpoint}"))
        return rows

    version_rows = ex.query("SELECT version()", None, settings(req)).rows
    version = str(version_rows[0][0]) if version_rows else None
    schema = read_schema(ex, req)
    check_schema(req, schema, ex.endpoint, version)
    notes = [endpoint_note] if endpoint_note else []

    totals = run(totals_sql(req, schema)).dicts()[0]
    total = float(totals["total"] or 0)
    stacks_total = int(totals["stacks"] or 0)
    rows_matched = int(totals["rows"] or 0)
    if rows_matched == 0:
        notes.append(
            f"no {req.trace_type} rows matched: was the workload run with the profiler on "
            "(memory_profiler_step / query_profiler_*_period_ns), and SYSTEM FLUSH LOGS run "
            "after it? Check since/until (UTC), query_id and query_like.")

    store_n = max(req.limit, min(STORE_LIMIT, stacks_total))
    stack_rows = run(stacks_sql(req, schema, store_n)).dicts() if rows_matched else []

    builder = ProfileBuilder()
    symbols: dict[int, bool] = {}
    stacks: list[TraceStack] = []
    for rank, row in enumerate(stack_rows, start=1):
        trace = [int(a) for a in row["trace"]]
        names = [str(n) for n in row["names"]]
        lines = [str(x) for x in row.get("lines") or []] or [None] * len(trace)
        frames = [frame_of(a, n, ln) for a, n, ln in zip(trace, names, lines, strict=True)]
        frames.reverse()  # ClickHouse stores leaf first; the model is root first
        if not frames:
            frames = [Frame(name="[no stack]", symbolized=False)]
        value = float(row["value"] or 0)
        builder.add(frames, value, int(row["samples"]))
        if rank <= req.limit:
            for a, n in zip(trace, names, strict=True):
                symbols[a] = symbols.get(a, False) or bool(n)
            stacks.append(TraceStack(
                rank=rank, value=value,
                percent=round(100.0 * value / total, 3) if total else 0.0,
                samples=int(row["samples"]),
                freed_bytes=float(row["freed"]) if req.trace_type in _MEMORY[1:] else None,
                leaf=frames[-1].label, frames=[f.label for f in frames],
                unresolved_frames=sum(1 for n in names if not n)))

    unresolved = sum(1 for ok in symbols.values() if not ok)
    symbolization = Symbolization(
        addresses=len(symbols), unresolved=unresolved,
        unresolved_share=round(unresolved / len(symbols), 4) if symbols else 0.0,
        note=("frames that resolve to no symbol: a stripped binary (build RelWithDebInfo for "
              "profiling), JIT code, or addresses from another build than the one answering"
              if unresolved else ""))

    contexts: dict[str, float] = {}
    ctx_sql = contexts_sql(req, schema)
    if ctx_sql is not None and rows_matched:
        contexts = {str(r["context"]): float(r["value"] or 0) for r in run(ctx_sql).dicts()}
        if len([c for c, v in contexts.items() if v]) > 1 and not req.memory_context:
            notes.append("rows come from several memory-tracker levels "
                         f"({', '.join(sorted(contexts))}); an allocation can be traced once "
                         "per level: pass memory_context (e.g. Process) to count one level")

    queries = query_memory(run, req, schema) if rows_matched else []
    if not schema.has_query_log:
        notes.append(f"no {req.database}.query_log: per-query memory is not available")

    result = TraceLogResult(
        endpoint=ex.endpoint, executor=ex.kind, server_version=version, database=req.database,
        trace_type=req.trace_type, measure=MEASURES[req.trace_type], unit=req.unit,
        since=req.since.isoformat() if req.since else None,
        until=req.until.isoformat() if req.until else None,
        query_id=req.query_id, query_like=req.query_like, memory_context=req.memory_context,
        rows=rows_matched, total=total,
        freed_bytes=float(totals["freed"] or 0) if req.trace_type in _MEMORY[1:] else None,
        stacks_total=stacks_total, limit=req.limit, truncated=stacks_total > len(stacks),
        stacks=stacks, symbolization=symbolization, contexts=contexts, queries=queries,
        query_log=schema.has_query_log,
        first_event=str(totals["first"]) if rows_matched else None,
        last_event=str(totals["last"]) if rows_matched else None,
        notes=notes, elapsed_s=round(time.monotonic() - started, 3),
    )
    return result, builder


def query_memory(run: Any, req: TraceLogRequest, schema: Schema) -> list[QueryMemory]:
    traced = run(queries_sql(req, schema)).dicts()
    facts: dict[str, dict[str, Any]] = {}
    if schema.has_query_log and traced:
        facts = {str(r["query_id"]): r for r in run(query_log_sql(req, schema)).dicts()}
    out = []
    for r in traced:
        f = facts.get(str(r["query_id"]), {})
        mem = f.get("memory_usage")
        out.append(QueryMemory(
            query_id=str(r["query_id"]), value=float(r["value"] or 0), samples=int(r["samples"]),
            peak_memory_mb=round(int(mem) / 2**20, 3) if mem is not None else None,
            duration_ms=float(f["duration_ms"]) if f.get("duration_ms") is not None else None,
            status=f.get("status"), query=f.get("query")))
    return out


def shell_line(sql: Sql, req: TraceLogRequest) -> str:
    """The statement as a person re-runs it over HTTP (curl; bound values as param_*)."""
    query = {**{k: str(v) for k, v in settings(req).items()},
             **{f"param_{k}": str(v) for k, v in sql.params.items()}}
    url = f'"$CLICKHOUSE_URL/?{urlencode(query)}"'
    return (f'curl -sS -u "$CLICKHOUSE_USER:$CLICKHOUSE_PASSWORD" {url} '
            f"--data-binary {shlex.quote(sql.text + ' FORMAT PrettyCompactMonoBlock')}")


def build_profile(result: TraceLogResult, builder: ProfileBuilder, *, target: str, env: str,
                  label: str, steps: list[Step], revision: str | None = None) -> Profile:
    """The profile-model view of a result (stored stacks may exceed the returned top N)."""
    kept = len(builder.stacks)
    notes = [f"{kept} of {result.stacks_total} distinct stacks stored; total is over all "
             f"{result.rows} rows", *result.notes]
    filt = {k: v for k, v in (("since", result.since), ("until", result.until),
                              ("query_id", result.query_id), ("query_like", result.query_like),
                              ("memory_context", result.memory_context)) if v}
    if filt:
        notes.append("filter: " + ", ".join(f"{k}={v}" for k, v in filt.items()))
    return Profile(
        kind="cpu" if result.unit == "samples" else "memory", label=label, target=target,
        env=env, revision=revision, tool=f"clickhouse trace_log ({result.executor})",
        measure=result.measure, unit=result.unit, total=result.total,
        frames=builder.frames, stacks=builder.stacks, overhead="low",
        overhead_note="ClickHouse's built-in profiler; cost depends on memory_profiler_step "
                      "and the sampling periods",
        unsymbolized_frames=builder.unsymbolized, notes=notes, steps=steps,
        complete=True,
    )


@dataclass(frozen=True)
class LiveEndpoint:
    """A running deployment of the target that serves ClickHouse's HTTP interface."""

    url: str
    env: str
    revision: str | None = None


def endpoint_for(url: str | None, live: list[LiveEndpoint], env_url: str | None
                 ) -> tuple[str, LiveEndpoint | None, str]:
    """(url, the deployment it belongs to, how it was chosen): an explicit url, else the
    target's newest live deployment, else AUTOOPT_CLICKHOUSE_URL."""
    if url:
        return url, None, ""
    if live:
        note = "" if len(live) == 1 else (
            f"{len(live)} live deployments of the target; queried the newest ({live[0].url})")
        return live[0].url, live[0], note
    if env_url:
        return env_url, None, f"endpoint from {URL_ENV}"
    raise ClickHouseUnavailable(
        "no ClickHouse endpoint: deploy the target (its HTTP port is used), pass url "
        f"(http://host:8123 or chdb://<dir>), or set {URL_ENV}")


def default_label(trace_type: str) -> str:
    return f"tracelog-{trace_type.lower()}"


def query_trace_log(
    ws: Workspace,
    req: TraceLogRequest,
    *,
    url: str | None = None,
    target: str | None = None,
    live: list[LiveEndpoint] | None = None,
    env: str | None = None,
    label: str | None = None,
) -> TraceLogResult:
    """Open the endpoint, run the statements, and store the stacks as a profile of `target`
    (results/<target>/<env>/profiles/<label>-*) when a target is named."""
    from autoopt.tools.profiling import store

    chosen, deployment, note = endpoint_for(url, live or [], os.environ.get(URL_ENV))
    env = check_name(env or (deployment.env if deployment else "local"), "environment name")
    label = check_name(label or default_label(req.trace_type), "profile label")
    if target:
        check_name(target, "target name")
        store.check_label_free(ws, target, env, label, req.kind)
    ex = open_executor(chosen, workspace_root=ws.root, timeout_s=req.timeout_s)
    steps: list[Step] = []
    try:
        result, builder = run_query(ex, req, steps=steps, endpoint_note=note)
    finally:
        ex.close()
    if target:
        profile = build_profile(result, builder, target=target, env=env, label=label,
                                steps=steps, revision=deployment.revision if deployment else None)
        result.profile_files = store.save(ws, profile, picture=False)
        result.profile_label = label
    else:
        result.notes.append("not stored: pass target to keep these stacks as a profile")
    return result
