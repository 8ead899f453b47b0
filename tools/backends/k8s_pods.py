"""The pod side of the kubernetes backend: a port-forward listener, and readings of pod
status, exec replies and /proc files (no cluster calls here: they are made by the caller).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from autoopt.tools import procfs

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROXY_THREAD = "Kubernetes port forward proxy"  # the kubernetes client's thread per port
log = logging.getLogger(__name__)

# waiting reasons after which a pod will not become Ready by itself
FATAL_WAITING = frozenset(
    {
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


def short_error(exc: BaseException, limit: int = 400) -> str:
    body = getattr(exc, "body", None)
    reason = getattr(exc, "reason", None)
    text = str(exc)
    if body or reason:  # an ApiException: its status message says the most
        with contextlib.suppress(Exception):
            text = json.loads(body)["message"]  # type: ignore[arg-type]
        if not text or text == str(exc):
            text = f"{getattr(exc, 'status', '')} {reason or ''} {body or ''}".strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quiet_proxy_errors() -> None:
    """The kubernetes client's proxy thread dies with a traceback on stderr when the pod
    closes a stream (a health probe before the service listens); log it at debug level
    instead. The error is still seen: the stream's own error channel (Forwarder.errors)."""
    if getattr(threading.excepthook, "autoopt_quiet", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread.name if args.thread is not None else ""
        if thread.startswith(PROXY_THREAD) and (
            isinstance(args.exc_value, OSError)
            or type(args.exc_value).__module__.startswith("websocket")
        ):
            log.debug("kubernetes: %s ended: %r", thread, args.exc_value)
            return
        previous(args)

    hook.autoopt_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class Forwarder:
    """127.0.0.1:<port> forwarded to a pod's port: each accepted connection opens its own
    port-forward stream through the API server, served by a thread of its own."""

    def __init__(self, connect: Callable[[], Any], remote_port: int, name: str) -> None:
        _quiet_proxy_errors()
        self.connect = connect
        self.remote_port = remote_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.live: set[socket.socket] = set()
        self.errors: deque[str] = deque(maxlen=10)
        self.connections = 0
        self.thread = threading.Thread(
            target=self._accept, name=f"autoopt-k8s-forward-{name}", daemon=True
        )
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                ready, _, _ = select.select([self.listener], [], [], 0.2)
                if not ready:
                    continue
                conn, _ = self.listener.accept()
            except (OSError, ValueError):
                if self.stopped.is_set():
                    return
                continue
            with contextlib.suppress(OSError):  # no Nagle: replies come in pieces
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                if self.stopped.is_set():
                    conn.close()
                    return
                self.live.add(conn)
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        forward = remote = None
        try:
            forward = self.connect()
            remote = forward.socket(self.remote_port)
            remote.setblocking(True)
            self._pump(conn, remote)
        except Exception as exc:
            if not self.stopped.is_set():
                self.errors.append(f"{type(exc).__name__}: {short_error(exc, 300)}")
        finally:
            with self.lock:
                self.live.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            if remote is not None:  # let the client's proxy thread end cleanly: a close
                with contextlib.suppress(OSError):  # with unread data resets its socket
                    remote.shutdown(socket.SHUT_WR)
                    remote.settimeout(1.0)
                    while remote.recv(1 << 16):
                        pass
            if forward is not None:
                with contextlib.suppress(Exception):
                    error = forward.error(self.remote_port)
                    if error and not self.stopped.is_set():
                        self.errors.append(" ".join(str(error).split()))
                with contextlib.suppress(Exception):
                    forward.close()

    def _pump(self, conn: socket.socket, remote: Any) -> None:
        while not self.stopped.is_set():
            ready, _, _ = select.select([conn, remote], [], [], 0.5)
            for sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    return
                (remote if sock is conn else conn).sendall(data)

    def stop(self) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):  # wakes the accept thread's select() at once
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            for conn in list(self.live):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=2)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def started(pod: Any, container: str) -> bool:
    """The container runs (and its startupProbe, if any, passed)."""
    status = container_status(pod, container)
    running = status is not None and status.state.running is not None
    return bool(running and status.started is not False)


def has_startup_probe(pod: Any, container: str) -> bool:
    spec = next((c for c in pod.spec.containers or [] if c.name == container), None)
    return spec is not None and spec.startup_probe is not None


def container_status(pod: Any, container: str | None) -> Any:
    if pod is None:
        return None
    statuses = pod.status.container_statuses or []
    return next((c for c in statuses if container is None or c.name == container), None)


def exec_status(text: str) -> tuple[int | None, str]:
    """(exit code, message) from an exec's error channel (a v1 Status); the code is None
    when the command did not run (or did not finish in time)."""
    try:
        status = json.loads(text) if text else {}
    except ValueError:
        return None, text.strip()
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"]), ""
    return None, " ".join(str(status.get("message", "")).split())


def running_unrestarted(status: Any) -> bool:
    return bool(
        status is not None and status.state.running is not None and not status.restart_count
    )


def oom_killed(status: Any) -> bool:
    if status is None:
        return False
    for state in (status.state, status.last_state):
        terminated = state.terminated if state is not None else None
        if terminated is not None and terminated.reason == "OOMKilled":
            return True
    return False


def pod_problem(pod: Any) -> str | None:
    """Why the pod will not become Ready by itself, or None while it still may."""
    status = pod.status
    if status.phase in ("Failed", "Succeeded"):
        return f"the pod ended (phase {status.phase}: {status.reason or ''} {status.message or ''})"
    init = status.init_container_statuses or []
    for cs in [*init, *(status.container_statuses or [])]:
        state, last = cs.state, cs.last_state
        waiting = state.waiting if state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            message = " ".join((waiting.message or "").split())
            return f"container {cs.name}: {waiting.reason}: {message}"
        for when, st in (("exited", state), ("exited and was restarted", last)):
            terminated = st.terminated if st is not None else None
            if terminated is None or (cs in init and terminated.exit_code == 0):
                continue
            return (
                f"container {cs.name} {when} (exit code {terminated.exit_code}, "
                f"{terminated.reason or 'no reason'})"
            )
    return None


def container_lines(pod: Any) -> list[str]:
    out = []
    for cs in pod.status.container_statuses or []:
        parts = []
        state, last = cs.state, cs.last_state
        if state is not None and state.waiting is not None:
            parts.append(f"waiting {state.waiting.reason}: {state.waiting.message or ''}".strip())
        if state is not None and state.running is not None:
            parts.append("running")
        if state is not None and state.terminated is not None:
            t = state.terminated
            parts.append(f"terminated {t.reason} (exit {t.exit_code})")
        if last is not None and last.terminated is not None:
            t = last.terminated
            parts.append(f"last terminated {t.reason} (exit {t.exit_code})")
        parts.append(f"restarts {cs.restart_count}, ready {cs.ready}, image {cs.image}")
        out.append(f"{cs.name}: " + "; ".join(" ".join(p.split()) for p in parts))
    return out


def stat_mark(stat: str) -> tuple[float | None, int | None]:
    """(CPU seconds, start time in ticks) of /proc/<pid>/stat text."""
    line = next((ln for ln in stat.splitlines() if ") " in ln), "")
    fields = line[line.rfind(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[19])
    except (IndexError, ValueError):
        return None, None


def split_proc(text: str) -> tuple[dict[str, float], str, dict[str, float]]:
    """`cat /proc/1/status /proc/1/stat /proc/1/smaps_rollup` output, apart again."""
    status: list[str] = []
    stat = ""
    rollup: list[str] = []
    part = status
    for line in text.splitlines():
        if re.match(r"^1 \(", line):
            stat = line
            part = rollup
            continue
        part.append(line)
    smaps: dict[str, float] = {}
    fields = procfs.parse_status("\n".join(status))
    if rollup:
        parsed = procfs.parse_status("\n".join(rollup[1:]))
        smaps = {k: round(v / 1024, 3) for k, v in parsed.items()}
    return fields, stat, smaps
