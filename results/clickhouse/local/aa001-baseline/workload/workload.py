#!/usr/bin/env python3
"""Deterministic load driver for ClickHouse over HTTP (stdlib only).

Usage:
    python3 workload.py --url http://127.0.0.1:8123 [--mode full|groupby|grouparray]
                        [--rows N] [--rounds R] [--clients C] [--profile]

Data: one MergeTree table autoopt_bench.events_<rows>, generated on the server from
numbers() and cityHash64 (no rand()), created once and reused while it holds exactly
<rows> rows. Every run sends the same queries over the same data, so two runs against two
builds differ only by the code under test.

Queries (each client runs its mix `rounds` times, starting at a different query):
  groupby_string   high-cardinality string GROUP BY (keys drawn from rows/4 values: 245,498
                   distinct at the default 1M rows):
                   hash table of strings, ColumnString / Arena growth
  groupby_two_keys the same strings with a second key (more groups)
  uniq_string      uniqExact over the strings
  grouparray       groupArray(String) with ~rows/1000 values per key (GroupArrayGeneralImpl)
Modes: full (all four), groupby (the two GROUP BYs: the seed's prefetch/shrinkToFit path),
grouparray (groupArray only).

Concurrency: --clients threads (default 4; the methodology requires >= 4), each with its
own keep-alive connection.

Compatible with old and new servers: the SQL uses functions ClickHouse 18.16 already has;
--profile sets memory_profiler_step (1 MiB) and the CPU profiler period only when the
server lists those settings in system.settings (it says so on stderr otherwise).

Output: key=value lines on stdout (requests, errors, error_rate, latency_p50_ms,
latency_p99_ms, throughput_qps, duration_s, peak_query_memory_mb, setup_s, rows), and one
`check: <query> <digest>` line per query with the digest of its result (every client's run
of it; two digests mean the server answered the same query two ways). Exit 0
when the workload ran (failed queries count in error_rate), 2 when the server could not be
reached or the data could not be prepared.
Credentials: CLICKHOUSE_USER / CLICKHOUSE_PASSWORD (default: user 'default', no password).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import math
import os
import sys
import threading
import time
import urllib.parse
import uuid

DATABASE = "autoopt_bench"
QUERIES = {
    "groupby_string": "SELECT k, count() AS c, sum(v) AS sv FROM {t} GROUP BY k "
                      "ORDER BY c DESC, k LIMIT 10",
    "groupby_two_keys": "SELECT k, g % 16 AS b, count() AS c FROM {t} GROUP BY k, b "
                        "ORDER BY c DESC, k, b LIMIT 10",
    "uniq_string": "SELECT uniqExact(k) FROM {t}",
    "grouparray": "SELECT g, length(groupArray(s)) AS n, max(length(s)) AS m FROM {t} "
                  "GROUP BY g ORDER BY n DESC, g LIMIT 10",
}
MODES = {
    "full": ["groupby_string", "grouparray", "groupby_two_keys", "uniq_string"],
    "groupby": ["groupby_string", "groupby_two_keys"],
    "grouparray": ["grouparray"],
}
PROFILE_SETTINGS = {"memory_profiler_step": "1048576",
                    "query_profiler_cpu_time_period_ns": "10000000"}


class Server:
    """A tiny ClickHouse HTTP client: POST the query, settings and query_id in the URL."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(f"invalid --url {url!r}: use http://host:port")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (8443 if parts.scheme == "https" else 8123)
        self.timeout = timeout
        user = os.environ.get("CLICKHOUSE_USER", "default")
        password = os.environ.get("CLICKHOUSE_PASSWORD", "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "text/plain"}

    def connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def run(self, sql: str, conn: http.client.HTTPConnection | None = None,
            settings: dict[str, str] | None = None) -> str:
        """The response body; raises RuntimeError with the server's message on failure."""
        own = conn is None
        conn = conn or self.connect()
        try:
            path = "/?" + urllib.parse.urlencode(settings or {})
            conn.request("POST", path, body=sql.encode(), headers=self.headers)
            response = conn.getresponse()
            body = response.read().decode(errors="replace")
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body.strip()[:500]}")
            return body
        finally:
            if own:
                conn.close()


def prepare(server: Server, rows: int) -> tuple[str, float]:
    """Create and fill the table unless it already holds exactly `rows` rows."""
    started = time.monotonic()
    table = f"{DATABASE}.events_{rows}"
    server.run(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    exists = server.run(f"EXISTS TABLE {table}").strip() == "1"
    if exists and server.run(f"SELECT count() FROM {table}").strip() == str(rows):
        return table, time.monotonic() - started
    server.run(f"DROP TABLE IF EXISTS {table}")
    server.run(f"CREATE TABLE {table} (id UInt64, k String, g UInt32, v UInt64, s String) "
               "ENGINE = MergeTree ORDER BY id")
    distinct = max(1, rows // 4)
    server.run(
        f"INSERT INTO {table} SELECT number AS id, "
        f"concat('user-', toString(cityHash64(number) % {distinct})) AS k, "
        f"toUInt32(cityHash64(number, 7) % 1000) AS g, "
        f"cityHash64(number, 11) % 1000000 AS v, "
        f"concat('payload-', toString(cityHash64(number, 13) % 100000)) AS s "
        f"FROM numbers({rows})")
    return table, time.monotonic() - started


def server_settings(server: Server, names: list[str]) -> set[str]:
    quoted = ", ".join(f"'{n}'" for n in names)
    body = server.run(f"SELECT name FROM system.settings WHERE name IN ({quoted})")
    return {line.strip() for line in body.splitlines() if line.strip()}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--profile", action="store_true",
                        help="set memory_profiler_step / CPU profiler period where supported")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    server = Server(args.url, args.timeout)
    try:
        version = server.run("SELECT version()").strip()
        table, setup_s = prepare(server, args.rows)
    except (OSError, RuntimeError) as exc:
        print(f"cannot prepare the workload on {args.url}: {exc}", file=sys.stderr)
        return 2
    print(f"server {version}, table {table}", file=sys.stderr)

    token = uuid.uuid4().hex[:12]  # names this run's queries in query_log; not in the data
    settings = {"log_queries": "1"}
    if args.profile:
        known = server_settings(server, list(PROFILE_SETTINGS))
        settings.update({k: v for k, v in PROFILE_SETTINGS.items() if k in known})
        missing = sorted(set(PROFILE_SETTINGS) - known)
        if missing:
            print(f"server {version} lacks {', '.join(missing)}: profiling without them",
                  file=sys.stderr)

    mix = MODES[args.mode]
    latencies: list[float] = []
    errors: list[str] = []
    answers: dict[str, set[str]] = {}  # query -> digests of its results (one when correct)
    lock = threading.Lock()

    def client(index: int) -> None:
        conn = server.connect()
        try:
            for r in range(args.rounds):
                for j in range(len(mix)):
                    name = mix[(index + j) % len(mix)]
                    query_id = f"autoopt-{token}-{index}-{r}-{j}-{name}"
                    t0 = time.perf_counter()
                    try:
                        body = server.run(QUERIES[name].format(t=table), conn,
                                          {**settings, "query_id": query_id})
                        ok, message = True, ""
                        digest = hashlib.sha256(body.encode()).hexdigest()[:16]
                        with lock:
                            answers.setdefault(name, set()).add(digest)
                    except (OSError, RuntimeError, http.client.HTTPException) as exc:
                        ok, message = False, f"{name}: {exc}"
                        conn.close()
                        conn = server.connect()
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        if ok:
                            latencies.append(elapsed)
                        else:
                            errors.append(message)
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    duration = time.perf_counter() - started

    for message in errors[:5]:
        print(f"error: {message}", file=sys.stderr)
    requests = len(latencies) + len(errors)
    print(f"requests={requests}")
    print(f"errors={len(errors)}")
    print(f"error_rate={len(errors) / requests if requests else 1:.4f}")
    if latencies:
        print(f"latency_p50_ms={percentile(latencies, 50):.3f}")
        print(f"latency_p99_ms={percentile(latencies, 99):.3f}")
    print(f"throughput_qps={len(latencies) / duration:.3f}")
    print(f"duration_s={duration:.3f}")
    print(f"setup_s={setup_s:.3f}")
    print(f"rows={args.rows}")
    for name in sorted(answers):  # the results that must not change between the arms
        print(f"check: {name} {' '.join(sorted(answers[name]))}")
    peak = peak_query_memory(server, token)
    if peak is not None:
        print(f"peak_query_memory_mb={peak:.3f}")
    return 0


def peak_query_memory(server: Server, token: str) -> float | None:
    """The largest memory_usage of this run's queries in system.query_log, in MiB (type is
    an Enum on current servers, a number (2 = finished) on old ones like 18.16)."""
    try:
        server.run("SYSTEM FLUSH LOGS")
        body = server.run(
            "SELECT max(memory_usage), count() FROM system.query_log "
            "WHERE toString(type) IN ('QueryFinish', '2') "
            f"AND query_id LIKE 'autoopt-{token}-%'").strip()
    except (OSError, RuntimeError) as exc:
        print(f"no peak_query_memory_mb: {exc}", file=sys.stderr)
        return None
    peak, count = body.split("\t")
    if int(count) == 0:
        print("no peak_query_memory_mb: query_log has none of this run's queries",
              file=sys.stderr)
        return None
    return int(peak) / 2**20


if __name__ == "__main__":
    sys.exit(main())
