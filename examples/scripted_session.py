"""A scripted MCP client session: list targets, A/B one patch, record it.

Run from the checkout with the venv's python:
    .venv/bin/python examples/scripted_session.py examples/patches/pyserver-history-cap.patch
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent


async def main(patch_file: str) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "autoopt.server.cli", "serve"],
        env={"AUTOOPT_WORKSPACE": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    async with Client(server) as client:
        targets = await client.call_tool("list_targets", {})
        print([t["name"] for t in targets.structured_content["targets"]])

        async def progress(done: float, total: float | None, message: str | None) -> None:
            print(f"  [{done:.0f}/{total or 0:.0f}] {message}")

        result = await client.call_tool(
            "run_ab",
            {"target": "pyserver", "patch": Path(patch_file).read_text(), "runs": 5},
            progress_callback=progress,
        )
        # a run still going after wait_s (40 s) answers status=running: wait with get_run
        while not result.is_error and result.structured_content["status"] == "running":
            print("  still running:", result.structured_content["progress"])
            result = await client.call_tool(
                "get_run",
                {"run_id": result.structured_content["run_id"], "wait_s": 40},
                progress_callback=progress,
            )
        run = result.structured_content
        print(run["verdict"], run["reason"])


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
