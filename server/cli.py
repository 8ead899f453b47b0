"""The `autoopt` command: serve (stdio or streamable HTTP) and demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    demo = sub.add_parser("demo", help="run the pyserver optimization loop through an MCP client")
    demo.add_argument("--runs", type=int, default=5, help="runs per arm (>= 3)")
    demo.add_argument("--env", default="local", help="backend: local | docker | kubernetes")
    demo.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="an empty folder for the demo's workspace (default: demo-runs/<time>)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("AUTOOPT_LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        from autoopt.server.transport import serve_http, serve_stdio

        if args.http:
            return serve_http(args.host, args.port)
        return serve_stdio()
    from autoopt.server.demo import run_demo

    return run_demo(runs=args.runs, backend=args.env, workspace=args.workspace)


if __name__ == "__main__":
    raise SystemExit(main())
