#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run them:
# the venv, Debian's profilers (jemalloc and jeprof among them), a Docker engine with an
# offline base image, a C toolchain with bison and flex (the native targets build from
# source), and the single-node Kubernetes test cluster (built once from Debian's
# source, then cached).
# Environment: AUTOOPT_SKIP_K8S=1 / AUTOOPT_SKIP_DOCKER=1 skip those set-ups (their tests
# then skip outside CI); extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "== $*" >&2; }

VENV="$("$ROOT/scripts/bootstrap.sh")"
log "venv: $VENV"

if [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in heaptrack libjemalloc-dev binutils linux-perf gdb git clickhouse-server \
      gcc g++ make bison flex zlib1g-dev dpkg-dev postgresql-common postgresql-client-15 \
      postgresql-15 \
      rocksdb-tools valgrind; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ "${AUTOOPT_SKIP_DOCKER:-0}" != 1 ]; then
    log "docker engine"
    bash "$ROOT/scripts/setup-docker.sh"
  fi
  if [ "${AUTOOPT_SKIP_K8S:-0}" != 1 ] && [ -x "$ROOT/scripts/k8s-cluster.sh" ]; then
    log "kubernetes test cluster"
    bash "$ROOT/scripts/k8s-cluster.sh" up
    export AUTOOPT_KUBECONFIG="${AUTOOPT_KUBECONFIG:-$(bash "$ROOT/scripts/k8s-cluster.sh" kubeconfig)}"
  fi
fi

log "ruff"
"$VENV/bin/ruff" check server tools tests bench
log "pytest"
status=0
"$VENV/bin/pytest" -q -p no:cacheprovider "$@" || status=$?
if [ "${AUTOOPT_K8S_KEEP:-0}" != 1 ] && [ -x "$ROOT/scripts/k8s-cluster.sh" ] && [ "$(id -u)" = 0 ] \
   && [ "${AUTOOPT_SKIP_K8S:-0}" != 1 ]; then
  bash "$ROOT/scripts/k8s-cluster.sh" down >/dev/null 2>&1 || true
fi
exit "$status"
