#!/usr/bin/env python3
"""batchdemo: deduplicate and aggregate a deterministic stream of events.

A small batch job (stdlib only) and autoopt's batch demo target: the process
that runs it is the process that is measured (peak RSS, elapsed time).

It generates RECORDS synthetic purchase events with a fixed seed, treats
events with the same (user, event, day) as duplicates of one another, and for
every distinct key keeps the first event seen plus the number of duplicates
and the total amount. It prints key=value metrics on stdout:

    records     events processed
    unique      distinct (user, event, day) keys
    elapsed_ms  wall time of the job
    checksum    digest of the aggregated result (identical for any correct
                implementation, so a patch that changes the output shows up)

The code is correct but memory-hungry on purpose: ``generate_records``
materialises every event as a dict in one big list, and ``group_duplicates``
then keeps every duplicate of every key in per-key lists before
``aggregate`` reduces them -- the whole input is alive at the peak.

Usage: python3 dedupe.py [--records N] [--seed S]
"""

import argparse
import hashlib
import random
import sys
import time

RECORDS = 200_000
SEED = 20240611
EVENTS = ("view", "click", "cart", "purchase", "refund", "share")
DAYS = 7
USERS = 1000


def generate_records(count, seed):
    """All events, in generation order."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        records.append(
            {
                "seq": i,
                "user": f"user-{rng.randrange(USERS):06d}",
                "event": EVENTS[rng.randrange(len(EVENTS))],
                "day": rng.randrange(DAYS),
                "amount": rng.randrange(100, 50_000) / 100.0,
            }
        )
    return records


def group_duplicates(records):
    """Map each (user, event, day) key to the list of its events, in order."""
    groups = {}
    for record in records:
        key = (record["user"], record["event"], record["day"])
        groups.setdefault(key, []).append(record)
    return groups


def aggregate(groups):
    """Per key: the first event, the number of events and the total amount."""
    result = {}
    for key, events in groups.items():
        total = 0.0
        for event in events:
            total += event["amount"]
        result[key] = {"first_seq": events[0]["seq"], "count": len(events), "total": total}
    return result


def checksum(result):
    """A digest of the aggregated result that does not depend on dict order."""
    digest = hashlib.sha256()
    for key in sorted(result):
        row = result[key]
        digest.update(f"{key[0]}|{key[1]}|{key[2]}|{row['first_seq']}|{row['count']}|"
                      f"{row['total']:.2f}\n".encode())
    return digest.hexdigest()[:16]


def run(count, seed):
    records = generate_records(count, seed)
    groups = group_duplicates(records)
    result = aggregate(groups)
    return len(records), result


def main(argv=None):
    parser = argparse.ArgumentParser(description="deduplicate and aggregate events")
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    processed, result = run(args.records, args.seed)
    digest = checksum(result)
    elapsed_ms = (time.perf_counter() - started) * 1000.0

    print(f"records={processed}")
    print(f"unique={len(result)}")
    print(f"elapsed_ms={elapsed_ms:.1f}")
    print(f"checksum={digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
