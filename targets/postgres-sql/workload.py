#!/usr/bin/env python3
"""postgres-sql workload: the application's queries, 4 concurrent psql clients.

Usage: workload.py ENDPOINT (http://127.0.0.1:PORT; only the port is used).

The queries are the deployed tree's queries/*.sql, which run.sh copied beside the data
directory (found from SHOW data_directory). Each of 4 clients (one psql session each) runs
every query REPEAT times (PGSQL_REPEAT, default 2) in its own order (shuffled by client and
AUTOOPT_BLOCK_SEED); psql's \\timing gives each execution's latency.

Prints key=value metrics: q_<name>_p50_ms / q_<name>_p99_ms per query, latency_geomean_ms
(the geometric mean of the per-query p50s: every query weighs the same, whatever its size),
latency_p99_ms (over all executions), total_ms (their sum), throughput_qps, error_rate; and one
`check: <query> <md5 of its rows, in order>` line per query (every execution must agree).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

CLIENTS = 4


def psql_binary() -> str:
    versioned = Path("/usr/lib/postgresql/15/bin/psql")
    found = str(versioned) if versioned.exists() else shutil.which("psql")
    if not found:
        sys.exit("psql is not installed (apt-get install postgresql-client-15)")
    return found


def psql(port: int, script: str) -> subprocess.CompletedProcess[str]:
    argv = [psql_binary(), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
            "-p", str(port), "-U", "postgres", "-d", "postgres", "-f", "-"]
    return subprocess.run(argv, input=script, capture_output=True, text=True)


def client_script(client: int, seed: str, queries: dict[str, str], repeat: int) -> str:
    jobs = [name for name in queries for _ in range(repeat)]
    random.Random(f"{seed}-{client}").shuffle(jobs)
    lines = ["\\timing on"]
    for name in jobs:
        lines += [f"\\echo @@ {name}", queries[name].rstrip().rstrip(";") + ";"]
    return "\n".join(lines) + "\n"


def parse(out: str) -> list[tuple[str, str, float]]:
    """(query, its output, ms) per execution, from `@@ name` markers and `Time:` lines."""
    results, name, rows = [], None, []
    for line in out.splitlines():
        if line.startswith("@@ "):
            name, rows = line[3:], []
        elif (m := re.match(r"Time: ([0-9.]+) ms", line)) and name:
            results.append((name, "\n".join(rows), float(m[1])))
            name = None
        elif name:
            rows.append(line)
    return results


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


def main() -> None:
    port = urlparse(sys.argv[1]).port or 5432
    seed = os.environ.get("AUTOOPT_BLOCK_SEED", "0")
    repeat = int(os.environ.get("PGSQL_REPEAT", "2"))
    where = psql(port, "SHOW data_directory;\n")
    if where.returncode != 0:
        sys.exit(f"psql failed: {where.stderr.strip()}")
    folder = Path(where.stdout.strip()).parent / "queries"
    queries = {p.stem: p.read_text() for p in sorted(folder.glob("*.sql"))}
    if not queries:
        sys.exit(f"no queries in {folder}")
    outputs: list[subprocess.CompletedProcess[str] | None] = [None] * CLIENTS

    def one(i: int) -> None:
        outputs[i] = psql(port, client_script(i, seed, queries, repeat))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0

    times: dict[str, list[float]] = {name: [] for name in queries}
    answers: dict[str, set[str]] = {name: set() for name in queries}
    errors = 0
    for done in outputs:
        assert done is not None
        if done.returncode != 0:
            errors += 1
            print(f"client failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        for name, rows, ms in parse(done.stdout):
            times[name].append(ms)
            answers[name].add(rows)
    every = [ms for ts in times.values() for ms in ts]
    for name in queries:
        rows = answers[name]
        digest = hashlib.md5("\n".join(sorted(rows)).encode()).hexdigest()[:16]
        print(f"check: {name} {digest}" + ("" if len(rows) == 1 else " (executions disagree)"))
    medians = []
    for name, ts in times.items():
        medians.append(pct(ts, 0.5))
        print(f"q_{name}_p50_ms={pct(ts, 0.5):.3f}")
        print(f"q_{name}_p99_ms={pct(ts, 0.99):.3f}")
    geomean = math.exp(sum(math.log(max(m, 0.001)) for m in medians) / len(medians))
    print(f"queries={len(every)}")
    print(f"latency_geomean_ms={geomean:.3f}")
    print(f"latency_p99_ms={pct(every, 0.99):.3f}")
    print(f"total_ms={sum(every):.3f}")
    print(f"throughput_qps={len(every) / wall:.3f}")
    print(f"error_rate={errors / CLIENTS:.3f}")


if __name__ == "__main__":
    main()
