"""`autoopt serve --http`: loopback by default, a token elsewhere, Origin checked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(workspace: Workspace, *args: str, token: str | None = None,
          hosts: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "AUTOOPT_WORKSPACE": str(workspace.root)}
    env.pop("AUTOOPT_HTTP_TOKEN", None)
    env.pop("AUTOOPT_HTTP_HOSTS", None)
    if hosts is not None:
        env["AUTOOPT_HTTP_HOSTS"] = hosts
    if token:
        env["AUTOOPT_HTTP_TOKEN"] = token
    return subprocess.Popen([sys.executable, "-m", "autoopt.server.cli", "serve", "--http", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "server exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("server did not listen")


@pytest.fixture
def http_server(workspace: Workspace) -> Iterator[int]:
    port = free_port()
    proc = start(workspace, "--port", str(port))
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_client_over_http(http_server: int) -> None:
    async with Client(f"http://127.0.0.1:{http_server}/mcp") as client:
        result = await client.call_tool("list_targets", {})
        assert not result.is_error
        assert "pyserver" in {t["name"] for t in result.structured_content["targets"]}


def test_foreign_origin_is_refused(http_server: int) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_server}/mcp", method="POST", data=b"{}",
        headers={"Origin": "http://evil.example", "Content-Type": "application/json",
                 "Accept": "application/json, text/event-stream"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code in (400, 403)


def test_non_loopback_without_token_is_refused(workspace: Workspace) -> None:
    proc = start(workspace, "--host", "0.0.0.0", "--port", str(free_port()))
    assert proc.wait(30) != 0
    assert "AUTOOPT_HTTP_TOKEN" in (proc.stderr.read() if proc.stderr else "")


async def test_token_is_required_when_set(workspace: Workspace) -> None:
    port = free_port()
    proc = start(workspace, "--host", "0.0.0.0", "--port", str(port), token="s3cret")
    try:
        wait_listening(port, proc)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", method="POST", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 401
        import httpx2

        headers = {"Authorization": "Bearer s3cret"}
        from mcp.client.streamable_http import streamable_http_client

        async with Client(streamable_http_client(
                f"http://127.0.0.1:{port}/mcp",
                http_client=httpx2.AsyncClient(headers=headers))) as client:
            result = await client.call_tool("list_targets", {})
            assert not result.is_error
    finally:
        proc.terminate()
        proc.wait(10)


def _post(port: int, headers: dict[str, str]) -> int:
    """The status of an initialize request to 127.0.0.1 with these headers."""
    body = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
            b'"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}')
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/mcp", method="POST", data=body,
        headers={"Content-Type": "application/json",
                 "Accept": "application/json, text/event-stream", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_listed_hosts_and_any_case_of_bearer_are_accepted(workspace: Workspace) -> None:
    """Bound to 0.0.0.0 with a token: AUTOOPT_HTTP_HOSTS names are allowed Host values (remote
    clients reach the machine by its name), others still get 421; the scheme in any case."""
    port = free_port()
    proc = start(workspace, "--host", "0.0.0.0", "--port", str(port), token="s3cret",
                 hosts=f" myhost.test:{port}, Other.Test ,")
    try:
        wait_listening(port, proc)
        auth = {"Authorization": "Bearer s3cret"}
        assert _post(port, {**auth, "Host": f"myhost.test:{port}"}) == 200
        assert _post(port, {**auth, "Host": f"other.test:{port}"}) == 200  # no port: this one
        assert _post(port, {**auth, "Host": "other.test"}) == 200  # behind a proxy on 80/443
        assert _post(port, {**auth, "Host": f"myhost.test:{port}",
                            "Origin": f"http://myhost.test:{port}"}) == 200
        assert _post(port, {**auth, "Host": f"evil.test:{port}"}) == 421
        assert _post(port, {**auth, "Host": "myhost.test:1"}) == 421
        assert _post(port, {**auth, "Host": f"myhost.test:{port}.evil.test"}) == 421
        assert _post(port, {**auth, "Host": f"127.0.0.1:{port}"}) == 200
        for header in ("bearer s3cret", "BEARER s3cret", "BeArEr  s3cret", " Bearer s3cret "):
            assert _post(port, {"Authorization": header}) == 200, header
        for header in ("bearer wrong", "Bearer s3cret2", "Bearer s3cre", "Basic s3cret",
                       "s3cret", "Bearer", "bearers3cret", "Bearer s3cret s3cret"):
            assert _post(port, {"Authorization": header}) == 401, header
    finally:
        proc.terminate()
        proc.wait(10)
