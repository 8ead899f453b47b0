"""Transports: stdio for desktop clients, streamable HTTP for remote ones.

HTTP binds 127.0.0.1 by default. Binding any other address requires a bearer token in
AUTOOPT_HTTP_TOKEN; Host and Origin headers are checked (DNS-rebinding protection, as the
MCP spec advises), with extra origins allowed through AUTOOPT_HTTP_ORIGINS (comma-separated).
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
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
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
        hosts.append(f"{host}:{port}")
        origins.append(f"http://{host}:{port}")
    origins += [
        o.strip() for o in os.environ.get("AUTOOPT_HTTP_ORIGINS", "").split(",") if o.strip()
    ]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    app = create_server().streamable_http_app(transport_security=security, host=host)
    return BearerAuth(app, token) if token else app


def serve_http(host: str, port: int) -> int:
    import uvicorn

    app = http_app(host, port)
    print(f"autoopt: MCP over streamable HTTP at http://{host}:{port}/mcp", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
