"""`health_cmd:`: a service is healthy when a command exits 0 (real processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autoopt.tools.engine import Engine
from autoopt.tools.errors import DeployFailed
from autoopt.tools.workspace import Workspace

pytestmark = pytest.mark.anyio

TARGET = """# Target: svc
## Source
repo: local
path: targets/svc/src
## Primary Metric
name: wall_s
direction: lower
## Local
kind: service
run: {python} -m http.server --bind 127.0.0.1 {port}
health_cmd: {python} -c "{connect}" {port}
health_timeout: 3
""".replace(
    "{connect}", "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])))"
)


def workspace(tmp_path: Path, health: str | None = None) -> Workspace:
    src = tmp_path / "targets" / "svc" / "src"
    src.mkdir(parents=True)
    (src / "index.html").write_text("ok\n")
    text = TARGET.replace("{python}", sys.executable)
    if health:
        text = "\n".join(
            f"health_cmd: {health}" if line.startswith("health_cmd:") else line
            for line in text.splitlines()
        )
    (src.parent / "target.md").write_text(text + "\n")
    return Workspace(tmp_path)


async def test_health_command_gates_the_deployment(tmp_path: Path) -> None:
    engine = Engine(workspace(tmp_path))
    build = await engine.build("svc")
    deployment = await engine.deploy(build.id)
    try:
        waits = [s.shell for s in deployment.journal.steps if s.note == "wait for the health check"]
        assert waits and "socket.create_connection" in waits[0] and '"$PORT"' in waits[0]
    finally:
        await engine.teardown(deployment.id)
        await engine.discard_build(build.id)


async def test_a_failing_health_command_fails_the_deploy(tmp_path: Path) -> None:
    engine = Engine(workspace(tmp_path, "false {port}"))
    build = await engine.build("svc")
    with pytest.raises(DeployFailed, match=r"did not answer false \d+ within 3 s"):
        await engine.deploy(build.id)
    await engine.discard_build(build.id)
