"""py-spy: sample the real Python process (attach by pid, or launch a batch program)."""

from __future__ import annotations

import re
from pathlib import Path

from autoopt.tools.command import Command, parse_command
from autoopt.tools.profiling.detect import pyspy_path
from autoopt.tools.profiling.model import Frame, ProfileBuilder, relativize

MEASURE = "CPU samples (wall-clock sampling of non-idle threads)"
OVERHEAD_NOTE = "py-spy (sampling from outside the process): low overhead"
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _options(output: Path, rate: int) -> list[str]:
    return ["record", "-o", str(output), "-f", "raw", "-r", str(rate), "--full-filenames"]


def attach_argv(pid: int, output: Path, rate: int) -> list[str]:
    """Sample a running process until SIGINT (or its exit)."""
    return [pyspy_path(), *_options(output, rate), "--pid", str(pid)]


def wrap(command: str, output: Path, rate: int) -> str:
    """Launch a batch command under py-spy (its Python descendants are sampled)."""
    cmd = parse_command(command)
    argv = [pyspy_path(), *_options(output, rate), "--subprocesses", "--", *cmd.argv]
    return Command(env=cmd.env, argv=argv).text()


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text)
    if not m:
        return Frame(name=text)
    return Frame(name=m["name"], file=m["file"] or None,
                 line=int(m["line"]) if m["line"] else None)


def parse(path: Path, tree: str | None) -> ProfileBuilder:
    """py-spy's raw (folded) output: `frame;frame;... count`, root first."""
    builder = ProfileBuilder()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [parse_frame(f) for f in stack.split(";") if f.strip()]
        if not frames:
            frames = [Frame(name="[no Python frame]", symbolized=False)]
        builder.add(relativize(frames, tree), float(count), int(count))
    return builder
