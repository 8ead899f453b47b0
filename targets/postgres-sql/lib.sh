# Shared by build.sh and run.sh (sourced): Debian's PostgreSQL 15 binaries, run as the
# unprivileged postgres user (PostgreSQL refuses root), and a private postmaster on a Unix
# socket only (no TCP: nothing, not even the health check, sees it) for loading and migrating.
bin=/usr/lib/postgresql/15/bin
[ -x "$bin/postgres" ] || { echo "no $bin/postgres: apt-get install postgresql-15" >&2; exit 1; }
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

# private_start DATA SOCKDIR: start the postmaster on DATA, listening on SOCKDIR only.
private_start() {
    as_pg "$bin/pg_ctl" -D "$1" -s -w -t 300 -l "$1/private.log" \
        -o "-c listen_addresses='' -k $2" start \
        || { tail -20 "$1/private.log" >&2; exit 1; }
}

# private_stop DATA: a fast shutdown (a checkpoint, so the copy of DATA is consistent).
private_stop() { as_pg "$bin/pg_ctl" -D "$1" -s -w -t 300 -m fast stop; }

# private_psql SOCKDIR ARGS...: psql as postgres over the socket, stopping at the first error.
private_psql() {
    sock=$1; shift
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -U postgres -d postgres "$@"
}
