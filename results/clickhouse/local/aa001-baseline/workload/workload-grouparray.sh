#!/usr/bin/env bash
# Targeted workload (Phase 2.75): only groupArray(String) with ~1000 values per key
# (GroupArrayGeneralImpl: one arena node per value).
exec python3 "$(dirname "$0")/workload.py" --url "${1:?usage: workload-grouparray.sh URL [args]}" --mode grouparray "${@:2}"
