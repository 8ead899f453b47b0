#!/usr/bin/env bash
# cleanup.sh - remove what autoopt's Docker backend created: containers and images
# labelled autoopt.managed=true. The offline base image is never touched.
#
#   scripts/docker/cleanup.sh            only leftovers of servers that are gone
#                                        (same host, server pid no longer running)
#   scripts/docker/cleanup.sh --all      everything labelled autoopt.managed=true,
#                                        also of servers still running (stop them first)
#   scripts/docker/cleanup.sh --dry-run  list what would be removed
#
# The server does the first on its own when its Docker backend starts; this script is
# for a human after a crash, or to reclaim disk. A build that was cancelled in the middle
# of a step can leave an unlabelled cache layer; `docker image prune` removes those.
set -euo pipefail

all=0
dry=0
for arg in "$@"; do
    case "$arg" in
        --all) all=1 ;;
        --dry-run) dry=1 ;;
        *) echo "usage: $0 [--all] [--dry-run]" >&2; exit 2 ;;
    esac
done

if ! docker info >/dev/null 2>&1; then
    echo "cleanup: no Docker engine reachable (run scripts/setup-docker.sh)" >&2
    exit 1
fi
host=$(hostname)

# gone INSTANCE: true when the server that labelled it (<hostname>-<pid>) is not running
gone() {
    local instance="$1" pid
    [ "$all" = 1 ] && return 0
    [ -n "$instance" ] || return 1               # not made by a server: leave it
    [ "${instance%-*}" = "$host" ] || return 1   # another host's server: leave it
    pid="${instance##*-}"
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    ! kill -0 "$pid" 2>/dev/null
}

# remove KIND ID NAME INSTANCE
remove() {
    if [ "$dry" = 1 ]; then
        echo "would remove $1 $3 ($4)"
    elif [ "$1" = container ]; then
        docker rm -f "$2" >/dev/null && echo "removed container $3 ($4)"
    else
        docker rmi -f "$2" >/dev/null 2>&1 && echo "removed image $3 ($4)"
    fi
}

count=0
for id in $(docker ps -a -q --no-trunc --filter label=autoopt.managed=true); do
    instance=$(docker inspect -f '{{index .Config.Labels "autoopt.instance"}}' "$id" 2>/dev/null) || continue
    gone "$instance" || continue
    name=$(docker inspect -f '{{.Name}}' "$id" 2>/dev/null || echo "$id")
    remove container "$id" "${name#/}" "$instance" || true
    count=$((count + 1))
done

for id in $(docker images -a -q --no-trunc --filter label=autoopt.managed=true | sort -u); do
    instance=$(docker image inspect -f '{{index .Config.Labels "autoopt.instance"}}' "$id" 2>/dev/null) || continue
    gone "$instance" || continue
    tags=$(docker image inspect -f '{{join .RepoTags " "}}' "$id" 2>/dev/null || true)
    remove image "$id" "${tags:-$id}" "$instance" || true
    count=$((count + 1))
done

if [ "$dry" = 1 ]; then echo "cleanup: $count item(s) to remove"; else echo "cleanup: $count item(s) removed"; fi
