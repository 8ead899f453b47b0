"""Transports: stdio for desktop clients, streamable HTTP for remote ones.

HTTP binds 127.0.0.1 by default. Binding any other address requires a bearer token in
AUTOOPT_HTTP_TOKEN; Host and Origin headers are checked (DNS-rebinding protection, as the
MCP spec advises). On a non-loopback bind, AUTOOPT_HTTP_HOSTS (comma-separated host[:port],
the names clients reach this machine by) adds allowed Host values; AUTOOPT_HTTP_ORIGINS adds
allowed origins.
"""

from __future__ import annotations

import hmac
import os
import sys
from typing import Any

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve_stdio() -> int:
    """Serve stdio until the client closes stdin or a SIGTERM/SIGINT arrives; both end the
    same way: jobs interrupted, this server's deployments torn down."""
    import anyio

    from autoopt.server.app import create_server

    anyio.run(_stdio_until_signal, create_server())
    return 0


async def _stdio_until_signal(server: Any) -> None:
    import signal

    import anyio

    async with anyio.create_task_group() as group:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    server.engine.jobs.interrupt_all()
                    group.cancel_scope.cancel()
                    # the SDK reads stdin in a thread that no cancel can wake: once the
                    # shutdown has run, leave without waiting for it
                    with anyio.CancelScope(shield=True):
                        while not server.engine.stopped:
                            await anyio.sleep(0.05)
                    sys.stdout.flush()
                    os._exit(0)

        group.start_soon(on_signal)
        await server.run_stdio_async()
        group.cancel_scope.cancel()


class BearerAuth:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>` (the scheme
    in any case, as RFC 9110 says)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = token.encode()

    def _ok(self, header: bytes) -> bool:
        scheme, _, credentials = header.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            credentials.strip(), self.expected)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        if scope["type"] == "http" and not self._ok(header):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
            return
        await self.app(scope, receive, send)


def http_app(host: str, port: int) -> Any:
    """The ASGI app for `autoopt serve --http`; raises SystemExit on an unsafe setup."""
    from mcp.server.transport_security import TransportSecuritySettings

    from autoopt.server.app import create_server

    token = os.environ.get("AUTOOPT_HTTP_TOKEN", "")
    if host not in LOOPBACK and not token:
        raise SystemExit(
            f"refusing to bind {host}: set AUTOOPT_HTTP_TOKEN to a secret bearer token "
            "(clients send 'Authorization: Bearer <token>'), or bind 127.0.0.1"
        )
    hosts = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
    origins = [f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"]
    if host not in LOOPBACK:
        extra = [f"{host}:{port}", *allowed_hosts(os.environ.get("AUTOOPT_HTTP_HOSTS", ""), port)]
        hosts += extra
        origins += [f"http://{h}" for h in extra]
    origins += _csv(os.environ.get("AUTOOPT_HTTP_ORIGINS", ""))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    app = create_server().streamable_http_app(transport_security=security, host=host)
    return BearerAuth(app, token) if token else app


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def allowed_hosts(text: str, port: int) -> list[str]:
    """AUTOOPT_HTTP_HOSTS as Host header values: `name:port` as given (`name:*` for any port);
    a bare name (or [v6 literal]) allows `name:<port>`, and `name` for a proxy on 80/443."""
    out = []
    for value in _csv(text.lower()):
        tail = "" if value.endswith("]") else value.rpartition(":")[2]
        has_port = ":" in value and (tail.isdigit() or tail == "*")
        out += [value] if has_port else [f"{value}:{port}", value]
    return out


def serve_http(host: str, port: int) -> int:
    import uvicorn

    app = http_app(host, port)
    print(f"autoopt: MCP over streamable HTTP at http://{host}:{port}/mcp", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
