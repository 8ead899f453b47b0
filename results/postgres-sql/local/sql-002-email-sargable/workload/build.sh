#!/bin/sh
# "Build" (cwd: the tree of src/, i.e. queries/ and migrations/): the engine is Debian's, so
# this only makes sure the data-directory snapshot with the loaded data exists. The snapshot
# is keyed by load.sql, postgresql.conf, the scale (PGSQL_SCALE, default 0.5) and the server's
# version, cached under ~/.cache/autoopt/postgres-sql/<key> (made once, under a lock, by
# initdb + load.sql on a private postmaster), and named in the tree's .snapshot for run.sh.
# Usage: build.sh LIB LOAD CONF (lib.sh, load.sql, postgresql.conf: target.md names them as
# {target_dir}/... so a record copies them and its scripts replay without the workspace).
set -eu
lib=$1 load=$2 conf=$3
. "$lib"
scale=${PGSQL_SCALE:-0.5}
key=$( (cat "$load" "$conf"; echo "$scale"; "$bin/postgres" -V) \
    | md5sum | cut -c1-16)
cache="$HOME/.cache/autoopt/postgres-sql"
snap="$cache/$key"
mkdir -p "$cache"
exec 9> "$cache/.lock"
flock 9
if [ ! -f "$snap/PG_VERSION" ]; then
    work=$(mktemp -d /tmp/autoopt-pgsql-load.XXXXXX)
    trap 'private_stop "$work/pgdata" 2>/dev/null || true; rm -rf "$work"' EXIT
    chmod 755 "$work"
    mkdir "$work/pgdata" "$work/s"
    chown postgres:postgres "$work/pgdata" "$work/s"
    as_pg "$bin/initdb" -D "$work/pgdata" --no-sync -A trust -U postgres --locale=C -E UTF8 \
        > "$work/initdb.log" 2>&1 || { tail -20 "$work/initdb.log" >&2; exit 1; }
    cp "$conf" "$work/pgdata/postgresql.conf"
    private_start "$work/pgdata" "$work/s"
    t0=$(date +%s)
    private_psql "$work/s" -v scale="$scale" -f "$load"
    private_stop "$work/pgdata"
    rm -f "$work/pgdata/private.log"
    rm -rf "$snap.new"
    cp -a "$work/pgdata" "$snap.new"
    mv "$snap.new" "$snap"
    echo "loaded scale $scale in $(( $(date +%s) - t0 )) s: snapshot $snap"
fi
echo "$snap" > .snapshot
echo "data snapshot $snap ($(du -sm "$snap" | cut -f1) MB)"
