"""perf: native CPU samples with call graphs (software clock: these VMs lack HW counters)."""

from __future__ import annotations

import re
from pathlib import Path

from autoopt.tools.command import Command, parse_command
from autoopt.tools.profiling.model import Frame, ProfileBuilder, relativize, unresolved

MEASURE = "CPU samples (perf cpu-clock, frame-pointer call graphs)"
OVERHEAD_NOTE = "perf record (sampling in the kernel): low overhead"
_LINE = re.compile(r"^\s*[0-9a-f]+\s+(?P<sym>.*?)(?:\+0x[0-9a-f]+)?\s+\((?P<dso>.*)\)\s*$")
_SRCLINE = re.compile(r"^\s+(?P<file>[^\s\[][^:]*):(?P<line>\d+)\s*$")


def _options(perf: str, output: Path, rate: int) -> list[str]:
    return [perf, "record", "-e", "cpu-clock", "-F", str(rate), "-g", "-o", str(output)]


def attach_argv(perf: str, pid: int, output: Path, rate: int) -> list[str]:
    return [*_options(perf, output, rate), "-p", str(pid)]


def wrap(perf: str, command: str, output: Path, rate: int) -> str:
    cmd = parse_command(command)
    return Command(env=cmd.env, argv=[*_options(perf, output, rate), "--", *cmd.argv]).text()


def script_argv(perf: str, data: Path, srcline: bool = True) -> list[str]:
    """`perf script`, with each frame's source line (so the scope view can tell the
    target's own frames) unless `srcline` is False (addr2line on a huge binary is slow)."""
    fields = "comm,pid,tid,period,ip,sym,dso" + (",srcline" if srcline else "")
    return [perf, "script", "-i", str(data), "-F", fields]


def parse_script(text: str, tree: str | None) -> ProfileBuilder:
    """`perf script` output: a header line per sample, then its frames leaf first."""
    builder = ProfileBuilder()
    frames: list[Frame] = []
    in_sample = False

    def flush() -> None:
        root_first = list(reversed(frames))
        mains = [i for i, f in enumerate(root_first) if f.name == "main"]
        if mains:
            root_first = root_first[mains[0]:]
        if root_first:
            builder.add(relativize(root_first, tree), 1.0, 1)

    for line in text.splitlines():
        if not line.strip():
            if in_sample:
                flush()
            frames, in_sample = [], False
            continue
        if not line[0].isspace():
            if in_sample:
                flush()
            frames, in_sample = [], True
            continue
        src = _SRCLINE.match(line)
        if src and frames:
            if src["file"] != "??":
                frames[-1].file, frames[-1].line = src["file"], int(src["line"]) or None
            continue
        m = _LINE.match(line)
        if m:
            name, dso = m["sym"].strip(), m["dso"]
            frames.append(Frame(name=name or "[unknown]", module=dso,
                                symbolized=not unresolved(name)))
    if in_sample:
        flush()
    return builder
