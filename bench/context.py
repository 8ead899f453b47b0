"""What the model reads: the characters of every answer over the demo's whole loop.

Runs the demo (`autoopt demo`: list targets, workload check, baseline profile, A/A, three
experiments, the profile after the KEEP and its diff) through a real stdio client and adds
up, tool by tool, what a client hands the model: the text content, the structured content
(clients that forward it) and images (base64). Tokens are estimated as characters / 4.

    python -m bench.context [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio

from autoopt.server.demo import demo, prepare_workspace


def measure(runs: int) -> list[dict[str, Any]]:
    tally: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="autoopt-context-") as tmp:
        root = prepare_workspace(Path(tmp) / "ws")
        anyio.run(demo, root, runs, "local", tally)
    return tally


def by_tool(tally: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in tally:
        t = out[row["tool"]]
        t["calls"] += 1
        for key in ("text", "structured", "images"):
            t[key] += row[key]
    return {k: dict(v) for k, v in out.items()}


def table(tools: dict[str, dict[str, int]]) -> str:
    lines = ["| tool | calls | text | structured | images | total chars | ~tokens |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    grand = 0
    for name, t in sorted(tools.items(), key=lambda kv: -sum(kv[1].values())):
        total = t["text"] + t["structured"] + t["images"]
        grand += total
        lines.append(f"| {name} | {t['calls']} | {t['text']:,} | {t['structured']:,} | "
                     f"{t['images']:,} | {total:,} | {total // 4:,} |")
    lines.append(f"| **all** | | | | | **{grand:,}** | **{grand // 4:,}** |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the per-call sizes here")
    args = parser.parse_args()
    tally = measure(args.runs)
    if args.json:
        args.json.write_text(json.dumps(tally, indent=1))
    print(table(by_tool(tally)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
