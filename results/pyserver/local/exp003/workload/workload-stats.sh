#!/usr/bin/env bash
# pyserver targeted workload: --mode stats (see workload.py --help).
# usage: workload-stats.sh URL [extra workload.py args]
exec python3 "$(dirname "$0")/workload.py" --url "${1:?usage: workload-stats.sh URL [args]}" --mode stats "${@:2}"
