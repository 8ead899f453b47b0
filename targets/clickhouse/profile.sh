#!/usr/bin/env bash
# Profiling hook: run the workload with ClickHouse's memory profiler on, then flush the
# logs so system.trace_log holds the stacks. Then call the MCP tool
#   query_trace_log(target="clickhouse", trace_type="Memory", query_like="%autoopt_bench%")
# or run the SQL in profiling/top-stacks.sql yourself.
# usage: profile.sh URL [extra workload.py args]
# Needs a server with <trace_log> enabled (profiling/trace_log.xml; on by default in
# current releases) and a RelWithDebInfo build for readable stacks. The settings
# (memory_profiler_step = 1 MiB, CPU profiler every 10 ms) are set per query by
# workload.py --profile, only where the server knows them.
set -euo pipefail
URL="${1:?usage: profile.sh URL [args]}"
python3 "$(dirname "$0")/workload.py" --url "$URL" --profile "${@:2}"
curl -sS -u "${CLICKHOUSE_USER:-default}:${CLICKHOUSE_PASSWORD:-}" "$URL/" --data-binary 'SYSTEM FLUSH LOGS'
