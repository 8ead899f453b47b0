"""query_trace_log's validation, SQL construction, endpoint choice and error vocabulary
(pure: no ClickHouse; the SQL itself runs on chdb in tests/integration/test_trace_log.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from autoopt.tools.clickhouse_executor import (
    ClickHouseAuthError,
    ClickHouseError,
    ClickHouseTimeout,
    ClickHouseUnavailable,
    chdb_path,
    classify,
    parse_http_url,
    redact,
)
from autoopt.tools.errors import InvalidName
from autoopt.tools.trace_log import (
    MAX_LIMIT,
    TRACE_TYPES,
    LiveEndpoint,
    Schema,
    endpoint_for,
    frame_of,
    queries_sql,
    query_log_sql,
    settings,
    shell_line,
    stacks_sql,
    totals_sql,
    validate,
    value_expr,
    where_sql,
)

SCHEMA = Schema(
    trace_columns={"trace": "Array(UInt64)", "trace_type": "Enum8('Real' = 0, 'CPU' = 1, "
                   "'Memory' = 2, 'MemorySample' = 3, 'MemoryPeak' = 4)", "size": "Int64",
                   "event_time": "DateTime", "query_id": "String",
                   "memory_context": "Enum8('Unknown' = -1)"},
    query_columns={"query_id": "String", "query": "String", "type": "Enum8",
                   "memory_usage": "UInt64"},
)
HOSTILE = "x' OR 1=1; DROP TABLE system.trace_log --"


def test_validate_accepts_the_documented_types_and_caps() -> None:
    assert set(TRACE_TYPES) == {"Memory", "MemorySample", "MemoryPeak", "CPU", "Real",
                                "JemallocSample"}
    req = validate("CPU", limit=MAX_LIMIT)
    assert (req.unit, req.kind, req.limit) == ("samples", "cpu", 200)
    assert validate("MemoryPeak").unit == "bytes"


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"trace_type": "Heap"}, "unknown trace_type"),
    ({"trace_type": "memory"}, "unknown trace_type"),
    ({"limit": 0}, "between 1 and 200"),
    ({"limit": 201}, "between 1 and 200"),
    ({"limit": True}, "between 1 and 200"),
    ({"timeout_s": 0}, "between 1 and 300"),
    ({"timeout_s": 301}, "between 1 and 300"),
    ({"database": "system.x"}, "invalid database"),
    ({"database": "a`b"}, "invalid database"),
    ({"query_id": HOSTILE}, "invalid query_id"),
    ({"query_id": ""}, "invalid query_id"),
    ({"query_like": ""}, "1 to 500"),
    ({"query_like": "x" * 501}, "1 to 500"),
    ({"memory_context": "Query"}, "unknown memory_context"),
    ({"since": "yesterday"}, "not an ISO datetime"),
    ({"since": "2026-11-24T12:00:00", "until": "2026-11-24T11:00:00"}, "must be before"),
])
def test_validate_refuses_with_the_rule(kwargs: dict, needle: str) -> None:
    kwargs = {"trace_type": "Memory", **kwargs}
    with pytest.raises(InvalidName, match=needle):
        validate(kwargs.pop("trace_type"), **kwargs)


def test_times_are_utc_and_offsets_convert() -> None:
    naive = validate("Memory", since="2026-11-24T12:00:00")
    offset = validate("Memory", since="2026-11-24T13:00:00+01:00")
    zulu = validate("Memory", since="2026-11-24T12:00:00Z")
    assert naive.since == offset.since == zulu.since
    assert naive.since and naive.since.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_client_values_are_bound_never_interpolated() -> None:
    req = validate("Memory", since="2026-11-24T12:00:00.7", until="2026-11-24T13:00:00.2",
                   query_id="abc-123", query_like=HOSTILE, memory_context="Process")
    for sql in (where_sql(req, SCHEMA), totals_sql(req, SCHEMA), stacks_sql(req, SCHEMA, 50),
                queries_sql(req, SCHEMA), query_log_sql(req, SCHEMA)):
        assert HOSTILE not in sql.text and "abc-123" not in sql.text
        assert "DROP" not in sql.text
        assert sql.params["query_like"] == HOSTILE and sql.params["query_id"] == "abc-123"
        for name in re.findall(r"\{(\w+):\w+\}", sql.text):
            assert name in sql.params, name
    params = where_sql(req, SCHEMA).params
    noon = datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp()
    assert params["since"] == noon and params["until"] == noon + 3601  # floor / ceil
    assert params["trace_type"] == "Memory" and params["memory_context"] == "Process"
    assert stacks_sql(req, SCHEMA, 50).params["n"] == 50
    assert "`system`.`trace_log`" in totals_sql(req, SCHEMA).text
    assert "`system`.`query_log`" in where_sql(req, SCHEMA).text  # query_like goes through it


def test_value_expressions_per_trace_type() -> None:
    assert value_expr(validate("Memory"))[0] == "sumIf(size, size > 0)"
    assert value_expr(validate("MemorySample"))[1] == "-sumIf(size, size < 0)"
    assert value_expr(validate("MemoryPeak"))[0] == "max(size)"
    assert value_expr(validate("CPU"))[0] == value_expr(validate("Real"))[0] == "count()"


def test_symbolization_and_settings() -> None:
    req = validate("Memory", timeout_s=7, lines=True)
    sql = stacks_sql(req, SCHEMA, 10).text
    assert "demangle(addressToSymbol(x))" in sql and "addressToLine(x)" in sql
    assert "any(symbols)" not in sql  # only when the server has the column
    with_symbols = Schema({**SCHEMA.trace_columns, "symbols": "Array(LowCardinality(String))"},
                          SCHEMA.query_columns)
    assert "any(symbols)" in stacks_sql(req, with_symbols, 10).text
    assert settings(req) == {"max_execution_time": 7, "allow_introspection_functions": 1}
    assert SCHEMA.trace_types == ["Real", "CPU", "Memory", "MemorySample", "MemoryPeak"]


def test_shell_line_is_a_rerunnable_curl() -> None:
    req = validate("Memory", query_like="%it's%")
    line = shell_line(where_sql(req, SCHEMA), req)
    assert line.startswith('curl -sS -u "$CLICKHOUSE_USER:$CLICKHOUSE_PASSWORD"')
    assert "param_query_like=%25it%27s%25" in line and "max_execution_time=30" in line


def test_frames_from_addresses() -> None:
    resolved = frame_of(0x1234, "DB::ColumnString::shrinkToFit()", "/src/ColumnString.cpp:42")
    assert (resolved.name, resolved.file, resolved.line, resolved.symbolized) == (
        "DB::ColumnString::shrinkToFit()", "/src/ColumnString.cpp", 42, True)
    missing = frame_of(0x1234, "", "/usr/bin/clickhouse")
    assert (missing.name, missing.module, missing.symbolized) == (
        "0x1234", "/usr/bin/clickhouse", False)


def test_endpoint_choice() -> None:
    live = [LiveEndpoint("http://127.0.0.1:5", "local", "abc"),
            LiveEndpoint("http://127.0.0.1:6", "docker")]
    assert endpoint_for("http://h:1", live, "http://env:2")[0] == "http://h:1"
    url, dep, note = endpoint_for(None, live, "http://env:2")
    assert (url, dep, "newest" in note) == ("http://127.0.0.1:5", live[0], True)
    assert endpoint_for(None, [], "http://env:2")[0] == "http://env:2"
    with pytest.raises(ClickHouseUnavailable, match="no ClickHouse endpoint"):
        endpoint_for(None, [], None)


def test_http_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPT_CLICKHOUSE_USER", "envuser")
    monkeypatch.setenv("AUTOOPT_CLICKHOUSE_PASSWORD", "envpw")
    ep = parse_http_url("http://db.example:9999")
    assert (ep.host, ep.port, ep.username, ep.password) == ("db.example", 9999, "envuser",
                                                            "envpw")
    assert "envpw" not in repr(ep) and "envpw" not in ep.display
    assert parse_http_url("https://u@h").port == 8443
    assert parse_http_url("https://u@h").username == "u"
    for bad, needle in [("http://u:pw@h:1", "password"), ("ftp://h", "invalid"),
                        ("http://h:1/db?x=1", "only scheme"), ("http://h:99999", "invalid")]:
        with pytest.raises(InvalidName, match=needle):
            parse_http_url(bad)
    assert redact("http://u:pw@h:1/x") == "http://u@h:1"


def test_chdb_paths_stay_in_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "data" / "fx").mkdir(parents=True)
    assert chdb_path("chdb://data/fx", tmp_path) == (tmp_path / "data" / "fx").resolve()
    assert chdb_path(f"chdb://{tmp_path}/data/fx", tmp_path) == (tmp_path / "data/fx").resolve()
    for bad, needle in [("chdb://../x", "outside"), ("chdb:///etc", "outside"),
                        ("chdb://", "invalid"), ("chdb://data/none", "no chdb session"),
                        ("chdb://data/fx?mode=rw", "invalid")]:
        with pytest.raises(InvalidName, match=needle):
            chdb_path(bad, tmp_path)


@pytest.mark.parametrize(("message", "kind"), [
    ("Code: 159. DB::Exception: Timeout exceeded: elapsed 1.0 s (TIMEOUT_EXCEEDED)",
     ClickHouseTimeout),
    ("HTTPConnectionPool(host='h', port=1): Read timed out. (read timeout=6)",
     ClickHouseTimeout),
    ("Code: 516. DB::Exception: default: Authentication failed (AUTHENTICATION_FAILED)",
     ClickHouseAuthError),
    ("Code: 193, e.displayText() = DB::Exception: Wrong password for user x",
     ClickHouseAuthError),
    ("Code: 446. DB::Exception: Introspection functions are disabled", ClickHouseAuthError),
    ("Error HTTPConnectionPool: Failed to establish a new connection: [Errno 111] "
     "Connection refused", ClickHouseUnavailable),
    ("Code: 60. DB::Exception: Unknown table expression identifier 'x'", ClickHouseError),
])
def test_errors_are_classified_with_a_next_step(message: str, kind: type) -> None:
    err = classify(message, "http://u@h:1", 5)
    assert type(err) is kind
    assert "http://u@h:1" in str(err)
    if kind is ClickHouseTimeout:
        assert "timeout_s=5" in str(err)
