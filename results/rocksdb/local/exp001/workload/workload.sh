#!/usr/bin/env bash
# rocksdb workload: db_bench fillrandom then readrandom in one process, one thread, a fixed
# seed (42 + the run's AUTOOPT_BLOCK_SEED mod 10^6), no compression, the
# database in a fresh folder under $TMPDIR. Prints key=value metrics (ops/s and the
# histogram's p99 in microseconds, per phase) and the lines that must not change: how
# many entries were written and how many reads found their key.
# usage: workload.sh [DB_BENCH [NUM [READS]]]   (defaults: ./db_bench 2000000 500000)
#   Run in the built tree. Under profile_memory(tool='heaptrack') $AUTOOPT_PROFILE_WRAP
#   holds the words that start db_bench under heaptrack; elsewhere it is unset.
set -euo pipefail
bench=${1:-./db_bench} num=${2:-2000000} reads=${3:-500000}
seed=$((42 + ${AUTOOPT_BLOCK_SEED:-0} % 1000000))
work=$(mktemp -d "${TMPDIR:-/tmp}/rocksdb.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2086  # AUTOOPT_PROFILE_WRAP is a list of words
if ! ${AUTOOPT_PROFILE_WRAP:-} "$bench" --benchmarks=fillrandom,readrandom --seed="$seed" \
  --num="$num" --reads="$reads" --threads=1 --histogram=1 --compression_type=none \
  --db="$work/db" > "$work/out.txt"; then
  tail -n 20 "$work/out.txt" >&2
  exit 1
fi
awk '
  /^(fillrandom|readrandom) +:/ {
    phase = $1
    for (i = 2; i < NF; i++) if ($(i + 1) == "ops/sec") printf "%s_ops_per_s=%s\n", phase, $i
    if (match($0, /\([0-9]+ of [0-9]+ found\)/)) {
      split(substr($0, RSTART + 1, RLENGTH - 2), f, " ")
      printf "%s found %s of %s keys\n", phase, f[1], f[3]
    }
    seen[phase] = 1
  }
  /^Entries:/ { printf "entries %s\n", $2 }
  /^Percentiles:/ && phase != "" {
    for (i = 2; i < NF; i++) if ($i == "P99:") printf "%s_p99_us=%s\n", phase, $(i + 1)
    phase = ""
  }
  END { if (!seen["fillrandom"] || !seen["readrandom"]) { print "no db_bench results" > "/dev/stderr"; exit 1 } }
' "$work/out.txt"
