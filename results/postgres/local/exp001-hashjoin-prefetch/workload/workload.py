#!/usr/bin/env python3
"""PostgreSQL workload: deterministic data, then 4 concurrent psql clients.

Usage: workload.py ENDPOINT (http://127.0.0.1:PORT; only the port is used).

Setup (not timed): customers (50k) and orders (600k) from generate_series and hashint4,
an index on orders(cust), ANALYZE. Then 4 clients, each one psql session with
work_mem = 1MB set in the session (not in postgresql.conf), run the same queries in a
per-client order: a GROUP BY over 200k groups (spills), a sort of every order (spills), a
hash join of orders and customers grouped by region, and 20 index lookups.

Prints key=value metrics: latency_p50_ms / latency_p99_ms (psql's \\timing of each
query), throughput_qps (queries / the phase's wall time), temp_bytes (pg_stat_database's
delta over the phase), peak_pss_mb (the peak, over the phase, of the summed PSS of the
postmaster and all its children from /proc/<pid>/smaps_rollup sampled every 50 ms: PSS
splits shared_buffers among the processes that touch it, so the sum counts it once;
backends that exit between samples are missed for their last < 50 ms), error_rate; and
one `check: <query> <md5>` line per query (every client must agree).
"""

from __future__ import annotations

import hashlib
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
LOOKUPS = 20
SETUP = """
CREATE TABLE customers AS
  SELECT i AS id, hashint4(i) & 15 AS region, md5(i::text) AS name
  FROM generate_series(1, 50000) i;
CREATE TABLE orders AS
  SELECT i AS id, 1 + (hashint4(i) & 2147483647) % 50000 AS cust,
         ((hashint4(i * 7) & 1048575) / 100.0)::numeric(12, 2) AS amount,
         md5((i % 200000)::text) AS note
  FROM generate_series(1, 600000) i;
CREATE INDEX orders_cust ON orders (cust);
ANALYZE;
"""
QUERIES = {
    "group_by": "SELECT count(*), sum(hashtext(note)::bigint), sum(s) FROM "
    "(SELECT note, sum(amount) AS s FROM orders GROUP BY note) t",
    "sort": "SELECT sum(r * (hashint4(id) & 1023)) FROM "
    "(SELECT id, row_number() OVER (ORDER BY note, id) AS r FROM orders) t",
    "hash_join": "SELECT c.region, count(*), sum(o.amount) FROM orders o "
    "JOIN customers c ON c.id = o.cust GROUP BY c.region ORDER BY c.region",
}
LOOKUP = "SELECT count(*), sum(amount) FROM orders WHERE cust = {}"


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


def client_script(client: int, seed: str) -> str:
    rng = random.Random(f"{seed}-{client}")
    jobs = [(name, sql) for name, sql in QUERIES.items()]
    jobs += [(f"lookup_{k}", LOOKUP.format(k)) for k in rng.sample(range(1, 50001), LOOKUPS)]
    rng.shuffle(jobs)
    lines = ["SET work_mem = '1MB';", "\\timing on"]
    for name, sql in jobs:
        lines += [f"\\echo @@ {name}", sql + ";"]
    return "\n".join(lines) + "\n"


def parse(out: str) -> list[tuple[str, str, float]]:
    """(query, its output, ms) per query, from `@@ name` markers and `Time:` lines."""
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


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(m[1]) if m else 0


def sample_pss(postmaster: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        total = sum(pss_kb(p) for p in [postmaster, *children(postmaster)])
        peak[0] = max(peak[0], total)
        stop.wait(0.05)


def scalar(port: int, sql: str) -> str:
    done = psql(port, sql + ";\n")
    if done.returncode != 0:
        sys.exit(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def main() -> None:
    port = urlparse(sys.argv[1]).port or 5432
    seed = os.environ.get("AUTOOPT_BLOCK_SEED", "0")
    setup = psql(port, SETUP)
    if setup.returncode != 0:
        sys.exit(f"setup failed: {setup.stderr.strip()}")
    data = Path(scalar(port, "SHOW data_directory"))
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    temp = "SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()"
    temp_before = int(scalar(port, temp))

    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample_pss, args=(postmaster, stop, peak), daemon=True)
    sampler.start()
    outputs: list[subprocess.CompletedProcess[str] | None] = [None] * CLIENTS

    def one(i: int) -> None:
        outputs[i] = psql(port, client_script(i, seed))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()

    latencies, answers, errors = [], {}, 0
    for done in outputs:
        assert done is not None
        if done.returncode != 0:
            errors += 1
            print(f"client failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        for name, rows, ms in parse(done.stdout):
            latencies.append(ms)
            answers.setdefault(name, set()).add(rows)
    time.sleep(0.2)  # exited backends flush their statistics
    temp_after = int(scalar(port, temp))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    for name in sorted(n for n in answers if not n.startswith("lookup_")):
        rows = answers[name]
        digest = hashlib.md5("\n".join(sorted(rows)).encode()).hexdigest()[:16]
        print(f"check: {name} {digest}" + ("" if len(rows) == 1 else " (clients disagree)"))
    lookups = "".join(sorted(r for n, rs in answers.items() if n.startswith("lookup_") for r in rs))
    print(f"check: lookups {hashlib.md5(lookups.encode()).hexdigest()[:16]}")
    print(f"queries={len(latencies)}")
    print(f"latency_p50_ms={pct(0.50):.3f}")
    print(f"latency_p99_ms={pct(0.99):.3f}")
    print(f"throughput_qps={len(latencies) / wall:.3f}")
    print(f"temp_bytes={temp_after - temp_before}")
    print(f"peak_pss_mb={peak[0] / 1024:.3f}")
    print(f"error_rate={errors / CLIENTS:.3f}")


if __name__ == "__main__":
    main()
