"""The reachability probe behind `## Build fetches:` (real sockets, no network needed)."""

from __future__ import annotations

import socket

from autoopt.tools import network


def test_a_listening_port_is_reachable_and_an_invalid_name_is_not() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        here = f"127.0.0.1:{server.getsockname()[1]}"
        assert network.unreachable(here) is None
        blocked = network.first_unreachable([here, "autoopt-test.invalid"])  # RFC 2606
    assert blocked is not None and blocked.startswith("autoopt-test.invalid (")
