"""query_trace_log end to end: the SQL and aggregation on chdb (the real ClickHouse engine)
over a trace_log with real addresses, the MCP tool on it, and the HTTP path against a real
(old) clickhouse-server.

No ClickHouse server with a filled trace_log can run here: chdb never fills its own, and
Debian's clickhouse-server 18.16 has none. The fixture therefore copies system.trace_log's
schema (chdb's, ClickHouse 26.9) into a table and inserts rows whose stacks are real
addresses of this process (libc/libpython functions via ctypes, a chdb thread's stack from
system.stack_trace) plus addresses that map to no symbol, with known sizes; the expected
aggregation is computed here by hand.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.clickhouse_executor import (
    ChdbExecutor,
    ClickHouseAuthError,
    ClickHouseError,
    ClickHouseTimeout,
    ClickHouseUnavailable,
    HttpExecutor,
    open_executor,
    parse_http_url,
)
from autoopt.tools.profiling import store
from autoopt.tools.trace_log import run_query, validate
from autoopt.tools.workspace import Workspace
from tests.conftest import call_done

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "fixtures" / "trace_log" / "chdb-system-logs.xml"
SERVER_SCRIPT = REPO / "scripts" / "clickhouse-server.sh"
DB = "dump"
BASE_TS = 1_795_000_000  # every fixture row is placed relative to it (2026-11-18, UTC)
SINCE = datetime.fromtimestamp(BASE_TS - 1000, UTC).isoformat()  # the window's start
MiB = 1 << 20
UNRESOLVED = (8, 16)  # offsets inside the ELF header: no symbol there


@dataclass
class Fixture:
    """The chdb directory and what the rows in it add up to (computed by hand)."""

    path: Path
    names: dict[int, str]  # address -> addressToSymbol (precondition, checked per address)
    stacks: dict[str, list[int]]  # name -> trace, leaf first as ClickHouse stores it
    rows: list[dict] = field(default_factory=list)

    def expected(self, trace_type: str, *, since: int | None = None, query_ids: set[str] |
                 None = None, context: str | None = None) -> dict[str, tuple[float, int]]:
        """stack name -> (value, samples) for the filter, aggregated by hand."""
        value: dict[str, float] = defaultdict(float)
        samples: dict[str, int] = defaultdict(int)
        for r in self.rows:
            if r["trace_type"] != trace_type or (since and r["ts"] < since):
                continue
            if query_ids is not None and r["query_id"] not in query_ids:
                continue
            if context and r["context"] != context:
                continue
            samples[r["stack"]] += 1
            if trace_type == "MemoryPeak":
                value[r["stack"]] = max(value[r["stack"]], r["size"])
            elif trace_type in ("CPU", "Real"):
                value[r["stack"]] += 1
            else:
                value[r["stack"]] += max(r["size"], 0)
        return {k: (value[k], samples[k]) for k in samples}

    def frames(self, stack: str) -> list[str]:
        """The labels query_trace_log must report, root first."""
        trace = self.stacks[stack]
        return [self.names[a] or f"0x{a:x}" for a in reversed(trace)]


def _address(lib: ctypes.CDLL, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0


def _build(path: Path) -> Fixture:
    import chdb

    libc = ctypes.CDLL("libc.so.6")
    addr = {n: _address(libc, n) for n in ("malloc", "realloc", "qsort", "memset")}
    addr.update({n: _address(ctypes.pythonapi, n)
                 for n in ("PyObject_Malloc", "PyList_Append", "PyDict_SetItem")})
    conn = chdb.connect(f"{path}?config-file={CONFIG}")
    try:
        conn.query("SYSTEM FLUSH LOGS")  # creates the configured system.*_log tables
        real = conn.query("SELECT trace FROM system.stack_trace WHERE length(trace) >= 4 "
                          "LIMIT 1", "JSONCompact").bytes()
        import json

        real_trace = [int(a) for a in json.loads(real)["data"][0][0]][:12]
        stacks = {
            "A": [addr["malloc"], addr["PyObject_Malloc"], addr["PyList_Append"]],
            "B": [addr["realloc"], UNRESOLVED[0], addr["qsort"]],
            "C": [UNRESOLVED[1], UNRESOLVED[0], addr["PyDict_SetItem"]],
            "D": real_trace,
            "E": [addr["memset"], addr["PyDict_SetItem"]],
        }
        every = sorted({a for t in stacks.values() for a in t})
        looked_up = json.loads(conn.query(
            "SELECT x, demangle(addressToSymbol(x)) FROM (SELECT arrayJoin({a:Array(UInt64)}) "
            "AS x) SETTINGS allow_introspection_functions = 1", "JSONCompact",
            params={"a": "[" + ",".join(map(str, every)) + "]"}).bytes())["data"]
        names = {int(a): str(n) for a, n in looked_up}
        # preconditions: the known functions resolve, the header offsets do not
        assert "malloc" in names[addr["malloc"]], names[addr["malloc"]]
        assert names[addr["PyList_Append"]] == "PyList_Append"
        assert all(names[a] == "" for a in UNRESOLVED)

        conn.query(f"CREATE DATABASE {DB}")
        conn.query(f"CREATE TABLE {DB}.trace_log AS system.trace_log "
                   "ENGINE = MergeTree ORDER BY event_time")
        conn.query(f"CREATE TABLE {DB}.query_log AS system.query_log "
                   "ENGINE = MergeTree ORDER BY event_time")
        fx = Fixture(path=path, names=names, stacks=stacks)

        def add(trace_type: str, stack: str, size: int, query_id: str, ts: int,
                context: str = "Process") -> None:
            fx.rows.append(dict(trace_type=trace_type, stack=stack, size=size,
                                query_id=query_id, ts=ts, context=context))

        t = BASE_TS
        for size in (1 * MiB, 3 * MiB):
            add("Memory", "A", size, "q1", t + 1)
        for _ in range(3):
            add("Memory", "B", 2 * MiB, "q2", t + 2)
        add("Memory", "B", 1 * MiB, "q2", t + 2, context="Global")
        add("Memory", "C", 512 * 1024, "q1", t + 3)
        add("Memory", "D", 1536 * 1024, "q2", t + 4)
        add("Memory", "E", 700 * 1024, "", t + 5)  # a background allocation: no query
        add("Memory", "C", 100 * MiB, "q0", t - 7200)  # before the window
        add("MemorySample", "A", 4096, "q1", t + 6)
        add("MemorySample", "A", -1024, "q1", t + 6)
        add("MemorySample", "B", 8192, "q2", t + 6)
        for _ in range(5):
            add("CPU", "A", 0, "q1", t + 7)
        for _ in range(2):
            add("CPU", "B", 0, "q2", t + 7)
        add("MemoryPeak", "A", 10 * MiB, "q1", t + 8)
        add("MemoryPeak", "A", 20 * MiB, "q1", t + 9)
        add("MemoryPeak", "B", 15 * MiB, "q2", t + 9)
        values = ", ".join(
            f"(toDate(toDateTime({r['ts']})), toDateTime({r['ts']}), "
            f"toDateTime64({r['ts']}, 6), '{r['trace_type']}', '{r['query_id']}', "
            f"[{','.join(map(str, stacks[r['stack']]))}], {r['size']}, '{r['context']}')"
            for r in fx.rows)
        conn.query(f"INSERT INTO {DB}.trace_log (event_date, event_time, "
                   "event_time_microseconds, trace_type, query_id, trace, size, "
                   f"memory_context) VALUES {values}")
        conn.query(
            f"INSERT INTO {DB}.query_log (type, event_date, event_time, query_id, query, "
            "memory_usage, query_duration_ms) VALUES "
            f"('QueryStart', toDate(toDateTime({t})), toDateTime({t}), 'q1', "
            "'SELECT k, count() FROM autoopt_bench.events GROUP BY k', 0, 0), "
            f"('QueryFinish', toDate(toDateTime({t + 10})), toDateTime({t + 10}), 'q1', "
            "'SELECT k, count() FROM autoopt_bench.events GROUP BY k', 123456789, 420), "
            f"('QueryFinish', toDate(toDateTime({t + 10})), toDateTime({t + 10}), 'q2', "
            "'SELECT g, groupArray(s) FROM autoopt_bench.events GROUP BY g', 987654321, 730)")
    finally:
        conn.close()
    return fx


@pytest.fixture(scope="module")
def chdb_fixture(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    try:
        import chdb  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("chdb is not installed (pip install -e '.[test]')")
        pytest.skip("chdb is not installed (pip install -e '.[test]')")
    return _build(tmp_path_factory.mktemp("tracelog") / "fx")


@pytest.fixture
def ws_fixture(chdb_fixture: Fixture, workspace: Workspace) -> str:
    """The chdb directory copied into the test's workspace; its chdb:// url."""
    shutil.copytree(chdb_fixture.path, workspace.root / "data" / "fx", symlinks=True)
    return "chdb://data/fx"


# -- the SQL and the aggregation on chdb --------------------------------------------------

def _run(fx: Fixture, trace_type: str, **kw: object):
    req = validate(trace_type, **{"database": DB, **kw})  # type: ignore[arg-type]
    ex = ChdbExecutor(fx.path, timeout_s=30)
    try:
        return run_query(ex, req)
    finally:
        ex.close()


def _by_leaf_trace(fx: Fixture, result) -> dict[str, object]:
    by_frames = {tuple(fx.frames(name)): name for name in fx.stacks}
    return {by_frames[tuple(s.frames)]: s for s in result.stacks}


@pytest.mark.parametrize("trace_type", ["Memory", "MemorySample", "CPU", "MemoryPeak"])
def test_stacks_values_and_percent_match_hand_aggregation(chdb_fixture: Fixture,
                                                          trace_type: str) -> None:
    fx = chdb_fixture
    result, builder = _run(fx, trace_type, since=SINCE)
    want = fx.expected(trace_type, since=BASE_TS - 1000)
    total = (max(v for v, _ in want.values()) if trace_type == "MemoryPeak"
             else sum(v for v, _ in want.values()))
    assert result.total == total
    assert result.rows == sum(n for _, n in want.values())
    assert result.stacks_total == len(want) and not result.truncated
    got = _by_leaf_trace(fx, result)
    assert set(got) == set(want)
    for name, (value, samples) in want.items():
        s = got[name]
        assert (s.value, s.samples) == (value, samples), name
        assert s.percent == pytest.approx(100 * value / total, abs=1e-3), name
    values = [s.value for s in result.stacks]
    assert values == sorted(values, reverse=True)
    assert result.unit == ("samples" if trace_type == "CPU" else "bytes")
    if trace_type == "MemorySample":
        assert result.freed_bytes == 1024 and got["A"].freed_bytes == 1024
    assert builder.total == pytest.approx(sum(v for v, _ in want.values()))


def test_memory_top_stack_and_unresolved_share(chdb_fixture: Fixture) -> None:
    fx = chdb_fixture
    result, _ = _run(fx, "Memory", since=SINCE)
    top = result.stacks[0]
    assert top.frames == fx.frames("B") and top.value == 7 * MiB  # 3 x 2 MiB + 1 MiB Global
    assert top.leaf == fx.names[fx.stacks["B"][0]] and top.unresolved_frames == 1
    addresses = {a for t in fx.stacks.values() for a in t}
    unresolved = {a for a in addresses if not fx.names[a]}
    assert set(UNRESOLVED) <= unresolved
    assert result.symbolization.addresses == len(addresses)
    assert result.symbolization.unresolved == len(unresolved)
    assert result.symbolization.unresolved_share == pytest.approx(
        len(unresolved) / len(addresses), abs=1e-4)
    assert "stripped" in result.symbolization.note
    assert result.contexts == {"Global": 1 * MiB, "Process": 4 * MiB + 6 * MiB + 512 * 1024
                               + 1536 * 1024 + 700 * 1024}
    assert any("memory-tracker levels" in n for n in result.notes)


def test_window_query_filters_and_memory_context(chdb_fixture: Fixture) -> None:
    fx = chdb_fixture
    everything, _ = _run(fx, "Memory")  # no window: the old 100 MiB row counts
    assert everything.total == sum(v for v, _ in fx.expected("Memory").values())
    assert everything.stacks[0].value == 100 * MiB + 512 * 1024

    by_id, _ = _run(fx, "Memory", since=SINCE, query_id="q1")
    want = fx.expected("Memory", since=BASE_TS - 1000, query_ids={"q1"})
    assert by_id.total == sum(v for v, _ in want.values()) == 4.5 * MiB

    like, _ = _run(fx, "Memory", since=SINCE, query_like="%groupArray%")
    want = fx.expected("Memory", since=BASE_TS - 1000, query_ids={"q2"})
    assert {k: v for k, (v, _) in want.items()} == {
        k: s.value for k, s in _by_leaf_trace(fx, like).items()}

    process, _ = _run(fx, "Memory", since=SINCE, memory_context="Process")
    assert process.total == everything.contexts["Process"] - 100 * MiB
    assert process.contexts == {"Process": process.total}


def test_limit_truncates_and_per_query_memory(chdb_fixture: Fixture) -> None:
    fx = chdb_fixture
    result, builder = _run(fx, "Memory", since=SINCE, limit=2)
    assert len(result.stacks) == 2 and result.truncated and result.stacks_total == 5
    assert len(builder.stacks) == 5  # the stored profile keeps all of them
    queries = {q.query_id: q for q in result.queries}
    assert set(queries) == {"q1", "q2"}  # the background row has no query
    assert queries["q2"].value == 7 * MiB + 1536 * 1024
    assert queries["q2"].peak_memory_mb == pytest.approx(987654321 / MiB, abs=1e-3)
    assert queries["q1"].peak_memory_mb == pytest.approx(123456789 / MiB, abs=1e-3)
    assert queries["q1"].status == "QueryFinish" and queries["q1"].duration_ms == 420
    assert "groupArray" in (queries["q2"].query or "")
    assert [q.query_id for q in result.queries] == ["q2", "q1"]


def test_empty_selection_says_why(chdb_fixture: Fixture) -> None:
    result, _ = _run(chdb_fixture, "Real")
    assert result.rows == 0 and result.stacks == [] and result.total == 0
    assert any("SYSTEM FLUSH LOGS" in n for n in result.notes)


def test_lines_resolve_with_addresstoline(chdb_fixture: Fixture) -> None:
    result, builder = _run(chdb_fixture, "CPU", since=SINCE, lines=True)
    assert result.stacks[0].value == 5
    # chdb's .so has no debug info: addressToLine gives the binary, kept as the module
    assert any(f.module for f in builder.frames)


def test_chdb_server_side_timeout_and_server_errors(chdb_fixture: Fixture) -> None:
    ex = ChdbExecutor(chdb_fixture.path, timeout_s=1)
    try:
        started = time.monotonic()
        with pytest.raises(ClickHouseTimeout, match="timed out"):
            ex.query("SELECT sum(cityHash64(number)) FROM numbers(100000000000)",
                     settings={"max_execution_time": 1})
        assert time.monotonic() - started < 20
        with pytest.raises(ClickHouseError, match=r"UNKNOWN_TABLE|Unknown table"):
            ex.query("SELECT * FROM dump.no_such_table")
        with pytest.raises(ClickHouseError, match=r"READONLY|readonly"):
            ex.query("CREATE TABLE dump.t (x Int8) ENGINE = Memory")
    finally:
        ex.close()


def test_missing_trace_log_is_a_clear_error(chdb_fixture: Fixture) -> None:
    with pytest.raises(ClickHouseError, match=r"has no nodb\.trace_log"):
        _run(chdb_fixture, "Memory", database="nodb")


# -- through an MCP client --------------------------------------------------------------

async def call(client: Client, tool: str, **args: object) -> dict:
    """The tool's whole result (detail=true), after checking its short answer."""
    result = await call_done(client, tool, {**args, "detail": True})
    assert not result.is_error, result.content[0].text
    lean = result.structured_content
    if tool == "query_trace_log":
        assert all(s.startswith("#") for s in lean["stacks"])
        assert len(result.content[0].text) <= 4000
    return lean["full"]


async def test_mcp_query_trace_log_on_chdb(client: Client, workspace: Workspace,
                                           chdb_fixture: Fixture, ws_fixture: str) -> None:
    fx = chdb_fixture
    tools = {t.name: t for t in (await client.list_tools()).tools}
    hints = tools["query_trace_log"].annotations
    # stores a profile and reads a server: not read-only, not destructive, open world (the
    # spec's default, so the lean tool list leaves it out)
    assert not hints.read_only_hint and hints.destructive_hint is False
    assert hints.open_world_hint is not False
    out = await call(client, "query_trace_log", url=ws_fixture, database=DB, since=SINCE,
                     trace_type="Memory", target="clickhouse", label="before")
    want = fx.expected("Memory", since=BASE_TS - 1000)
    total = sum(v for v, _ in want.values())
    assert out["total"] == total and out["executor"] == "chdb"
    by_frames = {tuple(s["frames"]): s for s in out["stacks"]}
    for name, (value, samples) in want.items():
        s = by_frames[tuple(fx.frames(name))]
        assert (s["value"], s["samples"]) == (value, samples)
        assert s["percent"] == pytest.approx(100 * value / total, abs=1e-3)
    addresses = {a for t in fx.stacks.values() for a in t}
    unresolved = sum(1 for a in addresses if not fx.names[a])
    assert out["symbolization"]["unresolved"] == unresolved
    assert out["symbolization"]["unresolved_share"] == pytest.approx(
        unresolved / len(addresses), abs=1e-4)
    assert {q["query_id"] for q in out["queries"]} == {"q1", "q2"}

    saved = Path(out["profile_files"]["profile"])
    assert saved.parent == workspace.results_dir / "clickhouse" / "local" / "profiles"
    profile = store.load(workspace, "clickhouse", "local", "before")
    assert profile.total == total and profile.unit == "bytes" and profile.kind == "memory"
    assert profile.unsymbolized_frames == unresolved
    assert profile.steps and "param_trace_type=Memory" in profile.steps[0].shell

    # a second selection (one query) stored under another label diffs against the first
    await call(client, "query_trace_log", url=ws_fixture, database=DB, since=SINCE,
               query_like="%groupArray%", target="clickhouse", label="after")
    diff = await call(client, "diff_profiles", target="clickhouse", before="before",
                      after="after")
    after_total = sum(v for v, _ in fx.expected(
        "Memory", since=BASE_TS - 1000, query_ids={"q2"}).values())
    assert diff["before_total"] == total and diff["after_total"] == after_total
    assert diff["delta_total"] == after_total - total
    assert diff["counts"]["disappeared"] >= 1  # stacks A, C, E belong to other queries

    # as a job: answered at once with an id, then the same stacks when waited for
    started = await client.call_tool("query_trace_log", {
        "url": ws_fixture, "database": DB, "since": SINCE, "wait_s": 0})
    assert started.structured_content["status"] == "running", started.content[0].text
    job_id = started.structured_content["job_id"]
    assert f"query_trace_log(job_id='{job_id}'" in started.content[0].text
    waited = await call(client, "query_trace_log", job_id=job_id, wait_s=40)
    assert waited["total"] == total and len(waited["stacks"]) == len(out["stacks"])


@pytest.mark.parametrize(("args", "needle"), [
    ({"trace_type": "Heap"}, "Memory"),
    ({"limit": 201}, "200"),
    ({"limit": 0}, "1"),
    ({"query_id": "x'; DROP TABLE t"}, "pattern"),
    ({"database": "system; DROP"}, "pattern"),
    ({"since": "yesterday"}, "ISO datetime"),
    ({"url": "chdb:///etc"}, "outside the workspace"),
    ({"url": "http://u:secret@127.0.0.1:1"}, "password"),
])
async def test_bad_arguments_are_clear_tool_errors(client: Client, args: dict,
                                                   needle: str) -> None:
    result = await client.call_tool("query_trace_log", {"url": "http://127.0.0.1:1", **args})
    assert result.is_error
    text = result.content[0].text
    assert needle in text, text
    assert "secret" not in text


async def test_no_endpoint_and_unknown_target(client: Client, monkeypatch) -> None:
    monkeypatch.delenv("AUTOOPT_CLICKHOUSE_URL", raising=False)
    result = await client.call_tool("query_trace_log", {"target": "clickhouse"})
    assert result.is_error and "no ClickHouse endpoint" in result.content[0].text
    result = await client.call_tool("query_trace_log", {"target": "nope"})
    assert result.is_error and "unknown target" in result.content[0].text


async def test_mcp_timeout_is_a_tool_error(client: Client) -> None:
    with _silent_server() as port:
        started = time.monotonic()
        result = await client.call_tool("query_trace_log", {
            "url": f"http://127.0.0.1:{port}", "timeout_s": 1})
    assert result.is_error
    assert "timed out" in result.content[0].text, result.content[0].text
    assert time.monotonic() - started < 30


# -- HTTP transport without a ClickHouse server --------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _silent_server:
    """A TCP listener that accepts connections and never answers (a hung server)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()

        def accept() -> None:
            self.sock.settimeout(0.2)
            while not self.stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                    self.conns.append(conn)
                except OSError:
                    continue

        self.thread = threading.Thread(target=accept, daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


def test_http_connection_refused() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ClickHouseUnavailable, match="cannot reach ClickHouse"):
        open_executor(url, workspace_root=REPO, timeout_s=2)


def test_http_client_timeout_against_a_hung_server() -> None:
    with _silent_server() as port:
        started = time.monotonic()
        with pytest.raises(ClickHouseTimeout, match="timed out"):
            HttpExecutor(parse_http_url(f"http://127.0.0.1:{port}"), timeout_s=1)
        assert time.monotonic() - started < 30


# -- against Debian's clickhouse-server (18.16) -------------------------------------------------

@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's clickhouse-server on loopback on a free port (scripts/clickhouse-server.sh)."""
    if not Path(os.environ.get("CLICKHOUSE_SERVER_BIN", "/usr/sbin/clickhouse-server")).exists():
        reason = ("clickhouse-server is not installed (apt-get install -y clickhouse-server "
                  "clickhouse-client)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("clickhouse-server")
    env = {**os.environ, "CLICKHOUSE_TEST_PASSWORD": "autoopt-pw"}
    proc = subprocess.run(["bash", str(SERVER_SCRIPT), "start", str(folder)], env=env,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        reason = f"clickhouse-server did not start: {proc.stderr.strip()[-1000:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield proc.stdout.strip()
    finally:
        subprocess.run(["bash", str(SERVER_SCRIPT), "stop", str(folder)], timeout=30)


@pytest.mark.clickhouse_server
def test_http_auth_failure_against_real_server(clickhouse_server: str) -> None:
    with pytest.raises(ClickHouseAuthError, match="Wrong password") as info:
        HttpExecutor(parse_http_url(clickhouse_server, "autoopt", "not-the-password"),
                     timeout_s=10)
    assert "not-the-password" not in str(info.value)
    assert "AUTOOPT_CLICKHOUSE_PASSWORD" in str(info.value)


@pytest.mark.clickhouse_server
def test_http_server_error_message_against_real_server(clickhouse_server: str) -> None:
    # right credentials: the server answers, and its own error text reaches the caller
    with pytest.raises(ClickHouseError, match="too old") as info:
        HttpExecutor(parse_http_url(clickhouse_server, "autoopt", "autoopt-pw"), timeout_s=10)
    assert "readonly" in str(info.value)  # the server's message: no system.settings.readonly
    assert "autoopt-pw" not in str(info.value)


@pytest.mark.clickhouse_server
async def test_mcp_against_real_server(client: Client, clickhouse_server: str,
                                       monkeypatch) -> None:
    monkeypatch.setenv("AUTOOPT_CLICKHOUSE_USER", "autoopt")
    monkeypatch.setenv("AUTOOPT_CLICKHOUSE_PASSWORD", "wrong")
    result = await client.call_tool("query_trace_log", {"url": clickhouse_server})
    assert result.is_error and "refused the credentials" in result.content[0].text
    monkeypatch.setenv("AUTOOPT_CLICKHOUSE_PASSWORD", "autoopt-pw")
    monkeypatch.setenv("AUTOOPT_CLICKHOUSE_URL", clickhouse_server)
    result = await client.call_tool("query_trace_log", {})
    assert result.is_error and "too old" in result.content[0].text


@pytest.mark.clickhouse_server
@pytest.mark.parametrize("extra", [[], ["--profile", "--mode", "groupby"]])
def test_workload_runs_against_real_server(clickhouse_server: str, extra: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "targets" / "clickhouse" / "workload.py"),
         "--url", clickhouse_server, "--rows", "20000", "--rounds", "1", *extra],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CLICKHOUSE_USER": "autoopt", "CLICKHOUSE_PASSWORD": "autoopt-pw"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    metrics = dict(line.split("=", 1) for line in lines if not line.startswith("check:"))
    checks = [line.split() for line in lines if line.startswith("check:")]
    # one result digest per query of the mix, the same from every client
    assert len(checks) == (2 if extra else 4) and all(len(c) == 3 for c in checks), checks
    queries = 4 * (2 if extra else 4)
    assert int(metrics["requests"]) == queries and int(metrics["errors"]) == 0, proc.stderr
    assert float(metrics["error_rate"]) == 0
    for key in ("latency_p50_ms", "latency_p99_ms", "throughput_qps", "peak_query_memory_mb"):
        assert float(metrics[key]) > 0, key
    assert "server 18." in proc.stderr or "server " in proc.stderr
    if extra:
        assert "lacks memory_profiler_step" in proc.stderr or "18." not in proc.stderr
