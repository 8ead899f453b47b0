#!/bin/sh
# Start Debian's clickhouse-server (18.16: apt-get install clickhouse-server) in the
# foreground on 127.0.0.1, HTTP on port $1 and native TCP on a free port, as the
# unprivileged clickhouse user (the package's; the server runs as root), with its config,
# data and logs in the deployment's own folder ($TMPDIR, which the autoopt server sets).
# The cwd is the built tree: this folder's config.xml (placeholders @DIR@, @HTTP_PORT@,
# @TCP_PORT@) and users.xml.
set -eu
port=${1:?usage: run.sh HTTP_PORT}
bin=${CLICKHOUSE_SERVER_BIN:-/usr/sbin/clickhouse-server}
user=${CLICKHOUSE_RUN_USER:-clickhouse}
[ -x "$bin" ] || { echo "no $bin: apt-get install -y clickhouse-server" >&2; exit 3; }
tree=$(pwd)
folder=${TMPDIR:-}
if [ -z "$folder" ]; then  # a replayed script: a folder of its own, reachable by $user
    folder=$(mktemp -d /tmp/autoopt-clickhouse.XXXXXX)
    chmod 755 "$folder"
fi
dir="$folder/clickhouse"
rm -rf "$dir"
mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
tcp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s|@DIR@|$dir|g" -e "s|@HTTP_PORT@|$port|g" -e "s|@TCP_PORT@|$tcp_port|g" \
    "$tree/config.xml" > "$dir/config.xml"
cp "$tree/users.xml" "$dir/users.xml"
if [ "$(id -u)" != 0 ]; then  # not root: run as ourselves
    exec "$bin" --config-file="$dir/config.xml"
fi
chown -R "$user:" "$dir"
if ! setpriv --reuid="$user" --regid="$user" --init-groups test -w "$dir/data"; then
    echo "the $user user cannot reach $dir: put the workspace (or AUTOOPT_STATE_DIR)" \
        "where other users may traverse, not under /root or a 0700 folder" >&2
    exit 1
fi
exec setpriv --reuid="$user" --regid="$user" --init-groups "$bin" --config-file="$dir/config.xml"
