#!/bin/sh
# Start the PostgreSQL built in this tree (the cwd) on port $1: copy the template data
# directory that build.sh initdb'd into the deployment's own temp folder, install the
# target's postgresql.conf, and exec the postmaster in the foreground as the unprivileged
# postgres user (the server runs as root; PostgreSQL refuses root), which build.sh checked
# can reach the tree. TCP on 127.0.0.1 only: no Unix socket (its path would be too long).
set -eu
port=$1
here=$(cd "$(dirname "$0")" && pwd)
tree=$(pwd)
folder=${TMPDIR:-}  # the deployment's own temp folder (the server sets it)
if [ -z "$folder" ]; then  # a replayed script: a folder of its own, reachable by postgres
    folder=$(mktemp -d /tmp/autoopt-postgres.XXXXXX)
    chmod 755 "$folder"
fi
data="$folder/pgdata"
rm -rf "$data"
cp -a "$tree/.inst/template" "$data"
cp "$here/postgresql.conf" "$data/postgresql.conf"
chown -R postgres:postgres "$data"
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    "$tree/.inst/bin/postgres" -D "$data" -p "$port" -k ""
