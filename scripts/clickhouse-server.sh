#!/usr/bin/env bash
# Start or stop Debian's clickhouse-server (apt-get install clickhouse-server; 18.16 on
# Debian 12) on loopback, with its own config, data and logs in DIR: no root-owned
# /var/lib/clickhouse, no fixed ports, no ::1 listener.
#
#   scripts/clickhouse-server.sh start DIR [HTTP_PORT]   prints the HTTP url when it answers
#   scripts/clickhouse-server.sh stop DIR                 stops the server started in DIR
#
# Users: 'default' (no password) and 'autoopt' (password $CLICKHOUSE_TEST_PASSWORD,
# default 'autoopt'), both from 127.0.0.1 only. Runs as the invoking user (root works with
# this private DIR); DIR/server.pid holds the server's pid.
set -euo pipefail

BIN=${CLICKHOUSE_SERVER_BIN:-/usr/sbin/clickhouse-server}
cmd=${1:?usage: clickhouse-server.sh start|stop DIR [HTTP_PORT]}
dir=${2:?usage: clickhouse-server.sh start|stop DIR [HTTP_PORT]}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

case "$cmd" in
start)
    [ -x "$BIN" ] || { echo "no $BIN: apt-get install -y clickhouse-server" >&2; exit 3; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    http_port=${3:-$(free_port)}
    tcp_port=$(free_port)
    password=${CLICKHOUSE_TEST_PASSWORD:-autoopt}
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
    cat > "$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger>
    <level>information</level>
    <log>$dir/log/server.log</log>
    <errorlog>$dir/log/server.err.log</errorlog>
    <size>100M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http_port</http_port>
  <tcp_port>$tcp_port</tcp_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <query_log>
    <database>system</database>
    <table>query_log</table>
    <flush_interval_milliseconds>1000</flush_interval_milliseconds>
  </query_log>
</yandex>
EOF
    cat > "$dir/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>10000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota>
    </default>
    <autoopt>
      <password>$password</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota>
    </autoopt>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
EOF
    "$BIN" --config-file="$dir/config.xml" > "$dir/log/stdout.log" 2>&1 &
    echo $! > "$dir/server.pid"
    url="http://127.0.0.1:$http_port"
    for _ in $(seq 1 300); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/ping", timeout=1)' "$url" 2>/dev/null; then
            echo "$url"
            exit 0
        fi
        if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
            echo "clickhouse-server exited; log tail:" >&2
            tail -n 20 "$dir/log/server.err.log" "$dir/log/stdout.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "clickhouse-server did not answer $url/ping within 30 s" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/server.pid" ] || exit 0
    pid=$(cat "$dir/server.pid")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/server.pid"
    ;;
*)
    echo "usage: clickhouse-server.sh start|stop DIR [HTTP_PORT]" >&2
    exit 2
    ;;
esac
