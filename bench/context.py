"""What the model reads: the characters of every answer over the demo's whole loop.

Runs the demo (`autoopt demo`: list targets, workload check, baseline profile, A/A, three
experiments, the profile after the KEEP and its diff) through a real stdio client and adds
up, tool by tool, what a client hands the model: the text content, the structured content
(clients that forward it) and images (base64). Tokens are estimated as characters / 4.

    python -m bench.context [--runs 5] [--before docs/context/before.json]
                            [--json docs/context/after.json] [--update docs/benchmarks.md]

`--before` is the same measurement kept from an earlier commit; with it the table shows
both. `--update` writes the section into the report in place.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio

from autoopt.server.demo import demo, prepare_workspace
from bench.common import ROOT

TITLE = "What the model reads: the demo's loop"
GOAL = 40_000
BEFORE_COMMIT = "4b6873e"  # docs/context/before.json was measured there


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


def _total(t: dict[str, int] | None) -> int:
    return sum(t.get(k, 0) for k in ("text", "structured", "images")) if t else 0


def table(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]] | None) -> str:
    """Tool by tool: calls, text, structured, images and total chars (before -> after)."""
    names = sorted(set(after) | set(before or {}), key=lambda n: -max(
        _total(after.get(n)), _total((before or {}).get(n))))
    head = ["tool", "calls", "text", "structured", "images", "total chars", "~tokens"]
    if before is not None:
        head += ["before: total chars", "before: ~tokens"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    sums = [0, 0]
    for name in names:
        a, b = after.get(name, {}), (before or {}).get(name)
        total = _total(a)
        sums[0] += total
        row = [name, str(a.get("calls", 0)), f"{a.get('text', 0):,}",
               f"{a.get('structured', 0):,}", f"{a.get('images', 0):,}", f"{total:,}",
               f"{total // 4:,}"]
        if before is not None:
            sums[1] += _total(b)
            row += [f"{_total(b):,}", f"{_total(b) // 4:,}"]
        lines.append("| " + " | ".join(row) + " |")
    last = ["**all**", "", "", "", "", f"**{sums[0]:,}**", f"**{sums[0] // 4:,}**"]
    if before is not None:
        last += [f"**{sums[1]:,}**", f"**{sums[1] // 4:,}**"]
    lines.append("| " + " | ".join(last) + " |")
    return "\n".join(lines)


def section(after: list[dict[str, Any]], before: list[dict[str, Any]] | None, runs: int) -> str:
    a = by_tool(after)
    b = by_tool(before) if before is not None else None
    loop = sum(_total(t) for name, t in a.items() if name != "tools/list")
    listing = _total(a.get("tools/list"))
    lines = [
        f"## {TITLE}",
        "",
        "Commands:",
        "",
        "```",
        f"python -m bench.context --runs {runs} --before docs/context/before.json "
        "--json docs/context/after.json --update docs/benchmarks.md",
        "```",
        "",
        "Every answer of one demo loop through a real stdio client, as a client hands it to the "
        "model: text content, structured content (counted too: many clients forward it) and "
        "images (base64). JSON is measured with Python's default separators; the wire is "
        "compact, so tools/list on the wire is smaller still. `before` is the same run at "
        f"commit {BEFORE_COMMIT}, before the lean answers (docs/context/before.json).",
        "",
        table(a, b),
        "",
        f"The loop's answers without tools/list: **{loop:,}** characters; with it "
        f"{loop + listing:,} (goal: at most {GOAL:,}).",
    ]
    return "\n".join(lines) + "\n"


def update(report: Path, text: str) -> None:
    """Replace the section in the report, or append it."""
    old = report.read_text() if report.exists() else ""
    pattern = re.compile(rf"^## {re.escape(TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else (
        old.rstrip() + "\n\n" + text)
    report.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an earlier run's per-call sizes (JSON)")
    parser.add_argument("--json", type=Path, help="write this run's per-call sizes here")
    parser.add_argument("--update", type=Path, help=f"write the section into this report "
                        f"(e.g. {ROOT / 'docs' / 'benchmarks.md'})")
    parser.add_argument("--sizes", type=Path, help="render a saved measurement, run nothing")
    args = parser.parse_args()
    tally = json.loads(args.sizes.read_text()) if args.sizes else measure(args.runs)
    before = json.loads(args.before.read_text()) if args.before else None
    if args.json:
        args.json.write_text(json.dumps(tally, indent=1))
    text = section(tally, before, args.runs)
    if args.update:
        update(args.update, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
