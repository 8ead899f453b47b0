"""jemalloc heap profiling: the target's own allocator samples its allocations and dumps heaps.

The program starts with jemalloc's configuration variable (MALLOC_CONF, or the prefixed one
its jemalloc reads) set to `prof:true`, a sample every 2^LG_SAMPLE bytes on average, a heap
dump every 2^LG_INTERVAL bytes allocated, and a final dump at exit. The peak is the
heaviest dump: between two dumps about 2^LG_INTERVAL bytes are allocated, so no moment's
live heap exceeds the dump before it by much more, and an allocation of at least that size
triggers a dump while it is live. (prof_gdump is not used: it fires when the mapped total
grows, before the allocation that grew it is recorded, and on a churning heap thousands of
times.) Sampled sizes are unbiased as jeprof does for heap_v2 (Poisson sampling: scale
1 / (1 - exp(-mean size / period))). Addresses are symbolized with addr2line against the
binaries the dump's MAPPED_LIBRARIES lists. Dumps lighter than the heaviest are deleted as
they are superseded, so a long workload does not fill the disk.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from autoopt.tools.command import Command, parse_command
from autoopt.tools.errors import ProfilerUnavailable
from autoopt.tools.profiling.model import (
    Frame,
    ProfileBuilder,
    from_main,
    relativize,
    unresolved,
)

MEASURE = "bytes live at the heaviest jemalloc heap dump (sampled, unbiased)"
OVERHEAD_NOTE = (
    "jemalloc's own sampling (a backtrace per 128 KiB allocated on average) and a heap dump "
    "per 4 MiB allocated: cost grows with the allocation rate, not the number of calls"
)
LG_SAMPLE = 17
LG_INTERVAL = 22
SUFFIX = "jeprof"

_DUMP = re.compile(r"\.(\d+)\.(\d+)\.([ifum])(\d*)\.heap$")
_KINDS = {"i": "interval", "u": "gdump", "f": "final", "m": "manual"}
_COUNTS = re.compile(r"^\s*t\*: (\d+): (\d+) \[")
_ALLOC_ENTRY = re.compile(
    r"malloc|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|"
    r"mallocx|rallocx|xallocx|nallocx|(operator new|je_|_rjem_|prof_|imalloc|ialloc|iralloc|"
    r"ipalloc|arena_|tcache_|te_|emap_|extent_|large_|malloc_default|do_rallocx).*"
)


@dataclass
class Dump:
    """One heap dump: its stacks (leaf first, addresses), unbiased bytes, and the maps."""

    path: Path
    pid: int
    seq: int
    kind: str
    period: int = 0
    stacks: list[tuple[tuple[int, ...], float, float]] = field(default_factory=list)
    maps: list[tuple[int, int, int, str]] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(b for _, _, b in self.stacks)


def name_of(path: Path, prefix: str) -> tuple[int, int, str] | None:
    """(pid, sequence, kind) of a dump file written under `prefix`, else None."""
    if not path.name.startswith(prefix):
        return None
    m = _DUMP.search(path.name[len(prefix) :])
    return (int(m.group(1)), int(m.group(2)), _KINDS[m.group(3)]) if m else None


def unbias(objects: int, size: int, period: int) -> tuple[float, float]:
    """jeprof's heap_v2 adjustment of one stack's sampled (objects, bytes)."""
    if objects <= 0 or period <= 0:
        return float(objects), float(size)
    ratio = size / objects / period
    scale = 1.0 / (1.0 - math.exp(-ratio)) if ratio > 0 else 1.0
    return objects * scale, size * scale


def read_dump(path: Path, pid: int, seq: int, kind: str) -> Dump:
    """Parse a heap_v2 dump (raises ValueError on another format or a cut-off file)."""
    text = path.read_text(errors="replace")
    head, sep, maps = text.partition("\nMAPPED_LIBRARIES:\n")
    if not sep or not head.startswith("heap_v2/"):
        raise ValueError(f"{path.name} is not a complete jemalloc heap_v2 dump")
    dump = Dump(path=path, pid=pid, seq=seq, kind=kind, period=int(head.split("\n", 1)[0][8:]))
    addrs: tuple[int, ...] | None = None
    for line in head.splitlines()[1:]:
        if line.startswith("@"):
            addrs = tuple(int(a, 16) for a in line[1:].split())
            continue
        m = _COUNTS.match(line)
        if m and addrs is not None:
            objs, size = unbias(int(m.group(1)), int(m.group(2)), dump.period)
            if size > 0:
                dump.stacks.append((addrs, objs, size))
            addrs = None
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            dump.maps.append((start, end, int(parts[2], 16), parts[5].strip()))
    return dump


class Dumps:
    """The dumps under one prefix: keeps the heaviest complete one and the newest per pid."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix = folder, prefix
        self.heaviest: Dump | None = None
        self.seen = 0
        self.pids: set[int] = set()  # the processes that dumped
        self._done: set[str] = set()

    def scan(self, final: bool = False) -> None:
        """Read the dumps written since the last scan; delete the superseded ones. A dump
        still being written (the newest of its pid) waits for a later scan, unless final."""
        found: dict[int, list[tuple[int, str, Path]]] = {}
        for path in self.folder.glob(f"{self.prefix}.*.heap"):
            parsed = name_of(path, self.prefix)
            if parsed and path.name not in self._done:
                found.setdefault(parsed[0], []).append((parsed[1], parsed[2], path))
        for pid, dumps in found.items():
            dumps.sort()
            ready = dumps if final else dumps[:-1]
            for seq, kind, path in ready:
                self._done.add(path.name)
                self.seen += 1
                try:
                    dump = read_dump(path, pid, seq, kind)
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)
                    continue
                self.pids.add(pid)
                if self.heaviest is None or dump.total > self.heaviest.total:
                    if self.heaviest is not None:
                        self.heaviest.path.unlink(missing_ok=True)
                    self.heaviest = dump
                else:
                    path.unlink(missing_ok=True)


def conf_value(prefix: str, existing: str | None = None) -> str:
    """The jemalloc configuration string (the target's own settings first, ours last win)."""
    if re.search(r"[,:\s]", prefix):
        raise ProfilerUnavailable(
            f"jemalloc's prof_prefix cannot hold ',', ':' or spaces: {prefix!r}; "
            "move the workspace to a path without them"
        )
    ours = (
        f"prof:true,prof_active:true,lg_prof_sample:{LG_SAMPLE},"
        f"lg_prof_interval:{LG_INTERVAL},prof_final:true,prof_prefix:{prefix}"
    )
    return f"{existing},{ours}" if existing else ours


def wrap(command: str, prefix: Path, variable: str, preload: Path | None = None) -> str:
    """`[LD_PRELOAD=<jemalloc>] VAR=<conf> command`, merging the VAR=... and LD_PRELOAD=...
    the command already sets."""
    cmd = parse_command(command)
    env = dict(cmd.env)
    if preload:
        env["LD_PRELOAD"] = ":".join(p for p in (str(preload), env.get("LD_PRELOAD")) if p)
    env[variable] = conf_value(str(prefix), env.get(variable))
    return Command(env=env, argv=cmd.argv).text()


# The unbiased total of one dump, as `read_dump` computes it: "<bytes> <file>".
_TOTAL_AWK = (
    'NR == 1 { split($1, h, "/"); period = h[2] } '
    "/^MAPPED_LIBRARIES:/ { exit } "
    "/^@/ { stack = 1; next } "
    'stack && $1 == "t*:" { n = $2 + 0; b = $3 + 0; '
    "if (n > 0 && period > 0 && b > 0) b = b / (1 - exp(-b / n / period)); "
    "total += b; stack = 0 } "
    'END { printf "%.0f %s\\n", total, FILENAME }'
)


def heaviest_shell(prefix: Path, program: str, folded: Path) -> str:
    """The shell that repeats the server's choice: the dump with the largest unbiased total,
    read by jeprof into folded stacks."""
    pattern = shlex.quote(str(prefix)) + ".*.heap"
    return (
        f'HEAVIEST="$(for f in {pattern}; do awk \'{_TOTAL_AWK}\' "$f"; done '
        "| sort -n | tail -1 | cut -d' ' -f2-)\"\n"
        f'jeprof --collapsed {program} "$HEAVIEST" > {shlex.quote(str(folded))}'
    )


def _elf_is_exec(path: str) -> bool:
    """ET_EXEC (absolute addresses) rather than ET_DYN (PIE or shared object)."""
    try:
        with open(path, "rb") as f:
            header = f.read(18)
    except OSError:
        return False
    return header[:4] == b"\x7fELF" and int.from_bytes(header[16:18], "little") == 2


def _module_offsets(
    addrs: Iterable[int], maps: list[tuple[int, int, int, str]]
) -> dict[int, tuple[str, int]]:
    """address -> (binary, address to look up in it), for return addresses (minus one)."""
    bases: dict[str, int] = {}
    for start, _end, offset, path in maps:
        if offset == 0 or path not in bases:
            bases[path] = start - offset
    out: dict[int, tuple[str, int]] = {}
    absolute: dict[str, bool] = {}
    for addr in addrs:
        for start, end, _offset, path in maps:
            if start <= addr < end:
                if path not in absolute:
                    absolute[path] = _elf_is_exec(path)
                out[addr] = (path, addr - 1 if absolute[path] else addr - 1 - bases[path])
                break
    return out


def _addr2line(exe: str, module: str, offsets: list[int]) -> dict[int, list[Frame]]:
    """offset -> frames, innermost first (inlined functions, then the containing one)."""
    if not os.path.isfile(module):
        return {}
    text = "".join(f"{o:#x}\n" for o in offsets)
    done = subprocess.run(
        [exe, "-a", "-f", "-i", "-C", "-e", module],
        input=text,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out: dict[int, list[Frame]] = {}
    current: list[Frame] | None = None
    lines = done.stdout.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k]
        if re.fullmatch(r"0x[0-9a-f]+", line):
            current = out.setdefault(int(line, 16), [])
            k += 1
            continue
        if current is None or k + 1 >= len(lines):
            break
        where = lines[k + 1]
        file, _, num = where.rpartition(":")
        name = line if line != "??" else ""
        current.append(
            Frame(
                name=name or "??",
                file=file if file and not file.startswith("??") else None,
                line=int(num) if num.isdigit() and int(num) > 0 else None,
                module=module,
                symbolized=not unresolved(name),
            )
        )
        k += 2
    return out


def _in_allocator(frame: Frame, tree: str | None) -> bool:
    """jemalloc's own frames and the allocation entry points, not the target's functions
    (a jemalloc vendored in the tree, e.g. contrib/jemalloc/, counts as the allocator)."""
    if frame.module and os.path.basename(frame.module).startswith("libjemalloc"):
        return True
    file = frame.file or ""
    prefix = tree.rstrip("/") + "/" if tree else None
    if prefix and file.startswith(prefix):
        return "jemalloc" in file[len(prefix) :]
    return "jemalloc" in file or bool(_ALLOC_ENTRY.fullmatch(frame.name))


def parse(dump: Dump, tree: str | None, addr2line: str) -> tuple[ProfileBuilder, int]:
    """Stacks of the dump with their unbiased bytes: allocator frames and the frames above
    main dropped. Also returns how many addresses fell outside every mapped binary."""
    addrs = {a for stack, _, _ in dump.stacks for a in stack}
    where = _module_offsets(addrs, dump.maps)
    by_module: dict[str, list[int]] = {}
    for module, offset in where.values():
        by_module.setdefault(module, []).append(offset)
    symbols = {m: _addr2line(addr2line, m, sorted(set(o))) for m, o in by_module.items()}
    builder = ProfileBuilder()
    unmapped = len(addrs) - len(where)
    for stack, objects, size in dump.stacks:
        leaf_first: list[Frame] = []
        for addr in stack:
            if addr not in where:
                leaf_first.append(Frame(name=f"{addr:#x}", symbolized=False))
                continue
            module, offset = where[addr]
            leaf_first.extend(
                symbols[module].get(offset)
                or [Frame(name=f"{offset:#x}", module=module, symbolized=False)]
            )
        while len(leaf_first) > 1 and _in_allocator(leaf_first[0], tree):
            leaf_first.pop(0)  # (the allocator's own start-up allocations keep one frame)
        frames = from_main(list(reversed(leaf_first)))
        builder.add(relativize(frames, tree), size, round(objects))
    return builder, unmapped
