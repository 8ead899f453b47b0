#!/bin/sh
# Build PostgreSQL in the current tree (an incremental build-cache slot or a fresh tree):
# configure once per tree, make the server and what initdb, pg_ctl and psql need, install
# into .inst/ inside the tree, and initdb a template data directory the run script copies.
# Re-run after a patch, it rebuilds only what changed (make) and re-installs; the template
# is remade only when the installed postgres binary changed.
set -eu
tree=$(pwd)
prefix="$tree/.inst"
if [ ! -f config.status ] || [ configure -nt config.status ]; then
    # One mtime for every tracked file of a fresh tree, so make does not regenerate the
    # parsers and headers the tarball ships (a regenerated tracked file would differ from
    # git, be rewritten at the next checkout and rebuilt every time).
    if git rev-parse --git-dir > /dev/null 2>&1; then
        stamp=$(date +%Y%m%d%H%M.%S)
        git ls-files -z | xargs -0 touch -h -t "$stamp"
    fi
    ./configure --prefix="$prefix" --without-icu --without-readline \
        --with-system-tzdata=/usr/share/zoneinfo --disable-nls \
        CFLAGS="-O2 -g -fno-omit-frame-pointer" > .configure.log 2>&1 \
        || { tail -30 .configure.log >&2; exit 1; }
fi
jobs="-j${MAKE_JOBS:-2}"
make -s "$jobs" -C src/backend generated-headers > /dev/null
for dir in src/port src/common src/timezone src/backend src/backend/utils/mb/conversion_procs \
        src/backend/snowball src/pl/plpgsql src/interfaces/libpq src/fe_utils \
        src/bin/initdb src/bin/pg_ctl src/bin/psql; do
    make -s "$jobs" -C "$dir" install > /dev/null
done
# The server runs as the postgres user (PostgreSQL refuses root): it must reach the tree.
if ! setpriv --reuid=postgres --regid=postgres --init-groups test -x "$prefix/bin/postgres"; then
    echo "the postgres user cannot reach $prefix/bin/postgres: put the workspace (or" \
        "AUTOOPT_STATE_DIR) where other users may traverse, not under /root or a 0700 folder" >&2
    exit 1
fi
template="$prefix/template"
sum=$(md5sum < "$prefix/bin/postgres")
if [ ! -f "$template/PG_VERSION" ] || [ "$(cat "$prefix/template.sum" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$template" "$template.new"
    mkdir -p "$template.new"
    chown postgres:postgres "$template.new"
    setpriv --reuid=postgres --regid=postgres --init-groups "$prefix/bin/initdb" \
        -D "$template.new" --no-sync -A trust -U postgres --locale=C -E UTF8 > .initdb.log 2>&1 || { tail -20 .initdb.log >&2; exit 1; }
    mv "$template.new" "$template"
    echo "$sum" > "$prefix/template.sum"
fi
echo "installed in $prefix"
