#!/usr/bin/env bash
# rocksdb build: db_bench only, static library, release (DEBUG_LEVEL=0: -O2 -DNDEBUG; the
# Makefile adds -g, so profiles get file:line), run in the source tree.
# usage: build.sh [make goals...]   (default: db_bench)
#   No compression libraries (the workload uses none) and no jemalloc/tcmalloc: gflags is
#   the one library db_bench needs (libgflags-dev). With ccache installed, objects are
#   cached in ~/.cache/autoopt/ccache (CCACHE_DIR), keyed relative to the tree
#   (CCACHE_BASEDIR, -fdebug-prefix-map), so a second tree of the same code compiles from it.
set -euo pipefail
for lib in SNAPPY ZLIB BZIP LZ4 ZSTD NUMA TBB JEMALLOC TCMALLOC MEMKIND LIBURING; do
  export "ROCKSDB_DISABLE_$lib=1"
done
export EXTRA_CXXFLAGS="-fdebug-prefix-map=$PWD=." EXTRA_CFLAGS="-fdebug-prefix-map=$PWD=."
compilers=()
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="$PWD" LANG="${LANG:-C.UTF-8}"  # ccache keys on LANG: the server's
  export CCACHE_DIR="${CCACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/autoopt/ccache}"
  compilers=(CXX="ccache g++" CC="ccache gcc")
fi
make=(make -j"${BUILD_JOBS:-2}" DEBUG_LEVEL=0 "${compilers[@]}")
if [[ $# -eq 0 ]]; then
  # GCC 12 with -march=native on an AVX-512 machine warns (maybe-uninitialized, a false
  # positive in avx512fintrin.h: GCC bug 105593) in xxhash's AVX-512 path, and the
  # Makefile's -Werror stops the build: that one object is built without -Werror first.
  "${make[@]}" DISABLE_WARNING_AS_ERROR=1 util/xxhash.o
  set -- db_bench
fi
exec "${make[@]}" "$@"
