#!/usr/bin/env bash
# ClickHouse workload: the representative mix (see workload.py --help).
# usage: workload.sh URL [extra workload.py args]   (URL = the HTTP interface, e.g. http://127.0.0.1:8123)
exec python3 "$(dirname "$0")/workload.py" --url "${1:?usage: workload.sh URL [args]}" "${@:2}"
