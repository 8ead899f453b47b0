#!/usr/bin/env bash
# Targeted workload (Phase 2.75): only the high-cardinality string GROUP BYs
# (hash table of strings, ColumnString / Arena growth, the seed's prefetch path).
exec python3 "$(dirname "$0")/workload.py" --url "${1:?usage: workload-groupby.sh URL [args]}" --mode groupby "${@:2}"
