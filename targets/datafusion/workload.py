#!/usr/bin/env python3
"""DataFusion's spilling GROUP BY, deterministic (datafusion-python, pyarrow).

Usage: workload.py [--rows N] [--pool-mb M] [--data DIR] [--prepare-only]

Data: one Parquet file of `rows` rows (s: a string key with rows/2 distinct values, v: an
int64), made from arange and a multiplicative hash (no random numbers), written once into
DIR (default .data in the cwd: build.sh links it to a cache folder shared by builds, and
writes the file before any timed run) and reused.

Query: SELECT s, count(*), sum(v) FROM events GROUP BY s, one partition
(target_partitions = 1) under a FairSpillPool of `pool-mb` MiB, spill files in $TMPDIR.
The hash aggregate outgrows the pool and spills sorted runs to disk.

Output: key=value metrics on stdout - spilled_bytes, spill_count and spilled_rows (the sums
over the executed plan's operators, from DataFusion's own metrics), query_s (the query
alone), groups - then `check:` lines (the result's group count and totals) that must not
change between the arms. Exit 2 when the data cannot be prepared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

QUERY = "SELECT s, count(*) AS c, sum(v) AS sv FROM events GROUP BY s"
ROW_GROUP = 1_000_000
HASH = 2654435761  # Knuth's multiplicative hash: spreads arange over the key space


def prepare(rows: int, folder: Path) -> Path:
    """The Parquet file of `rows` rows, written once (a private name, then renamed)."""
    path = folder / f"events-{rows}-v1.parquet"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("s", pa.string()), ("v", pa.int64())])
    distinct = max(1, rows // 2)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".events-", suffix=".parquet")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, rows, ROW_GROUP):
                ids = pa.array(range(start, min(rows, start + ROW_GROUP)), pa.uint64())
                key = pc.bit_wise_and(pc.multiply(ids, pa.scalar(HASH, pa.uint64())),
                                      pa.scalar((1 << 62) - 1, pa.uint64()))
                key = pc.cast(pc.divide(key, pa.scalar(7, pa.uint64())), pa.uint64())
                key = pc.subtract(key, pc.multiply(pc.divide(key, pa.scalar(distinct, pa.uint64())),
                                                   pa.scalar(distinct, pa.uint64())))
                s = pc.binary_join_element_wise("key-", pc.cast(key, pa.string()), "")
                v = pc.cast(pc.bit_wise_and(pc.multiply(ids, pa.scalar(40503, pa.uint64())),
                                            pa.scalar(0xFFFFF, pa.uint64())), pa.int64())
                writer.write_table(pa.table({"s": s, "v": v}, schema=schema))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--pool-mb", type=int, default=100)
    parser.add_argument("--data", type=Path, default=Path(".data"))
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()
    try:
        data = prepare(args.rows, args.data)
    except OSError as exc:
        print(f"cannot prepare the data: {exc}", file=sys.stderr)
        return 2
    if args.prepare_only:
        print(f"data: {data}", file=sys.stderr)
        return 0

    from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext

    runtime = (RuntimeEnvBuilder().with_fair_spill_pool(args.pool_mb * 2**20)
               .with_temp_file_path(tempfile.gettempdir()))
    config = SessionConfig().with_target_partitions(1)
    ctx = SessionContext(config, runtime)
    ctx.register_parquet("events", str(data))
    started = time.perf_counter()
    df = ctx.sql(QUERY)
    batches = df.collect()
    query_s = time.perf_counter() - started

    spilled = {"spilled_bytes": 0, "spill_count": 0, "spilled_rows": 0}
    for _, metrics in df.execution_plan().collect_metrics():
        for name in spilled:
            spilled[name] += getattr(metrics, name) or 0
    result = pa.Table.from_batches(batches) if batches else None
    groups = result.num_rows if result is not None else 0
    for name, value in spilled.items():
        print(f"{name}={value}")
    print(f"query_s={query_s:.3f}")
    print(f"groups={groups}")
    if result is not None:
        print(f"check: groups {groups} rows {pc.sum(result['c']).as_py()} "
              f"sum {pc.sum(result['sv']).as_py()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
