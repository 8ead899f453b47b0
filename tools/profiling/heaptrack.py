"""heaptrack: native heap profile at the peak, by stack.

The program runs with heaptrack's preload library directly (`LD_PRELOAD=...
DUMP_HEAPTRACK_OUTPUT=raw prog`), not through the `heaptrack` shell script, so the pid is
the real program and no wrapper shell sits between. heaptrack_interpret then symbolizes
the raw trace (it needs the binaries, so it runs before the build tree goes away), and
this module replays the interpreted allocations to find the peak and the bytes each stack
held at that moment (heaptrack_print's "peak" cost).
"""

from __future__ import annotations

import gzip
import shlex
from array import array
from pathlib import Path

from autoopt.tools.command import Command, parse_command
from autoopt.tools.profiling.detect import HEAPTRACK_INTERPRET, HEAPTRACK_PRELOAD
from autoopt.tools.profiling.model import (
    Frame,
    Peak,
    Point,
    ProfileBuilder,
    from_main,
    relativize,
    unresolved,
)

MEASURE = "bytes live at the heap peak"
OVERHEAD_NOTE = "heaptrack (every malloc/free unwound): high overhead on malloc-heavy code"


def wrap(command: str, raw: Path) -> str:
    """The command with heaptrack's library preloaded (before any it preloads itself)."""
    cmd = parse_command(command)
    preload = ":".join(p for p in (HEAPTRACK_PRELOAD, cmd.env.get("LD_PRELOAD")) if p)
    env = {**cmd.env, "LD_PRELOAD": preload, "DUMP_HEAPTRACK_OUTPUT": str(raw)}
    return Command(env=env, argv=cmd.argv).text()


def wrap_variable(command: str, raw: Path) -> str:
    """A batch workload script's command with AUTOOPT_PROFILE_WRAP set: the words the script
    puts, unquoted, before the one program it measures (`env LD_PRELOAD=...
    DUMP_HEAPTRACK_OUTPUT=raw`; the state folder's path must hold no blanks). heaptrack
    traces only the process it is preloaded into (it unsets its variables at start), so
    the script and its other children stay untraced."""
    cmd = parse_command(command)
    words = f"env LD_PRELOAD={HEAPTRACK_PRELOAD} DUMP_HEAPTRACK_OUTPUT={raw}"
    return Command(env={**cmd.env, "AUTOOPT_PROFILE_WRAP": words}, argv=cmd.argv).text()


def interpret_shell(raw: Path, out: Path) -> str:
    return f"{HEAPTRACK_INTERPRET} < {shlex.quote(str(raw))} | gzip > {shlex.quote(str(out))}"


class _Data:
    def __init__(self) -> None:
        self.strings: list[str] = [""]
        self.ips: list[list[int]] = [[]]  # [module, func, file, line, func, file, line, ...]
        self.ip_addr: list[str] = [""]
        self.traces: list[tuple[int, int]] = [(0, 0)]  # (ip index, parent trace index)
        self.alloc_size: list[int] = []
        self.alloc_trace: list[int] = []
        self.events = array("q")  # +(info+1) for an allocation, -(info+1) for a free
        self.ticks: list[tuple[int, int, int]] = []  # (events so far, ms, RSS pages)


def _read(path: Path) -> _Data:
    data = _Data()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            tag = line[:1]
            if tag == "+":
                data.events.append(int(line[2:], 16) + 1)
            elif tag == "-":
                data.events.append(-(int(line[2:], 16) + 1))
            elif tag == "a":
                size, trace = line[2:].split()
                data.alloc_size.append(int(size, 16))
                data.alloc_trace.append(int(trace, 16))
            elif tag == "t":
                ip, parent = line[2:].split()
                data.traces.append((int(ip, 16), int(parent, 16)))
            elif tag == "i":
                parts = line[2:].split()
                data.ip_addr.append(parts[0])
                data.ips.append([int(p, 16) for p in parts[1:]])
            elif tag == "c":
                data.ticks.append((len(data.events), int(line[2:], 16), 0))
            elif tag == "R" and data.ticks:
                n, ms, _ = data.ticks[-1]
                data.ticks[-1] = (n, ms, int(line[2:], 16))
            elif tag == "s":
                rest = line[2:].rstrip("\n")
                _, _, text = rest.partition(" ")
                data.strings.append(text)
    return data


def _frames_of_ip(data: _Data, ip: int) -> list[Frame]:
    """Innermost first: the function at the address, then the functions it is inlined in."""
    fields = data.ips[ip]
    module = data.strings[fields[0]] if fields else None
    if len(fields) < 2 or not data.strings[fields[1]]:
        return [Frame(name=f"0x{data.ip_addr[ip]}", module=module, symbolized=False)]
    frames = []
    func = fields[1]
    rest = fields[2:]
    file, line = (rest[0], rest[1]) if len(rest) >= 2 else (0, 0)
    frames.append(Frame(name=data.strings[func], file=data.strings[file] or None,
                        line=line or None, module=module))
    inlined = rest[2:]
    for k in range(0, len(inlined) - 2, 3):
        f, fi, li = inlined[k:k + 3]
        frames.append(Frame(name=data.strings[f], file=data.strings[fi] or None,
                            line=li or None, module=module))
    for fr in frames:
        fr.symbolized = not unresolved(fr.name)
    return frames


def parse(path: Path, tree: str | None) -> tuple[ProfileBuilder, dict[str, object]]:
    """Stacks with the bytes they held when the heap peaked (frames above main dropped)."""
    data = _read(path)
    current = peak = 0
    peak_at = -1
    sizes = data.alloc_size
    heap_at: dict[int, int] = {}  # events so far -> heap then
    marks = {n for n, _, _ in data.ticks}
    for i, ev in enumerate(data.events):
        if i in marks:
            heap_at[i] = current
        if ev > 0:
            current += sizes[ev - 1]
            if current > peak:
                peak, peak_at = current, i
        else:
            current -= sizes[-ev - 1]
    live = [0] * len(sizes)
    for ev in data.events[: peak_at + 1]:
        if ev > 0:
            live[ev - 1] += 1
        else:
            live[-ev - 1] -= 1
    by_trace: dict[int, list[int]] = {}
    for info, n in enumerate(live):
        if n > 0:
            entry = by_trace.setdefault(data.alloc_trace[info], [0, 0])
            entry[0] += n * sizes[info]
            entry[1] += n
    builder = ProfileBuilder()
    for trace, (value, count) in by_trace.items():
        leaf_first: list[Frame] = []
        t = trace
        while t:
            ip, t = data.traces[t]
            leaf_first.extend(_frames_of_ip(data, ip))
        frames = from_main(list(reversed(leaf_first)))
        builder.add(relativize(frames, tree), float(value), count)
    return builder, {"peak_bytes": peak, "allocations": sum(1 for e in data.events if e > 0),
                     **_timeline(data, heap_at, peak, peak_at, current)}


def _timeline(data: _Data, heap_at: dict[int, int], peak: int, peak_at: int, end: int
              ) -> dict[str, object]:
    """heaptrack's ticks (`c` ms, `R` RSS pages, every ~10 ms): the peak's time, growth."""
    import os

    if not data.ticks:
        return {"peak": Peak(heap_bytes=peak, how="heaptrack wrote no timestamps"), "growth": []}
    page = os.sysconf("SC_PAGE_SIZE") / 2**20
    before = [t for t in data.ticks if t[0] <= peak_at] or data.ticks[:1]
    _, ms, rss = before[-1]
    step = max(1, len(data.ticks) // 200)
    growth = [Point(t_s=t / 1000, rss_mb=round(r * page, 2) if r else None,
                    heap_mb=round(heap_at.get(k, end) / 2**20, 2))
              for k, t, r in data.ticks[::step]]
    first = data.ticks[0][2]
    return {"peak": Peak(heap_bytes=peak, t_s=ms / 1000, span_s=data.ticks[-1][1] / 1000,
                         rss_mb=rss * page if rss else None,
                         start_rss_mb=first * page if first else None,
                         how="heaptrack's timestamp before the peak allocation (every ~10 ms)"),
            "growth": growth}
