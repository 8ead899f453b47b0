"""What the experiment drivers (examples/*_experiment.py) share: a stdio session with
`autoopt serve` on this checkout, and a tool call that waits through the job tools."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from autoopt.server.demo import call_until_done

ROOT = Path(__file__).resolve().parent.parent


def serve() -> StdioServerParameters:
    """`autoopt serve` with this checkout as the workspace (records land in results/)."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "autoopt.server.cli", "serve"],
        env={"AUTOOPT_WORKSPACE": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "HOME": os.environ.get("HOME", "/root")},
    )


def say(text: str) -> None:
    print(text, flush=True)


async def progress(done: float, total: float | None, message: str | None) -> None:
    if message:
        say(f"  [{done:.0f}/{total or 0:.0f}] {message}")


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    result = await call_until_done(client, name, args, progress)
    if result.is_error:
        raise SystemExit(f"{name} failed: {result.content[0].text}")
    say(f"{name}: {time.monotonic() - t0:.1f} s")
    return result.structured_content or {}
