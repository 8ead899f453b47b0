#!/usr/bin/env bash
# pyserver targeted workload: --mode process (see workload.py --help).
# usage: workload-process.sh URL [extra workload.py args]
exec python3 "$(dirname "$0")/workload.py" --url "${1:?usage: workload-process.sh URL [args]}" --mode process "${@:2}"
