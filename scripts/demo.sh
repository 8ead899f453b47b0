#!/usr/bin/env bash
# The main job: set up, then run the pyserver optimization loop through a real MCP client
# session against `autoopt serve` (stdio), on the local backend. Arguments go to `autoopt demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$("$ROOT/scripts/bootstrap.sh")"
exec "$VENV/bin/autoopt" demo "$@"
