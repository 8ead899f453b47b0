#!/usr/bin/env python3
"""Deterministic load driver for pyserver (stdlib only).

Usage:
    python3 workload.py --url http://127.0.0.1:PORT [--mode full|ingest|process|stats] [--scale S]

Every run sends the same requests with the same data (no randomness), so two
runs against two builds differ only by the code under test.

Phases (every mode):
  1. POST /reset
  2. bulk load: one client ingests the initial items in batches (in some
     modes each batch is followed by a POST /process)
  3. concurrent phase: CLIENTS (= 4) threads, each with its own keep-alive
     connection, send a fixed sequence of /ingest (mostly re-sent duplicates
     of bulk-loaded items plus some new ones), /process and /stats requests;
     each client starts at a different point of the sequence
  4. final GET /stats

Modes (data sizes and request mix, see MODES):
  full     the representative mix (the default): 3000 items bulk-loaded in 60
           batches with a /process after each, then 4 clients x (300 ingests
           of 10 items, 9 stats, 3 process); 1370 requests
  full-coarse  the same work with ingests of 100 items (4 x 30): 290 requests,
           so a p99 rests on 3 requests (the earlier mix, for comparison)
  ingest   targeted at the membership check in /ingest: bulk load without
           /process, then ingest-only traffic (4 x 8 ingests of 400 items);
           almost all server time is membership checks
  process  targeted at HISTORY: /process after each bulk batch and 4 x
           (6 process, 3 stats, 3 small ingests); peak memory is the history
  stats    targeted at the statistics in /stats: no /process, 4 x (18 stats,
           6 small ingests)

--scale multiplies the numbers of items (bulk load and batch sizes); the
number of requests stays the same. Membership work grows with its square.

Output: key=value lines on stdout (requests, errors, error_rate,
latency_p50_ms, latency_p99_ms, throughput_qps, duration_s), and
digest=<sha256> of the sequential requests' responses (reset, bulk load with
its /process answers, the final /stats): what a correct server always answers,
compared between the arms of an A/B run. With AUTOOPT_LATENCY_FILE set (run_ab sets it),
every request's latency in ms, one a line in completion order, goes to that file (for a
target.md `latency_estimator:`). Exit code 0 when
the workload ran, even with failed requests (they count in error_rate); 2
when the server could not be reached at all.
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

CLIENTS = 4

# Per mode: items bulk-loaded, bulk batch size, /process after every Nth bulk
# batch (0: never), items per concurrent ingest and how many of them are new
# (the rest re-send bulk-loaded items), and each client's operation sequence
# (repeated `rounds` times).
MODES = {
    # bulk load of 3000 items in 60 batches, each followed by a /process (a
    # load-and-process pipeline), then 4 clients x 312 requests: 300 ingests
    # (9 duplicates + 1 new item each), 9 stats, 3 process; 1370 requests. Many
    # small requests give the p99 its own sample: at least 10 requests above it
    # in every run (the coarse mix's 290 left 3).
    "full": {
        "items": 3000, "bulk_batch": 50, "bulk_process_every": 1,
        "batch": 10, "new": 1,
        "ops": ["ingest"] * 20 + ["stats"] + ["ingest"] * 30 + ["stats"] + ["ingest"] * 20
               + ["process"] + ["ingest"] * 20 + ["stats"] + ["ingest"] * 10,
        "rounds": 3,
    },
    # the same work in 10x larger ingests: 290 requests (the mix until 2026-12,
    # kept so bench can show what the request count does to the p99's spread)
    "full-coarse": {
        "items": 3000, "bulk_batch": 50, "bulk_process_every": 1,
        "batch": 100, "new": 10,
        "ops": ["ingest", "ingest", "stats", "ingest", "ingest", "ingest", "stats",
                "ingest", "ingest", "process", "ingest", "ingest", "stats", "ingest"],
        "rounds": 3,
    },
    # no /process at all: the time goes to membership checks
    "ingest": {
        "items": 3000, "bulk_batch": 100, "bulk_process_every": 0,
        "batch": 400, "new": 40,
        "ops": ["ingest"],
        "rounds": 8,
    },
    # /process after every bulk batch and most concurrent requests are
    # /process: the memory goes to HISTORY
    "process": {
        "items": 3000, "bulk_batch": 100, "bulk_process_every": 1,
        "batch": 20, "new": 10,
        "ops": ["process", "process", "stats", "ingest"],
        "rounds": 3,
    },
    # small ingests, no /process, mostly /stats
    "stats": {
        "items": 3000, "bulk_batch": 100, "bulk_process_every": 0,
        "batch": 20, "new": 10,
        "ops": ["stats", "stats", "stats", "ingest"],
        "rounds": 6,
    },
}
TAGS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
        "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi"]
PAYLOAD_CHARS = 256


def make_item(i):
    """Item number i, always the same for the same i."""
    item_id = f"item-{i:07d}"
    digest = hashlib.sha256(item_id.encode()).hexdigest()  # 64 hex chars
    value = ((i * 7919) % 120001) / 100.0 - 100.0  # -100.00 .. 1100.00
    tags = [TAGS[(i + k * 5) % len(TAGS)] for k in range(1 + i % 4)]
    payload = (digest * (PAYLOAD_CHARS // len(digest) + 1))[:PAYLOAD_CHARS]
    return {"id": item_id, "value": value, "tags": tags, "payload": payload}


def ingest_body(indices):
    return json.dumps({"items": [make_item(i) for i in indices]}).encode()


class Client:
    """One keep-alive connection; records (path, latency_s, ok, end) per request."""

    def __init__(self, host, port, timeout, digest=None):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None
        self.samples = []
        self.digest = digest  # a hashlib object fed every response, when given

    def request(self, method, path, body=None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        start = time.perf_counter()
        ok = False
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            ok = response.status == 200
            if self.digest is not None:
                self.digest.update(f"{method} {path} {response.status}\n".encode() + data)
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException):
            self.close()
        end = time.perf_counter()
        self.samples.append((path, end - start, ok, end))
        return ok

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_reachable(host, port, timeout_s):
    """True once GET /health answers (any status); False after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            conn.getresponse().read()
            conn.close()
            return True
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def percentile(sorted_values, fraction):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return 0.0
    pos = fraction * (len(sorted_values) - 1)
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def build_plan(mode, scale):
    """Pre-encoded requests: (bulk-load ops, one op list per client)."""
    cfg = MODES[mode]
    items = max(1, int(cfg["items"] * scale))
    bulk_batch = max(1, int(cfg["bulk_batch"] * scale))
    batch = max(1, int(cfg["batch"] * scale))
    new_per_batch = min(batch, int(cfg["new"] * scale))
    dups_per_batch = batch - new_per_batch

    bulk = []
    for n, lo in enumerate(range(0, items, bulk_batch), start=1):
        bulk.append(("POST", "/ingest", ingest_body(range(lo, min(lo + bulk_batch, items)))))
        if cfg["bulk_process_every"] and n % cfg["bulk_process_every"] == 0:
            bulk.append(("POST", "/process", b"{}"))

    plans = []
    next_new = items  # ids of the items first sent in the concurrent phase
    for client in range(CLIENTS):
        ops = []
        # each client starts at a different point of the sequence, so the
        # clients do not all send the same kind of request at the same time
        offset = client * len(cfg["ops"]) // CLIENTS
        for seq in range(cfg["rounds"] * len(cfg["ops"])):
            op = cfg["ops"][(seq + offset) % len(cfg["ops"])]
            if op == "ingest":
                # duplicates of bulk-loaded items, spread over the whole range
                step = max(1, items // max(1, dups_per_batch))
                first = (client * 7 + seq * 13) % step
                dups = [(first + k * step) % items for k in range(dups_per_batch)]
                new = list(range(next_new, next_new + new_per_batch))
                next_new += new_per_batch
                ops.append(("POST", "/ingest", ingest_body(dups + new)))
            elif op == "process":
                ops.append(("POST", "/process", b"{}"))
            else:
                ops.append(("GET", "/stats", None))
        plans.append(ops)
    return bulk, plans


def main(argv=None):
    parser = argparse.ArgumentParser(description="pyserver workload")
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print per-endpoint latencies to stderr")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be > 0")

    url = urllib.parse.urlsplit(args.url)
    host = url.hostname or "127.0.0.1"
    port = url.port or 80

    bulk, plans = build_plan(args.mode, args.scale)

    if not wait_reachable(host, port, timeout_s=10.0):
        print(f"workload: cannot reach pyserver at {args.url} (GET /health failed for 10s)",
              file=sys.stderr)
        return 2

    # The main client's requests run one at a time (reset, bulk load, the final /stats),
    # so its responses are the same for any correct server: their digest is the output
    # that must not change. The concurrent clients' answers depend on interleaving.
    responses = hashlib.sha256()
    main_client = Client(host, port, args.timeout, digest=responses)
    clients = [Client(host, port, args.timeout) for _ in range(CLIENTS)]

    started = time.perf_counter()
    main_client.request("POST", "/reset", b"{}")
    for method, path, body in bulk:
        main_client.request(method, path, body)
    bulk_done = time.perf_counter()

    barrier = threading.Barrier(CLIENTS)

    def run(client, ops):
        barrier.wait()
        for method, path, body in ops:
            client.request(method, path, body)

    threads = [threading.Thread(target=run, args=(c, ops), daemon=True)
               for c, ops in zip(clients, plans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    concurrent_done = time.perf_counter()
    main_client.request("GET", "/stats")
    duration = time.perf_counter() - started

    for c in [main_client, *clients]:
        c.close()
    samples = [s for c in [main_client, *clients] for s in c.samples]
    latencies = sorted(lat * 1000.0 for _, lat, _, _ in samples)
    requests = len(samples)
    errors = sum(1 for _, _, ok, _ in samples if not ok)
    if os.environ.get("AUTOOPT_LATENCY_FILE"):  # every latency, in completion order
        with open(os.environ["AUTOOPT_LATENCY_FILE"], "w") as out:
            out.writelines(f"{lat * 1000.0:.3f}\n" for _, lat, _, _ in
                           sorted(samples, key=lambda s: s[3]))
    if args.breakdown:
        print(f"workload: phases: bulk={bulk_done - started:.3f}s "
              f"concurrent={concurrent_done - bulk_done:.3f}s", file=sys.stderr)
        for path in sorted({p for p, _, _, _ in samples}):
            lats = sorted(lat * 1000.0 for p, lat, _, _ in samples if p == path)
            print(f"workload: {path}: n={len(lats)} p50={percentile(lats, 0.5):.1f}ms "
                  f"p99={percentile(lats, 0.99):.1f}ms max={lats[-1]:.1f}ms", file=sys.stderr)

    print(f"requests={requests}")
    print(f"errors={errors}")
    print(f"error_rate={errors / requests if requests else 0.0:.6f}")
    print(f"latency_p50_ms={percentile(latencies, 0.50):.3f}")
    print(f"latency_p99_ms={percentile(latencies, 0.99):.3f}")
    print(f"throughput_qps={requests / duration if duration > 0 else 0.0:.3f}")
    print(f"duration_s={duration:.3f}")
    print(f"digest={responses.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
