#!/bin/sh
# Start the service on port $1 (cwd: the built tree): copy the data snapshot build.sh named
# into the deployment's own folder, apply migrations/*.sql in name order on a private
# postmaster (Unix socket only, so index builds happen before the health check passes and
# never count in a query's latency), copy queries/ beside the data for the workload (it finds
# them from SHOW data_directory), then exec the postmaster on 127.0.0.1:$1 as postgres.
# Usage: run.sh PORT LIB CONF (lib.sh, postgresql.conf; named in target.md as build.sh's).
set -eu
port=$1 lib=$2 conf=$3
. "$lib"
tree=$(pwd)
folder=${TMPDIR:-}  # the deployment's own temp folder (the server sets it)
if [ -z "$folder" ]; then  # a replayed script: a folder of its own, reachable by postgres
    folder=$(mktemp -d /tmp/autoopt-pgsql.XXXXXX)
fi
chmod 755 "$folder"
snap=$(cat "$tree/.snapshot")
data="$folder/pgdata"
rm -rf "$data" "$folder/queries"
cp -a "$snap" "$data"
cp "$conf" "$data/postgresql.conf"
chown -R postgres:postgres "$data"
sock=$(mktemp -d /tmp/autoopt-pgsql-s.XXXXXX)  # short: a socket path has a 107-byte limit
chown postgres "$sock"
private_start "$data" "$sock"
for f in "$tree"/migrations/*.sql; do
    [ -f "$f" ] || continue
    private_psql "$sock" -f "$f" || { private_stop "$data"; echo "migration $f failed" >&2; exit 1; }
done
private_stop "$data"
rm -rf "$sock" "$data/private.log"
cp -r "$tree/queries" "$folder/queries"
chmod -R a+rX "$folder/queries"
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    "$bin/postgres" -D "$data" -p "$port" -k ""
