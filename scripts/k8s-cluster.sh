#!/usr/bin/env bash
# autoopt's single-node Kubernetes test cluster: a REAL kube-apiserver, controller-manager,
# scheduler and kubelet (v1.20.2, built offline from Debian 12's `kubernetes` source package),
# with Debian's etcd, containerd, runc and CNI plugins.  Everything listens on 127.0.0.1.
#
#   scripts/k8s-cluster.sh setup            install packages, build+cache binaries/images, make PKI
#   scripts/k8s-cluster.sh up               start the cluster (runs setup if needed); idempotent
#   scripts/k8s-cluster.sh down             stop it, remove pods/netns/bridge/mounts; idempotent
#   scripts/k8s-cluster.sh status           exit 0 and print "ready" when the node is Ready
#   scripts/k8s-cluster.sh load-image TAR   import a `docker save` tarball into containerd (k8s.io)
#   scripts/k8s-cluster.sh kubeconfig       print the admin kubeconfig path
#   scripts/k8s-cluster.sh env              print `export KUBECONFIG=... PATH=...` lines
#   scripts/k8s-cluster.sh kubectl ARGS...  run the cached kubectl against the cluster
#   scripts/k8s-cluster.sh purge            down, then delete the whole state dir (cache is kept)
#
# Environment:
#   AUTOOPT_K8S_CACHE  build cache (binaries, images, source tarball)
#                      default: $HOME/.cache/autoopt/k8s-1.20.2
#   AUTOOPT_K8S_STATE  runtime state (pki, kubeconfigs, configs, logs, pids, etcd, containerd)
#                      default: /var/lib/autoopt-k8s
#   AUTOOPT_K8S_KEEP_ETCD=1  keep the cluster's objects across down/up (default: each `up`
#                      starts with an empty cluster; credentials and imported images are kept)
#
# It must not collide with a Docker engine (docker.io) that may run on the same machine with the
# system containerd: our containerd has its own config, root, state, socket and runc root, its CNI
# bridge is `aoptk8s0`, and etcd uses ports 23790/23800.  Requires root (Debian 12, cgroup v1).
set -euo pipefail
umask 022

K8S_VERSION=1.20.2
CACHE=${AUTOOPT_K8S_CACHE:-${HOME:-/root}/.cache/autoopt/k8s-${K8S_VERSION}}
STATE=${AUTOOPT_K8S_STATE:-/var/lib/autoopt-k8s}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

BIN=$CACHE/bin                   # kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
IMAGES=$CACHE/images             # pause.tar, busybox.tar (docker-archive tarballs)
PKI=$STATE/pki
KCFG=$STATE/kubeconfig
CONF=$STATE/config
LOGS=$STATE/logs
RUN=$STATE/run                   # pid files, containerd socket, containerd state
SOCK=$RUN/containerd.sock
ADMIN_KUBECONFIG=$KCFG/admin.kubeconfig

CLUSTER_NAME=autoopt-test
# The node name must resolve to the address the kubelet listens on (127.0.0.1), because the
# apiserver reaches the kubelet by the node's Hostname address (exec, logs, port-forward) and
# the kubelet refuses a loopback --node-ip.  "localhost" is stable and always resolves.
NODE_NAME=localhost
API_PORT=6443
ETCD_PORT=23790                  # not 2379: a Debian etcd service may own the default ports
ETCD_PEER_PORT=23800
KUBELET_PORT=10250
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.0/24           # a /24 (our_netns relies on it); only on our bridge; pods get no default route
BRIDGE=aoptk8s0
PAUSE_IMAGE=localhost/autoopt/pause:${K8S_VERSION}
BUSYBOX_IMAGE=localhost/autoopt/busybox:local
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
DEB_PACKAGES=(rsync etcd-server containernetworking-plugins containerd runc openssl
              busybox-static gcc libc6-dev make iproute2 curl python3 util-linux)
# Sysctls the kubelet rewrites at start (protectKernelDefaults=false); `down` restores them.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops)

log() { printf '[k8s-cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }
kubectl_() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# ---------------------------------------------------------------------------------------------
# setup: packages, source, build, images, PKI, kubeconfigs
# ---------------------------------------------------------------------------------------------

apt_updated=0
ensure_packages() {   # install the given Debian packages that are not installed yet
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $apt_updated -eq 0 ]; then
        log "apt-get update"; apt-get update -qq >/dev/null; apt_updated=1
    fi
    log "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

bins_cached() { local c; for c in "${KUBE_CMDS[@]}"; do [ -x "$BIN/$c" ] || return 1; done; }

# deb-src lines with the same URIs/suites/components/keyring as the system's own Debian sources
# (deb822 *.sources files and one-line sources.list files), for a private apt configuration.
debsrc_lines() {
    python3 - /etc/apt/sources.list /etc/apt/sources.list.d/* <<'EOF'
import sys, re, os
out = []
for path in sys.argv[1:]:
    if not os.path.isfile(path):
        continue
    text = open(path, encoding="utf-8", errors="replace").read()
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            f = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.strip()
            if "deb" not in f.get("types", "").split() or f.get("enabled", "yes") == "no":
                continue
            opt = f" [signed-by={f['signed-by']}]" if f.get("signed-by", "").startswith("/") else ""
            for uri in f.get("uris", "").split():
                for suite in f.get("suites", "").split():
                    out.append(f"deb-src{opt} {uri} {suite} {f.get('components', 'main')}")
    elif path.endswith(".list"):
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("deb "):
                out.append("deb-src " + line[4:])
for line in dict.fromkeys(out):
    print(line)
EOF
}

fetch_source() {      # -> $CACHE/src/kubernetes_*.orig.tar.gz (Debian's kubernetes source)
    local src=$CACHE/src apt=$CACHE/apt
    ls "$src"/kubernetes_*.orig.tar.gz >/dev/null 2>&1 && return 0
    log "fetching Debian's kubernetes source package (private apt config: $apt)"
    mkdir -p "$src" "$apt/lists/partial" "$apt/sources.list.d"
    debsrc_lines >"$apt/sources.list"
    [ -s "$apt/sources.list" ] || die "could not derive deb-src lines from /etc/apt/sources*"
    local o=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
             -o "Dir::State::Lists=$apt/lists" -o "APT::Sandbox::User=root")
    apt-get "${o[@]}" update -qq >/dev/null
    (cd "$src" && apt-get "${o[@]}" source --download-only -qq kubernetes >/dev/null)
    ls "$src"/kubernetes_*.orig.tar.gz >/dev/null 2>&1 || die "no kubernetes orig tarball downloaded"
    tar tzf "$src"/kubernetes_*.orig.tar.gz "kubernetes-${K8S_VERSION}/go.mod" >/dev/null 2>&1 ||
        die "the kubernetes source package is not upstream ${K8S_VERSION}: $(ls "$src")"
}

build_kube() {        # upstream `make WHAT=...` (GOPATH mode, generated OpenAPI), ~12-15 min
    ensure_packages golang-go
    local b=$CACHE/build tree=$CACHE/build/kubernetes-${K8S_VERSION} t0=$SECONDS
    rm -rf "$b"; mkdir -p "$b" "$CACHE/logs"
    tar xzf "$CACHE"/src/kubernetes_*.orig.tar.gz -C "$b"
    log "building ${KUBE_CMDS[*]} (log: $CACHE/logs/build.log; ~12-15 min on 2 cores)"
    local what="" c
    for c in "${KUBE_CMDS[@]}"; do what+="cmd/$c "; done
    if ! (cd "$tree" && env -u GOFLAGS -u GOPATH -u GO111MODULE GOPROXY=off \
            KUBE_GIT_VERSION=v${K8S_VERSION} KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 \
            make WHAT="${what% }") >"$CACHE/logs/build.log" 2>&1; then
        tail -n 40 "$CACHE/logs/build.log" >&2; die "kubernetes build failed"
    fi
    mkdir -p "$BIN.tmp"
    for c in "${KUBE_CMDS[@]}"; do install -m 0755 "$tree/_output/bin/$c" "$BIN.tmp/$c"; done
    rm -rf "$BIN"; mv "$BIN.tmp" "$BIN"
    rm -rf "$b"       # the tree with _output is several GB; the orig tarball stays in $CACHE/src
    log "build done in $((SECONDS - t0)) s"
}

build_images() {      # offline images: static pause from the k8s tree; a busybox-static image
    mkdir -p "$IMAGES"
    local tmp; tmp=$(mktemp -d)
    if [ ! -s "$IMAGES/pause.tar" ]; then
        fetch_source
        tar xzf "$CACHE"/src/kubernetes_*.orig.tar.gz -C "$tmp" "kubernetes-${K8S_VERSION}/build/pause/linux/pause.c"
        mkdir -p "$tmp/pause"
        gcc -Os -static -Wall -DVERSION="v${K8S_VERSION}-autoopt" -o "$tmp/pause/pause" \
            "$tmp/kubernetes-${K8S_VERSION}/build/pause/linux/pause.c"
        strip "$tmp/pause/pause"
        python3 "$HERE/k8s/mkimage.py" "$tmp/pause" "$IMAGES/pause.tar" "$PAUSE_IMAGE" \
            --entrypoint '["/pause"]' >/dev/null
        log "made $IMAGES/pause.tar ($PAUSE_IMAGE)"
    fi
    if [ ! -s "$IMAGES/busybox.tar" ]; then
        local r=$tmp/busybox
        mkdir -p "$r"/{bin,etc,tmp,proc,sys,dev,www,root}; chmod 1777 "$r/tmp"
        cp /bin/busybox "$r/bin/busybox"
        file_is_static /bin/busybox || die "/bin/busybox is not static (install busybox-static)"
        for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
        echo 'hello from autoopt busybox' >"$r/www/index.html"
        python3 "$HERE/k8s/mkimage.py" "$r" "$IMAGES/busybox.tar" "$BUSYBOX_IMAGE" --cmd '["sh"]' >/dev/null
        log "made $IMAGES/busybox.tar ($BUSYBOX_IMAGE)"
    fi
    rm -rf "$tmp"
}

file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }

make_pki() {          # throwaway CA, apiserver serving cert, kubelet client cert, SA keys, tokens
    [ -s "$PKI/tokens.csv" ] && [ -s "$PKI/apiserver-kubelet-client.crt" ] && return 0
    log "generating throwaway PKI in $PKI"
    rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
    (
        cd "$PKI"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
            -subj "/CN=${CLUSTER_NAME}-ca" -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature 2>/dev/null
        sign() {  # name subject extensions
            openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
            printf '%s\n' "$3" >"$1.ext"
            openssl x509 -req -sha256 -days 3650 -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
                -out "$1.crt" -extfile "$1.ext" 2>/dev/null
            rm -f "$1.csr" "$1.ext"
        }
        sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:${SERVICE_IP},DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        # the apiserver's client identity towards the kubelet (exec, logs, port-forward)
        sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        tok() { openssl rand -hex 24; }
        {
            echo "$(tok),${CLUSTER_NAME}-admin,uid-admin,\"system:masters\""
            echo "$(tok),system:kube-controller-manager,uid-kcm"
            echo "$(tok),system:kube-scheduler,uid-sched"
            echo "$(tok),system:node:${NODE_NAME},uid-node,\"system:nodes\""
        } >tokens.csv
        chmod 600 ./*.key tokens.csv
    )
}

write_kubeconfig() {  # file user token
    local ca; ca=$(base64 -w0 "$PKI/ca.crt")
    (umask 077; cat >"$1") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ${CLUSTER_NAME}
  cluster:
    server: https://127.0.0.1:${API_PORT}
    certificate-authority-data: ${ca}
users:
- name: $2
  user:
    token: $3
contexts:
- name: ${CLUSTER_NAME}
  context:
    cluster: ${CLUSTER_NAME}
    user: $2
current-context: ${CLUSTER_NAME}
EOF
}

make_kubeconfigs() {
    mkdir -p "$KCFG"
    local token user
    while IFS=, read -r token user _; do
        case $user in
            "${CLUSTER_NAME}-admin")         write_kubeconfig "$KCFG/admin.kubeconfig" "$user" "$token" ;;
            system:kube-controller-manager) write_kubeconfig "$KCFG/controller-manager.kubeconfig" "$user" "$token" ;;
            system:kube-scheduler)          write_kubeconfig "$KCFG/scheduler.kubeconfig" "$user" "$token" ;;
            system:node:*)                  write_kubeconfig "$KCFG/kubelet.kubeconfig" "$user" "$token" ;;
        esac
    done <"$PKI/tokens.csv"
}

write_configs() {     # containerd, CNI and kubelet configs (regenerated on every setup/up)
    mkdir -p "$CONF/cni" "$LOGS" "$RUN"
    cat >"$CONF/containerd.toml" <<EOF
# autoopt test cluster containerd: separate from any system containerd (Docker's included)
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # REQUIRED here: no CAP_SYS_RESOURCE in these VMs, so oom_score_adj may only be raised
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CONF/cni"
EOF
    # No portmap/masquerade plugin: we never touch iptables.  isGateway without a default route:
    # pods reach each other and the node, nothing else.
    cat >"$CONF/cni/10-autoopt.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "autoopt-k8s",
  "plugins": [
    {"type": "bridge", "bridge": "${BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "${POD_CIDR}"}]],
              "dataDir": "$STATE/cni-ipam"}}
  ]
}
EOF
    cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization:
  mode: AlwaysAllow         # only clients with a cert from our CA get in (the apiserver)
cgroupDriver: cgroupfs      # cgroup v1 here; memory limits are enforced by runc per container
failSwapOn: false
makeIPTablesUtilChains: false
clusterDomain: cluster.local
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
}

cmd_setup() {
    local t0=$SECONDS
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    ensure_packages "${DEB_PACKAGES[@]}"
    if ! bins_cached; then fetch_source; build_kube; else log "binaries cached in $BIN"; fi
    build_images
    make_pki
    make_kubeconfigs
    write_configs
    log "setup done in $((SECONDS - t0)) s (cache: $CACHE, state: $STATE)"
}

setup_needed() {
    bins_cached && [ -s "$IMAGES/pause.tar" ] && [ -s "$IMAGES/busybox.tar" ] &&
        [ -s "$PKI/tokens.csv" ] && [ -s "$ADMIN_KUBECONFIG" ] && command -v containerd >/dev/null &&
        command -v etcd >/dev/null && [ -x /usr/lib/cni/bridge ] && return 1
    return 0
}

# ---------------------------------------------------------------------------------------------
# process management (pid files in $RUN; a pid counts only if it still runs the recorded binary)
# ---------------------------------------------------------------------------------------------

daemon_pid() {        # print the live pid of component $1, or fail
    local f=$RUN/$1.pid pid exe
    [ -f "$f" ] && [ -f "$RUN/$1.exe" ] || return 1
    pid=$(cat "$f"); exe=$(cat "$RUN/$1.exe")
    [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] || return 1
    echo "$pid"
}

start_daemon() {      # name binary args...
    local name=$1 bin; shift; bin=$(readlink -f "$(command -v "$1")")
    if daemon_pid "$name" >/dev/null; then return 0; fi
    log "starting $name"
    echo "=== $(date -Is) $*" >>"$LOGS/$name.log"
    # fd 9 is our flock on $STATE/.lock: a daemon must not inherit (and so hold) it
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/$name.pid"; echo "$bin" >"$RUN/$name.exe"
}

stop_daemons() {      # SIGTERM the named components together; SIGKILL what is left after 10 s
    local name pid pids=() alive
    for name in "$@"; do
        if pid=$(daemon_pid "$name"); then
            log "stopping $name (pid $pid)"; kill "$pid" 2>/dev/null || true; pids+=("$pid")
        fi
    done
    for _ in $(seq 40); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.25
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for name in "$@"; do rm -f "$RUN/$name.pid" "$RUN/$name.exe"; done
}

wait_for() {          # seconds description command... ; on timeout show the component's log
    local secs=$1 what=$2 end; shift 2; end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then
            log "timed out after ${secs}s waiting for $what"
            local f; for f in "$LOGS"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
            return 1
        fi
        sleep 0.5
    done
}

api_ready() { curl -sf --max-time 3 --cacert "$PKI/ca.crt" "https://127.0.0.1:${API_PORT}/readyz"; }
node_ready() {
    [ "$(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
default_sa() { kubectl_ -n default get serviceaccount default -o name; }

# ---------------------------------------------------------------------------------------------
# up / down / status
# ---------------------------------------------------------------------------------------------

cmd_up() {
    local t0=$SECONDS
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    if setup_needed; then cmd_setup; else make_kubeconfigs; write_configs; fi
    # a pod CIDR route owned by anything but our bridge would black-hole pod traffic
    if ip -o route show "$POD_CIDR" | grep -qv "dev $BRIDGE"; then
        die "route for $POD_CIDR already exists on another device: $(ip -o route show "$POD_CIDR")"
    fi

    local etcd_args=(--name autoopt --data-dir "$STATE/etcd"
        --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}"
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}"
        --initial-cluster "autoopt=http://127.0.0.1:${ETCD_PEER_PORT}" --unsafe-no-fsync)
    start_daemon etcd etcd "${etcd_args[@]}"
    start_daemon containerd containerd --config "$CONF/containerd.toml"
    wait_for 30 etcd curl -sf --max-time 2 "http://127.0.0.1:${ETCD_PORT}/health"

    start_daemon apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${API_PORT}" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" --authorization-mode=Node,RBAC \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=Hostname --endpoint-reconciler-type=none \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range="${SERVICE_CIDR}" \
        --allow-privileged=true --profiling=false
    wait_for 90 kube-apiserver api_ready

    local k
    k=$KCFG/controller-manager.kubeconfig
    start_daemon controller-manager "$BIN/kube-controller-manager" --kubeconfig="$k" \
        --authentication-kubeconfig="$k" --authorization-kubeconfig="$k" --bind-address=127.0.0.1 --port=0 \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --use-service-account-credentials=true --leader-elect=false --cluster-name="${CLUSTER_NAME}" \
        --controllers='*,-nodeipam' --profiling=false
    k=$KCFG/scheduler.kubeconfig
    start_daemon scheduler "$BIN/kube-scheduler" --kubeconfig="$k" --authentication-kubeconfig="$k" \
        --authorization-kubeconfig="$k" --bind-address=127.0.0.1 --port=0 --leader-elect=false --profiling=false

    wait_for 30 containerd ctr_ version
    # (re)import the offline images: cheap, and the tags then always match the cached tarballs
    ctr_ images import "$IMAGES/pause.tar" >/dev/null
    ctr_ images import "$IMAGES/busybox.tar" >/dev/null

    if ! daemon_pid kubelet >/dev/null; then
        # remember the host's values of the sysctls the kubelet rewrites, for `down`
        if [ ! -f "$STATE/sysctl.saved" ]; then
            local s; for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$STATE/sysctl.saved"
        fi
        mkdir -p "$STATE/kubelet"
        start_daemon kubelet "$BIN/kubelet" --config="$CONF/kubelet.yaml" --kubeconfig="$KCFG/kubelet.kubeconfig" \
            --hostname-override="$NODE_NAME" --container-runtime=remote \
            --container-runtime-endpoint="unix://$SOCK" --image-service-endpoint="unix://$SOCK" \
            --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki"
    fi
    wait_for 120 "node $NODE_NAME Ready" node_ready
    wait_for 60 "the default service account" default_sa
    log "cluster up in $((SECONDS - t0)) s"
    echo "$ADMIN_KUBECONFIG"
}

our_netns() {         # network namespaces of our pods: eth0 is a veth whose host end is on our
    local ns peer host  # bridge, or (bridge already gone) an unattached veth and an IP of our pod CIDR
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        peer=$(ip -n "$ns" -o link show eth0 2>/dev/null | sed -n 's/.*eth0@if\([0-9]*\).*/\1/p')
        [ -n "$peer" ] || continue
        host=$(ip -o link show 2>/dev/null | grep "^${peer}: " || true)
        case $host in
            *" master ${BRIDGE} "*) echo "$ns" ;;
            *" master "*) ;;
            *) ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | grep -q " inet ${POD_CIDR%.*}\." && echo "$ns" ;;
        esac
    done
    return 0
}

cmd_down() {
    local t0=$SECONDS pid
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    [ -d "$STATE" ] || { log "nothing to do ($STATE absent)"; return 0; }
    stop_daemons kubelet
    # kill and remove every pod container (CNI DEL is not run this way: netns/bridge handled below)
    if daemon_pid containerd >/dev/null && ctr_ version >/dev/null 2>&1; then
        local t c
        for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
        # containerd's CRI plugin deletes exited tasks itself; force-delete what it leaves
        for _ in $(seq 20); do [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && break; sleep 0.2; done
        for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
        for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$c" >/dev/null 2>&1 || true; done
    fi
    local ns_list; ns_list=$(our_netns)
    stop_daemons scheduler controller-manager apiserver
    stop_daemons containerd etcd
    # containerd-shim processes serving OUR containerd (identified by our socket path)
    local f cl
    for f in /proc/[0-9]*/cmdline; do
        { cl=$(tr '\0' ' ' <"$f"); } 2>/dev/null || continue
        case $cl in
            *containerd-shim*" -address $SOCK "*)
                pid=${f#/proc/}; pid=${pid%/cmdline}
                # its children are container init processes (each pid namespace dies with its init)
                local kids=()
                read -ra kids <<<"$(ps -o pid= --ppid "$pid" 2>/dev/null | tr '\n' ' ')"
                log "killing leftover containerd shim $pid and its containers: ${kids[*]}"
                [ ${#kids[@]} -eq 0 ] || kill -9 "${kids[@]}" 2>/dev/null || true
                kill -9 "$pid" 2>/dev/null || true ;;
        esac
    done
    for n in $ns_list; do log "deleting netns $n"; ip netns delete "$n" 2>/dev/null || true; done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then log "deleting bridge $BRIDGE"; ip link delete "$BRIDGE"; fi
    rm -rf "$STATE/cni-ipam"
    # kubelet (secret tmpfs volumes, subpaths) and containerd (rootfs, shm) mounts under $STATE
    local m
    awk -v r="$STATE/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    if ! awk -v r="$STATE/" 'index($2, r) == 1 {f=1} END {exit !f}' /proc/mounts; then
        rm -rf --one-file-system "$STATE/kubelet/pods" "$RUN/containerd" "$RUN/runc"
        [ "${AUTOOPT_K8S_KEEP_ETCD:-0}" = 1 ] || rm -rf --one-file-system "$STATE/etcd"
    else
        log "WARNING: mounts remain under $STATE; not deleting pod directories"
    fi
    rm -f "$SOCK" "$SOCK.ttrpc"
    # empty pod cgroups the kubelet leaves behind (cgroup v1, cgroupfs driver)
    local d
    for d in /sys/fs/cgroup/*/kubepods; do
        if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    done
    if [ -f "$STATE/sysctl.saved" ]; then
        sysctl -q -p "$STATE/sysctl.saved" >/dev/null 2>&1 || true
        rm -f "$STATE/sysctl.saved"
    fi
    log "down in $((SECONDS - t0)) s"
}

cmd_status() {
    local n
    bins_cached || { echo "not set up: binaries missing in $BIN (run: $0 setup)"; return 2; }
    for n in etcd containerd apiserver controller-manager scheduler kubelet; do
        daemon_pid "$n" >/dev/null || { echo "down: $n is not running"; return 1; }
    done
    api_ready >/dev/null 2>&1 || { echo "not ready: kube-apiserver /readyz fails"; return 1; }
    node_ready || { echo "not ready: node $NODE_NAME is not Ready"; return 1; }
    echo ready
}

cmd_load_image() {
    local tar=${1:-}
    if [ -z "$tar" ] || [ ! -f "$tar" ]; then
        die "usage: $0 load-image TARBALL (a docker-archive, e.g. from docker save)"
    fi
    if ! daemon_pid containerd >/dev/null || ! ctr_ version >/dev/null 2>&1; then
        die "the cluster's containerd is not running (run: $0 up)"
    fi
    ctr_ images import "$tar"
}

cmd_purge() {
    cmd_down
    case $STATE in /|/var|/var/lib|"$HOME") die "refusing to delete $STATE" ;; esac
    rm -rf --one-file-system "$STATE"; log "removed $STATE"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; }

main() {
    local cmd=${1:-}; shift || true
    case $cmd in
        setup|up|down|purge)
            mkdir -p "$STATE"; exec 9>"$STATE/.lock"
            flock -w 900 9 || die "another k8s-cluster.sh holds $STATE/.lock"
            case $cmd in setup) cmd_setup ;; up) cmd_up ;; down) cmd_down ;; purge) cmd_purge ;; esac ;;
        status) cmd_status ;;
        load-image) cmd_load_image "$@" ;;
        kubeconfig) echo "$ADMIN_KUBECONFIG" ;;
        env) echo "export KUBECONFIG=$ADMIN_KUBECONFIG"; echo "export PATH=$BIN:\$PATH" ;;
        kubectl) exec "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@" ;;
        -h|--help|help|"") usage ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
