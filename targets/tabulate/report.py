#!/usr/bin/env python3
"""Render a deterministic 6-column report of N rows with tabulate (the library under test,
imported from the built tree: run with PYTHONPATH=. in it). Prints key=value metrics and a
digest of the rendered table, so a change that alters the output shows."""

import hashlib
import random
import sys
import time

from tabulate import tabulate

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
rng = random.Random(42)
rows = [
    [i, f"user{rng.randrange(10_000):05d}", rng.choice(["ok", "late", "failed"]),
     round(rng.random() * 1000, 3), rng.randrange(1 << 20), "x" * rng.randrange(1, 24)]
    for i in range(n)
]
t0 = time.perf_counter()
table = tabulate(rows, headers=["id", "user", "state", "score", "bytes", "note"], tablefmt="github")
elapsed_ms = (time.perf_counter() - t0) * 1000
print(f"rows={n}")
print(f"table_chars={len(table)}")
print(f"render_ms={elapsed_ms:.1f}")
print("sha256=" + hashlib.sha256(table.encode()).hexdigest())
