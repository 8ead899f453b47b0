#!/usr/bin/env python3
"""Chroma workload: fixed-seed vectors inserted by 4 concurrent clients, then queried.

Usage: workload.py ENDPOINT [N]   (N vectors, default $CHROMA_N or 6000; dim $CHROMA_DIM or 384)

Talks to the server over its REST API (v2, which chromadb 0.6.3 and 1.5.9 both serve) with
the standard library only, so no part of the code under test runs in the client. One
collection (l2), N vectors of dimension DIM from numpy's default_rng(block seed) (gaussian
clusters around 200 centres; each query a perturbed vector of the set), inserted
in batches of 250 by 4 threads (each every 4th batch; the bodies are encoded before the
timed phases), then 4 threads x 40 queries
(k=10, one query per request, query vectors from the same seed). The server's ids are
compared with a brute-force L2 top-10 (numpy) of the same vectors.

Prints key=value metrics: latency_p99_ms / latency_p50_ms (the query requests'), add_p99_ms
(the add requests'), throughput_qps (queries / the query phase's wall time), recall_at_10
(mean over the queries), peak_tree_rss_mb (the peak, sampled every 50 ms from
/proc/<pid>/status VmRSS, of the summed RSS of the server process and its children, found as
the process listening on the port), error_rate; and `check:` lines that the correctness gate
compares: the collection's count and whether recall@10 reaches RECALL_FLOOR (a broken index
changes that line; the exact recall varies a little between runs, since concurrent inserts
build a different graph each time).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

CLIENTS = 4
BATCH = 250
QUERIES = 40  # per client
K = 10
CENTERS = 200  # clusters the vectors are drawn around, like embeddings
RECALL_FLOOR = 0.9
BASE = "/api/v2/tenants/default_tenant/databases/default_database"


def numpy_module() -> ModuleType:
    """numpy, from this interpreter or from the target's dependency cache (the build's)."""
    try:
        import numpy
    except ImportError:
        cache = Path(os.environ.get("AUTOOPT_CACHE") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoopt")
        for deps in sorted((cache / "chroma").glob("deps-*"), key=lambda p: p.stat().st_mtime):
            sys.path.append(str(deps))
        import numpy
    return numpy


def call(url: str, body: object | None = None) -> object:
    """POST `body` (bytes as they are, else as JSON) or GET; the decoded answer."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read() or b"null")


def server_pid(port: int) -> int | None:
    """The pid owning the socket that listens on `port` (from /proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def tree_rss_kb(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(m[1]) if m else 0
    return total


def sample(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], tree_rss_kb(pid))
        stop.wait(0.05)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


def run_threads(work: Callable[[int], None], n: int) -> float:
    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def main() -> None:
    np = numpy_module()
    endpoint = sys.argv[1].rstrip("/")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get("CHROMA_N", "6000"))
    dim = int(os.environ.get("CHROMA_DIM", "384"))
    seed = int(os.environ.get("AUTOOPT_BLOCK_SEED", "0"))
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((CENTERS, dim), dtype=np.float32)
    vectors = centers[rng.integers(0, CENTERS, n)] + 0.5 * rng.standard_normal(
        (n, dim), dtype=np.float32)
    queries = vectors[rng.integers(0, n, CLIENTS * QUERIES)] + 0.2 * rng.standard_normal(
        (CLIENTS * QUERIES, dim), dtype=np.float32)
    # Every request body is encoded before the timed phases: the clients only send.
    rows = np.round(vectors, 5).tolist()
    adds = [json.dumps({"ids": [str(i) for i in range(s, min(n, s + BATCH))],
                        "embeddings": rows[s:s + BATCH]}).encode() for s in range(0, n, BATCH)]
    asks = [json.dumps({"query_embeddings": [q], "n_results": K, "include": ["distances"]})
            .encode() for q in np.round(queries, 5).tolist()]

    collection = call(f"{endpoint}{BASE}/collections", {"name": f"bench{seed}"})
    cid = collection["id"]  # type: ignore[index]
    pid = server_pid(urlparse(endpoint).port or 8000)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample, args=(pid, stop, peak), daemon=True)
    if pid:
        sampler.start()
    errors: list[str] = []
    add_ms: list[float] = []
    query_ms: list[float] = []
    found: dict[int, list[int]] = {}

    def insert(client: int) -> None:
        for body in adds[client::CLIENTS]:
            t0 = time.monotonic()
            try:
                call(f"{endpoint}{BASE}/collections/{cid}/add", body)
            except Exception as exc:
                errors.append(f"add: {exc}")
            add_ms.append((time.monotonic() - t0) * 1000)

    def query(client: int) -> None:
        for q in range(client * QUERIES, (client + 1) * QUERIES):
            t0 = time.monotonic()
            try:
                got = call(f"{endpoint}{BASE}/collections/{cid}/query", asks[q])
                found[q] = [int(i) for i in got["ids"][0]]  # type: ignore[index]
            except Exception as exc:
                errors.append(f"query: {exc}")
            query_ms.append((time.monotonic() - t0) * 1000)

    run_threads(insert, CLIENTS)
    wall = run_threads(query, CLIENTS)
    stop.set()
    count = call(f"{endpoint}{BASE}/collections/{cid}/count")

    norms = (vectors * vectors).sum(axis=1)
    hits = 0
    for q, ids in found.items():
        dist = norms - 2 * vectors @ queries[q]
        truth = set(np.argpartition(dist, K)[:K].tolist())
        hits += len(truth & set(ids))
    recall = hits / (K * len(found)) if found else 0.0
    for line in errors[:3]:
        print(line, file=sys.stderr)
    print(f"check: count {count}")
    print(f"check: recall_at_10 >= {RECALL_FLOOR}: {'yes' if recall >= RECALL_FLOOR else 'NO'}")
    print(f"queries={len(query_ms)}")
    print(f"latency_p50_ms={pct(query_ms, 0.50):.3f}")
    print(f"latency_p99_ms={pct(query_ms, 0.99):.3f}")
    print(f"add_p99_ms={pct(add_ms, 0.99):.3f}")
    print(f"throughput_qps={len(query_ms) / wall:.3f}")
    print(f"recall_at_10={recall:.4f}")
    if pid:
        print(f"peak_tree_rss_mb={peak[0] / 1024:.3f}")
    print(f"error_rate={len(errors) / (len(add_ms) + len(query_ms)):.4f}")


if __name__ == "__main__":
    main()
