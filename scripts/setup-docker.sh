#!/usr/bin/env bash
# setup-docker.sh - make this machine ready for autoopt's Docker backend, offline.
#
#   scripts/setup-docker.sh          install + start the engine + build the base image
#   scripts/setup-docker.sh --stop   stop the dockerd that this script started
#
# Idempotent: every step first checks whether it is needed, so a second run only
# prints the two closing lines ("docker engine: ready", "base image: <tag>").
#
# Steps
#   1. apt-get install Debian's docker.io (dockerd, containerd, runc, docker-proxy,
#      tini) plus iptables and debootstrap when they are missing.
#   2. Start dockerd in the background when `docker info` fails (no systemd here).
#   3. Build the offline Python base image (no registry can be reached, so nothing
#      can be pulled): debootstrap a minbase bookworm with python3 from the
#      machine's own Debian mirror, cache the rootfs tarball, `docker import` it.
#
# Environment
#   AUTOOPT_BASE_IMAGE              tag of the base image (autoopt/python-base:bookworm)
#   AUTOOPT_CACHE                   cache root ($HOME/.cache/autoopt); the rootfs
#                                   tarball lives in $AUTOOPT_CACHE/docker/
#   AUTOOPT_DEBIAN_MIRROR           Debian mirror for debootstrap (default: taken
#                                   from the host's apt sources)
#   AUTOOPT_DOCKER_STORAGE_DRIVER   force a storage driver (default: see pick_storage_driver)
#   AUTOOPT_DOCKER_START_TIMEOUT    seconds to wait for the engine (60)
#
# Chosen dockerd flags (tested on the Debian 12 Firecracker VM, kernel 6.18,
# docker.io 20.10.24, root fs ext4, hybrid cgroup v1 hierarchy, no systemd):
#   --storage-driver=overlay2   overlay is built into the kernel and works on the
#       ext4 root. vfs also works but copies the whole image for every container
#       and layer: `docker run --rm <base> true` took ~1.0 s with vfs vs ~0.3 s
#       with overlay2, a COPY-only build 2 s vs 0.2 s, and disk use doubles per
#       layer. vfs is only picked when /var/lib/docker sits on overlayfs (where
#       overlay2 cannot nest) or the kernel has no overlay.
#   --exec-opt native.cgroupdriver=cgroupfs   no systemd is running, so the
#       systemd cgroup driver is impossible. The VM mounts cgroup v1 controllers
#       (memory, cpu, pids, ...) and a cgroup2 at /sys/fs/cgroup/unified that
#       carries none of them (only hugetlb),
#       so Docker runs in cgroup v1 mode; containers land in /docker/<id>.
#   --iptables=true (default, not passed)   iptables-nft works here (nf_tables
#       + nft_compat are built in). Docker needs it for the MASQUERADE rule that
#       gives containers outbound access (e.g. apt from the Debian mirror inside a
#       `docker build`) and for the DNAT rules of published ports.
#   --userland-proxy=false   published ports are served by kernel DNAT
#       (hairpin NAT + route_localnet on docker0) instead of one docker-proxy
#       process per port that copies every byte in user space. Measured with a
#       keep-alive HTTP client against a stdlib server: median 706 us/request
#       via docker-proxy vs 430 us with DNAT (385 us to the container IP
#       directly). For a benchmarking tool on 2 cores that extra process is
#       noise and overhead, so it is off. Publishing on 127.0.0.1:0 still works
#       (dockerd itself holds the host port open to reserve it).
#   (no --containerd)   dockerd starts and supervises its own containerd under
#       /var/run/docker/containerd (namespace "moby"), unless a system containerd
#       socket exists at /run/containerd/containerd.sock. The Kubernetes setup
#       runs its own containerd on its own socket under /var/lib/autoopt-k8s, so
#       the two never share a containerd.
# Before starting dockerd, net.ipv4.ip_forward is set to 1 when it is 0: Docker
# only switches the iptables FORWARD policy to DROP when it has to enable
# forwarding itself, and that DROP would also drop the Kubernetes cluster's
# bridged pod traffic. With forwarding already on, the policy is left alone.
set -euo pipefail

SUITE=bookworm
BASE_IMAGE="${AUTOOPT_BASE_IMAGE:-autoopt/python-base:bookworm}"
CACHE_DIR="${AUTOOPT_CACHE:-$HOME/.cache/autoopt}/docker"
ROOTFS_TARBALL="$CACHE_DIR/rootfs-$SUITE-minbase-python3.tar.gz"
DOCKERD_LOG=/var/log/autoopt-dockerd.log
DOCKERD_PIDFILE=/run/autoopt-dockerd.pid
START_TIMEOUT="${AUTOOPT_DOCKER_START_TIMEOUT:-60}"

say() { echo "setup-docker: $*"; }
die() { echo "setup-docker: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts dockerd)"

engine_up() { docker info >/dev/null 2>&1; }

# true while process $1 exists and is not a zombie (a killed dockerd can stay
# <defunct> for a moment until PID 1 reaps it; kill -0 would still succeed)
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# pid of the dockerd this script started, if it is still alive
our_dockerd_pid() {
    local pid
    [ -s "$DOCKERD_PIDFILE" ] || return 1
    pid=$(cat "$DOCKERD_PIDFILE")
    alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    echo "$pid"
}

# ---------------------------------------------------------------- --stop
if [ "${1:-}" = "--stop" ]; then
    if ! pid=$(our_dockerd_pid); then
        rm -f "$DOCKERD_PIDFILE"
        say "no dockerd started by this script is running"
        exit 0
    fi
    # SIGTERM: dockerd stops its containers (up to its 15 s shutdown timeout),
    # then its managed containerd, then exits.
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        alive "$pid" || break
        sleep 0.5
    done
    if alive "$pid"; then
        say "dockerd (pid $pid) ignored SIGTERM for 30 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DOCKERD_PIDFILE"
    say "stopped dockerd (pid $pid)"
    exit 0
elif [ $# -gt 0 ]; then
    die "usage: $0 [--stop]"
fi

# ---------------------------------------------------------------- 1. packages
pkgs=()
command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
command -v iptables >/dev/null 2>&1 || pkgs+=(iptables)
command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
# The machine may ship a docker CLI of its own (here /usr/local/bin/docker
# 28.x); docker.io adds /usr/bin/docker 20.10. Either talks to the engine.
if [ ${#pkgs[@]} -gt 0 ]; then
    say "installing ${pkgs[*]} (apt-get) ..."
    apt_log=$(mktemp /tmp/autoopt-apt.XXXXXX)
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends: docker.io recommends apparmor, git, needrestart,
    # ... none of which the engine needs here. Other setup scripts may run apt
    # at the same time: wait for the dpkg lock, and retry when apt-get update
    # finds the lists lock taken.
    apt_ok=0
    for attempt in 1 2 3 4 5 6; do
        if { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
             apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${pkgs[@]}"; } >"$apt_log" 2>&1; then
            apt_ok=1; break
        fi
        grep -qi 'could not get lock' "$apt_log" || break
        say "apt is busy (another apt/dpkg is running), retry $attempt in 20 s ..."
        sleep 20
    done
    if [ "$apt_ok" != 1 ]; then
        tail -n 30 "$apt_log" >&2
        die "apt-get failed (full log: $apt_log)"
    fi
    rm -f "$apt_log"
    say "installed ${pkgs[*]}"
fi

# ---------------------------------------------------------------- 2. dockerd
pick_storage_driver() {
    if [ -n "${AUTOOPT_DOCKER_STORAGE_DRIVER:-}" ]; then
        echo "$AUTOOPT_DOCKER_STORAGE_DRIVER"; return
    fi
    local dir=/var/lib/docker fstype
    while [ ! -e "$dir" ]; do dir=$(dirname "$dir"); done
    fstype=$(stat -f -c %T "$dir" 2>/dev/null || echo unknown)
    if grep -qw overlay /proc/filesystems && [ "$fstype" != overlayfs ]; then
        echo overlay2
    else
        echo vfs
    fi
}

if ! engine_up; then
    pid=""
    if pid=$(our_dockerd_pid); then
        # started by an earlier run and still coming up (or wedged): wait for it
        say "dockerd (pid $pid) is running but not answering yet, waiting ..."
    else
        pid=""
        # Leftovers of a dockerd that died (kill -9, crash): its pid files may
        # name zombies that PID 1 has not reaped yet, and dockerd refuses to
        # start while /var/run/docker.pid names a process that still exists.
        for f in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
            old=$(cat "$f" 2>/dev/null) || continue
            for _ in $(seq 1 20); do
                if [ -e "/proc/$old" ] && ! alive "$old"; then sleep 0.5; else break; fi
            done
        done
        if old=$(cat /var/run/docker.pid 2>/dev/null) && alive "$old" &&
           [ "$(cat "/proc/$old/comm" 2>/dev/null)" = dockerd ]; then
            # someone else's dockerd, still starting: wait for it, don't race it
            pid=$old
            say "a dockerd not started by this script (pid $old) is running, waiting for it ..."
        fi
    fi
    if [ -z "$pid" ]; then
        rm -f /var/run/docker.pid
        storage_driver=$(pick_storage_driver)
        # ip_forward=1 before dockerd starts keeps the FORWARD policy at ACCEPT
        # (see the header).
        if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
            echo 1 > /proc/sys/net/ipv4/ip_forward
            say "enabled net.ipv4.ip_forward (so Docker leaves the FORWARD policy alone)"
        fi
        flags=(
            --storage-driver="$storage_driver"
            --exec-opt native.cgroupdriver=cgroupfs
            --userland-proxy=false
        )
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        echo "=== $(date -u +%FT%TZ) setup-docker.sh: dockerd ${flags[*]}" >>"$DOCKERD_LOG"
        # setsid: own session and process group, so a Ctrl-C or a kill of the
        # calling shell's process group does not take the engine down with it.
        # Not a process-group leader here, so setsid execs and $! is dockerd.
        nohup setsid dockerd "${flags[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$DOCKERD_PIDFILE"
        say "started dockerd (pid $pid, storage driver $storage_driver, log $DOCKERD_LOG)"
    fi
    deadline=$((SECONDS + START_TIMEOUT))
    until engine_up; do
        if ! alive "$pid"; then
            tail -n 40 "$DOCKERD_LOG" >&2
            rm -f "$DOCKERD_PIDFILE"
            die "dockerd (pid $pid) exited during start-up; log tail above"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 40 "$DOCKERD_LOG" >&2
            die "docker engine not reachable after ${START_TIMEOUT}s; log tail above (dockerd pid $pid left running)"
        fi
        sleep 0.5
    done
    say "docker engine up after $((SECONDS + START_TIMEOUT - deadline))s"
fi

# ---------------------------------------------------------------- 3. base image
# The Debian mirror the host's apt uses: first URI of the deb822 stanza (or the
# one-line "deb" entry) that lists the plain suite, e.g. http://deb.debian.org/debian.
debian_mirror() {
    local uri=""
    if [ -n "${AUTOOPT_DEBIAN_MIRROR:-}" ]; then
        echo "$AUTOOPT_DEBIAN_MIRROR"; return
    fi
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk -v suite="$SUITE" '
            function flush() { if (!found && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1 } types = suites = uris = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
            /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uris = $0 }
            END { flush() }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        # "deb [options] URI suite components": drop the options, match the suite
        uri=$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list |
              awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }')
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_rootfs_tarball() {
    local mirror
    mirror=$(debian_mirror)
    mkdir -p "$CACHE_DIR"
    BUILD_WORK=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    local work="$BUILD_WORK"
    # debootstrap mounts /proc and /sys inside the target; on failure they may
    # still be mounted, so unmount before deleting anything.
    cleanup_work() {
        awk -v w="$BUILD_WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf --one-file-system "$BUILD_WORK"
    }
    trap cleanup_work EXIT
    say "debootstrap $SUITE (minbase + python3, procps) from $mirror ..."
    if ! debootstrap --variant=minbase --include=python3,procps "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        cp "$work/debootstrap.log" "$CACHE_DIR/debootstrap-failed.log" 2>/dev/null || true
        die "debootstrap failed (log: $CACHE_DIR/debootstrap-failed.log)"
    fi
    local r="$work/rootfs"
    # Keep it small: no package caches/lists, docs, man pages, translations, logs.
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin \
           "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* "$r"/usr/share/man/* \
           "$r"/usr/share/info/* "$r"/usr/share/locale/* "$r"/var/log/* \
           "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old
    # ... and keep derived images small too: images built FROM this one that run
    # apt-get install skip docs and delete downloaded .debs (as Docker's official
    # debian images do).
    mkdir -p "$r/etc/dpkg/dpkg.cfg.d" "$r/etc/apt/apt.conf.d"
    cat >"$r/etc/dpkg/dpkg.cfg.d/01-autoopt-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
    # Docker bind-mounts its own resolv.conf/hosts/hostname; do not bake the host's in.
    : >"$r/etc/resolv.conf"
    echo "$SUITE minbase python3 procps from $mirror, built $(date -u +%FT%TZ)" >"$r/etc/autoopt-base-image"
    # gzip -1: the tarball is a local cache; fast beats small here.
    tar -C "$r" --numeric-owner -cf - . | gzip -1 >"$work/rootfs.tar.gz"
    mv -f "$work/rootfs.tar.gz" "$ROOTFS_TARBALL"
    cleanup_work
    trap - EXIT
    say "cached rootfs tarball $ROOTFS_TARBALL ($(du -h "$ROOTFS_TARBALL" | cut -f1))"
}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    [ -s "$ROOTFS_TARBALL" ] || build_rootfs_tarball
    say "importing $ROOTFS_TARBALL as $BASE_IMAGE ..."
    docker import \
        --change 'CMD ["python3"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL org.autoopt.base="debian-'"$SUITE"'-minbase-python3"' \
        --message "autoopt offline python base ($SUITE minbase + python3)" \
        "$ROOTFS_TARBALL" "$BASE_IMAGE" >/dev/null
    say "built base image $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
fi

echo "docker engine: ready"
echo "base image: $BASE_IMAGE"
