#!/usr/bin/env bash
# smoke-test.sh - check that the engine prepared by scripts/setup-docker.sh does
# what autoopt's Docker backend relies on. Creates only throwaway containers and
# one throwaway image (autoopt-smoke/app), removes them at the end.
#
#   scripts/docker/smoke-test.sh            (PYTHON=/path/to/python with the
#                                            docker SDK for the SDK checks)
#
# Checks: build FROM the offline base with --build-arg BASE_IMAGE, run with
# -p 127.0.0.1:0:8080 --memory 256m, HTTP over the published port, VmHWM of
# PID 1, peak memory from the cgroup (v1 memory.max_usage_in_bytes, v2
# memory.peak), OOMKilled for a 32 MiB container allocating 200 MB, and the
# Python SDK (ping, ports={'8080/tcp': ('127.0.0.1', None)}, reading the port).
set -euo pipefail

BASE_IMAGE="${AUTOOPT_BASE_IMAGE:-autoopt/python-base:bookworm}"
APP_IMAGE=autoopt-smoke/app:latest
PYTHON="${PYTHON:-python3}"
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

work=$(mktemp -d)
cid=""
cleanup() {
    [ -n "$cid" ] && docker rm -f "$cid" >/dev/null 2>&1
    docker rm -f autoopt-smoke-oom >/dev/null 2>&1
    docker rmi "$APP_IMAGE" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

docker info >/dev/null 2>&1 || fail "docker engine not reachable (run scripts/setup-docker.sh)"
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || fail "base image $BASE_IMAGE missing"

cat >"$work/server.py" <<'EOF'
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from pid %d\n" % os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
EOF
# shellcheck disable=SC2016  # ${BASE_IMAGE} is for the Dockerfile, not the shell
printf 'ARG BASE_IMAGE=autoopt/python-base:bookworm\nFROM ${BASE_IMAGE}\nCOPY server.py /app/server.py\nCMD ["python3","/app/server.py"]\n' >"$work/Dockerfile"

# The CLI may be 28.x without buildx: it falls back to the legacy builder and
# prints a deprecation notice on stderr; that is expected.
docker build -q --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$APP_IMAGE" "$work" >/dev/null 2>"$work/build.err" ||
    { cat "$work/build.err" >&2; fail "docker build"; }
ok "docker build --build-arg BASE_IMAGE=$BASE_IMAGE"

cid=$(docker run -d -p 127.0.0.1:0:8080 --memory 256m "$APP_IMAGE")
port=$(docker port "$cid" 8080/tcp | head -n1 | awk -F: '{print $NF}')
body=""
for _ in $(seq 1 50); do
    body=$(curl -sf "http://127.0.0.1:$port/" 2>/dev/null) && break
    sleep 0.1
done
[ -n "$body" ] || fail "no HTTP answer on 127.0.0.1:$port"
ok "published on 127.0.0.1:$port, answered: $body"

hwm=$(docker exec "$cid" grep VmHWM /proc/1/status) || fail "VmHWM"
ok "docker exec cat /proc/1/status -> $(echo "$hwm" | tr -s ' \t' ' ')"

cgv=$(docker info -f '{{.CgroupVersion}}')
if [ "$cgv" = 1 ]; then
    inside=$(docker exec "$cid" cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes)
    host=$(cat "/sys/fs/cgroup/memory/docker/$cid/memory.max_usage_in_bytes")
    ok "cgroup v1 peak: inside $inside B (/sys/fs/cgroup/memory/memory.max_usage_in_bytes), host $host B (/sys/fs/cgroup/memory/docker/<id>/memory.max_usage_in_bytes)"
else
    inside=$(docker exec "$cid" cat /sys/fs/cgroup/memory.peak 2>/dev/null || echo n/a)
    ok "cgroup v2 peak: inside $inside (/sys/fs/cgroup/memory.peak)"
fi
docker rm -f "$cid" >/dev/null; cid=""

docker run --name autoopt-smoke-oom --memory 32m "$BASE_IMAGE" \
    python3 -c 'b = bytearray(200 * 1024 * 1024)' >/dev/null 2>&1 || true
oom=$(docker inspect -f '{{.State.OOMKilled}} exit={{.State.ExitCode}}' autoopt-smoke-oom)
[ "${oom%% *}" = true ] || fail "OOMKilled not reported ($oom)"
ok "--memory 32m + 200 MB allocation: OOMKilled=$oom"
docker rm autoopt-smoke-oom >/dev/null

if "$PYTHON" -c 'import docker' 2>/dev/null; then
    "$PYTHON" - "$APP_IMAGE" <<'EOF'
import sys, time, urllib.request
import docker
c = docker.from_env()
assert c.ping()
ct = c.containers.run(sys.argv[1], detach=True, mem_limit="256m",
                      ports={"8080/tcp": ("127.0.0.1", None)})
try:
    ct.reload()  # ports are only filled in after a reload
    hp = ct.ports["8080/tcp"][0]
    assert hp["HostIp"] == "127.0.0.1", hp
    url = "http://127.0.0.1:%s/" % hp["HostPort"]
    for _ in range(50):
        try:
            body = urllib.request.urlopen(url, timeout=2).read().decode().strip()
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise SystemExit("FAIL: SDK container did not answer on " + url)
    print("ok: SDK %s (API %s): ports=%s, %s" % (docker.__version__, c.api.api_version, ct.ports, body))
finally:
    ct.remove(force=True)
EOF
else
    echo "skip: docker SDK not importable with $PYTHON (set PYTHON=...)"
fi
echo "smoke test passed"
