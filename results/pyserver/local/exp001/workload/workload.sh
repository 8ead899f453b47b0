#!/usr/bin/env bash
# pyserver workload: the representative mix (see workload.py --help).
# usage: workload.sh URL [extra workload.py args]
exec python3 "$(dirname "$0")/workload.py" --url "${1:?usage: workload.sh URL [args]}" "${@:2}"
