#!/usr/bin/env bash
# Run the benchmarks and write docs/benchmarks.md: bench/run.sh [--quick] [python -m bench args]
# Uses $PYTHON, else the checkout's .venv, else /tmp/venv0, else python3.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$HERE"
if [[ -z "${PYTHON:-}" ]]; then
  for candidate in "$HERE/.venv/bin/python" /tmp/venv0/bin/python; do
    if [[ -x "$candidate" ]]; then PYTHON=$candidate; break; fi
  done
fi
exec "${PYTHON:-python3}" -m bench "$@"
