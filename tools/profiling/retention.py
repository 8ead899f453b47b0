"""tool='retention': what keeps a Python program's memory alive at its peak.

The program runs under retention_runner.py (copied beside the profile, started by the
target's interpreter in place of the script, so the pid stays the program's), which takes
gc censuses at the highs of RSS and of the interpreter's allocated blocks. The stored
stacks are owner chains, root first: a module global or a frame local, the attributes,
keys or items that lead from it, and the container that holds the bytes, with what it
holds as the leaf (`Parser.feed: self` > `.stack (list)` > `dict`, count 300000). The
values are the bytes each container retains (shallow sizes of everything reached first
through it), so they add up to the census; diff_profiles compares them like any stacks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from autoopt.tools.command import Command
from autoopt.tools.profiling.detect import split_python
from autoopt.tools.profiling.model import Frame, Peak, Point, ProfileBuilder, relativize

MEASURE = "bytes retained at the largest census, by owner chain (gc census)"
OVERHEAD_NOTE = ("retention (gc censuses in the program's process, the other threads held "
                 "meanwhile): its timings and its RSS are not the program's")
MODE = "gc census: shallow sizes of live objects, each charged to the first owner reaching it"
RUNNER = Path(__file__).with_name("retention_runner.py")
_OPTS_WITH_VALUE = {"-X", "-W", "-Q"}


def wrap(command: str, output: Path, runner: Path, source: Path = RUNNER) -> str:
    """`python3 [opts] script args` (or `-m module`) -> `python3 [opts] runner OUT script
    args`, in the command's own interpreter."""
    shutil.copyfile(source, runner)
    env, python, rest = split_python(command)
    opts: list[str] = []
    while rest and rest[0].startswith("-") and rest[0] != "-m":
        opts.append(rest.pop(0))
        if opts[-1] in _OPTS_WITH_VALUE and rest:
            opts.append(rest.pop(0))
    if not rest or rest[0] == "-c":
        raise ValueError("the runner needs `python3 script.py ...` or `python3 -m module ...`")
    return Command(env=env, argv=[python, *opts, str(runner), str(output), *rest]).text()


def parse(path: Path, tree: str | None) -> tuple[ProfileBuilder, dict[str, Any]]:
    """The latest census's owner chains as stacks, plus its readings and the samples."""
    data = json.loads(path.read_text())
    builder = ProfileBuilder()
    for stack in data.get("stacks", []):
        frames = [Frame(name=f["name"], file=f.get("file"), line=f.get("line"))
                  for f in stack["frames"]]
        builder.add(relativize(frames, tree), float(stack["value"]), stack.get("count"))
    samples = data.get("samples", [])
    growth = [Point(t_s=t, rss_mb=rss) for t, rss, _ in samples[:: max(1, len(samples) // 200)]]
    peak = None
    if "t_s" in data:
        peak = Peak(heap_bytes=data.get("total_bytes"), t_s=data["t_s"],
                    span_s=samples[-1][0] if samples else None, rss_mb=data.get("rss_mb"),
                    start_rss_mb=samples[0][1] if samples else None,
                    how=f"the census at {data.get('blocks', 0)} allocated blocks, "
                    f"{data.get('rss_mb', 0):.1f} MiB RSS (the run's highs: "
                    f"{data.get('max_blocks', 0)} blocks, {data.get('max_rss_mb', 0):.1f} MiB)")
    return builder, {**{k: v for k, v in data.items() if k not in ("stacks", "samples")},
                     "peak": peak, "growth": growth}


def types_line(info: dict[str, Any]) -> str:
    """The largest live objects by type, for the notes."""
    from autoopt.tools.profiling.model import human_bytes

    parts = [f"{name} {count} = {human_bytes(size)}" for name, count, size in
             info.get("types", [])[:6]]
    return ("largest live objects by type (shallow sizes): " + ", ".join(parts)) if parts \
        else "the census found no objects"
