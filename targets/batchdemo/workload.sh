#!/usr/bin/env bash
# batchdemo workload: runs the batch job itself; that process is the one measured.
# usage: workload.sh [TREE [dedupe.py args]]
#   TREE  the (built) source tree that holds dedupe.py; defaults to the current
#         directory, or to this target's src/ when the current directory has no
#         dedupe.py. `exec` keeps the PID, so a harness that measures this
#         script's process measures python3 dedupe.py.
set -euo pipefail
if [[ $# -ge 1 ]]; then
  tree="$1"; shift
elif [[ -f dedupe.py ]]; then
  tree="."
else
  tree="$(dirname "$0")/src"
fi
cd "$tree"
exec python3 dedupe.py "$@"
