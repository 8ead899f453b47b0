"""The kubernetes client's port-forward proxy thread: a stream the pod closed (a health
probe before the service listens) is logged, not printed as a traceback; other threads'
errors still reach the previous hook (real threads, real exceptions)."""

from __future__ import annotations

import ssl
import threading

import pytest

from autoopt.tools.backends import k8s_pods


def _die(name: str, exc: BaseException) -> None:
    def run() -> None:
        raise exc

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()


def test_proxy_stream_errors_are_quiet_and_others_are_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.thread.name))
    k8s_pods._quiet_proxy_errors()
    k8s_pods._quiet_proxy_errors()  # once is enough: no hook wraps another
    _die(f"{k8s_pods.PROXY_THREAD}: 8080", ssl.SSLEOFError(8, "EOF"))
    _die(f"{k8s_pods.PROXY_THREAD}: 8080", ValueError("a bug, not a closed stream"))
    _die("autoopt-other", BrokenPipeError())
    assert seen == [f"{k8s_pods.PROXY_THREAD}: 8080", "autoopt-other"]
