#!/bin/sh
# Build the datafusion tree (the cwd: datafusion-python's wheel, patched): byte-compile its
# Python layer, install its dependencies (DEPS, pinned) once into a cache folder shared
# by every build, linked as .deps in the tree, and write the workload's Parquet file once
# into a cache folder linked as .data (runs get their own XDG_CACHE_HOME: never cached there).
# usage: build.sh PYTHON ROWS
set -eu
python=${1:?usage: build.sh PYTHON ROWS}
rows=${2:?usage: build.sh PYTHON ROWS}
here=$(cd "$(dirname "$0")" && pwd)
DEPS="pyarrow==26.0.1 cloudpickle==3.1.3 typing-extensions==4.16.0"  # the wheel's requirements
"$python" -m compileall -q datafusion
tag=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cache=${AUTOOPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}}/autoopt/datafusion
deps="$cache/deps-py$tag-$(echo "$DEPS" | md5sum | cut -c1-12)"
if [ ! -d "$deps" ]; then
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.deps-XXXXXX")
    chmod 755 "$tmp"
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --target "$tmp" $DEPS \
        || { rm -rf "$tmp"; exit 1; }
    mv -T "$tmp" "$deps" 2>/dev/null || rm -rf "$tmp"  # another build got there first
fi
ln -sfn "$deps" .deps
mkdir -p "$cache/data"
ln -sfn "$cache/data" .data
PYTHONPATH=.:.deps "$python" "$here/workload.py" --rows "$rows" --prepare-only
