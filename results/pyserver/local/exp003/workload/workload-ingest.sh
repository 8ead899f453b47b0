#!/usr/bin/env bash
# pyserver targeted workload: --mode ingest (see workload.py --help).
# usage: workload-ingest.sh URL [extra workload.py args]
exec python3 "$(dirname "$0")/workload.py" --url "${1:?usage: workload-ingest.sh URL [args]}" --mode ingest "${@:2}"
