"""Whether this machine reaches the hosts a target's container build downloads from."""

from __future__ import annotations

import socket
import time

PROBE_TIMEOUT_S = 2.0
TTL_S = 300.0
_seen: dict[str, tuple[float, str | None]] = {}


def unreachable(host: str) -> str | None:
    """None when a TCP connection to `host` (port 443 unless given) opens, else why not.
    Answers are cached for TTL_S, so list_targets stays fast."""
    now = time.monotonic()
    if (hit := _seen.get(host)) and now - hit[0] < TTL_S:
        return hit[1]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=PROBE_TIMEOUT_S):
            reason = None
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
    _seen[host] = (time.monotonic(), reason)
    return reason


def first_unreachable(hosts: list[str]) -> str | None:
    """'host (why)' for the first host this machine cannot reach, else None."""
    for host in hosts:
        if (why := unreachable(host)) is not None:
            return f"{host} ({why})"
    return None
