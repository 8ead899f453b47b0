"""memray: run a Python program under `python -m memray run`, read its high-water mark.

The wrapped command is still one process: memray runs the script in-process (runpy), so
the pid the backend records is the real Python process. The stacks are memray's
high-water-mark records: the allocations live when the heap was at its largest, whose
sizes sum exactly to that peak.

Modes (the profile says which): `objects` (the default) traces the Python allocators, so
each object is charged to the stack that made it; `arenas` is memray's own default, where
pymalloc's small objects show up only as the 1 MiB arenas it maps, charged to whichever
stack opened one (cheaper, coarse: ±1 MiB per stack); `native` adds C/C++ frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from autoopt.tools.command import Command
from autoopt.tools.profiling.detect import split_python
from autoopt.tools.profiling.model import Frame, Peak, Point, ProfileBuilder, relativize

Mode = Literal["objects", "arenas", "native"]
MEASURE = "bytes live at the heap high-water mark"
OVERHEAD_NOTE = "memray: moderate overhead on allocation-heavy code"
FLAGS: dict[str, list[str]] = {
    "objects": ["--trace-python-allocators"],
    "arenas": [],
    "native": ["--native", "--trace-python-allocators"],
}
MODES = {
    "objects": "python allocators traced: each object at its own allocation site",
    "arenas": "pymalloc arenas: small objects counted as the 1 MiB arenas pymalloc maps, "
    "each charged to the stack that opened it (±1 MiB per stack)",
    "native": "python allocators traced, with native (C/C++) frames",
}
ARENA_BYTES = 1 << 20  # pymalloc's arena since Python 3.10 (256 KiB before)
GROWTH_POINTS = 200
_OPTS_WITH_VALUE = {"-X", "-W", "-Q"}
_SKIP_FILES = ("<frozen runpy>", "runpy.py")


def wrap(command: str, output: Path, env: dict[str, str], mode: Mode = "objects") -> str:
    """`python3 [opts] script args` -> `python3 [opts] -m memray run ... script args`, in the
    command's own interpreter, with `env` (memray's PYTHONPATH, when it lives beside it)."""
    variables, python, rest = split_python(command)
    opts: list[str] = []
    while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
        opts.append(rest.pop(0))
        if opts[-1] in _OPTS_WITH_VALUE and rest:
            opts.append(rest.pop(0))
    variables = dict(variables)
    if "PYTHONPATH" in env:
        paths = (env["PYTHONPATH"], variables.get("PYTHONPATH"))
        variables["PYTHONPATH"] = ":".join(p for p in paths if p)
    argv = [python, *opts, "-m", "memray", "run", *FLAGS[mode], "-q", "-f", "-o", str(output),
            *rest]
    return Command(env=variables, argv=argv).text()


def _skip(frame: tuple[str, str, int]) -> bool:
    _, file, _ = frame
    return file.endswith(_SKIP_FILES) or "/memray/" in file


def parse(path: Path, tree: str | None) -> tuple[ProfileBuilder, dict[str, Any]]:
    """The high-water-mark records as stacks (bytes), plus memray's metadata."""
    from memray import FileReader

    reader = FileReader(str(path))
    builder = ProfileBuilder()
    try:
        meta = reader.metadata
        unaligned = 0
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            try:
                trace = list(reversed(record.hybrid_stack_trace() if meta.has_native_traces
                                      else record.stack_trace()))  # root first
            except AssertionError:  # memray could not line this native stack up with the
                unaligned += 1  # Python one (its hybrid_stack_trace asserts): Python frames
                trace = list(reversed(record.stack_trace()))
            while trace and _skip(trace[0]):
                trace.pop(0)
            frames = [Frame(name=fn, file=file, line=line or None) for fn, file, line in trace]
            if not frames:
                frames = [Frame(name="[no Python frame]")]
            builder.add(relativize(frames, tree), float(record.size), record.n_allocations)
        snapshots = list(reader.get_memory_snapshots())
    finally:
        reader.close()
    start_ms = meta.start_time.timestamp() * 1000
    info: dict[str, Any] = {
        "peak_memory": meta.peak_memory, "total_allocations": meta.total_allocations,
        "pid": meta.pid, "python_allocator": meta.python_allocator,
        "traced_python_allocators": meta.trace_python_allocators,
        "python_frames_only": unaligned,  # records whose native frames memray could not place
        "peak": _peak(snapshots, meta.peak_memory, start_ms,
                      (meta.end_time.timestamp() * 1000 - start_ms) / 1000),
        "growth": _growth(snapshots, start_ms),
    }
    return builder, info


def _peak(snapshots: list[Any], peak: int, start_ms: float, span_s: float) -> Peak:
    """When the heap peaked: memray's sample (every 10 ms) with the largest heap."""
    if not snapshots:
        return Peak(heap_bytes=peak, span_s=span_s, how="memray kept no memory samples")
    top = max(snapshots, key=lambda s: s.heap)
    how = "the largest of memray's heap samples, every 10 ms"
    if top.heap < 0.9 * peak:
        how += f" ({top.heap / 2**20:.1f} MiB: the peak itself fell between samples)"
    return Peak(heap_bytes=peak, t_s=(top.time - start_ms) / 1000, span_s=span_s,
                rss_mb=top.rss / 2**20, start_rss_mb=snapshots[0].rss / 2**20, how=how)


def _growth(snapshots: list[Any], start_ms: float) -> list[Point]:
    step = max(1, len(snapshots) // GROWTH_POINTS)
    return [Point(t_s=round((s.time - start_ms) / 1000, 3), rss_mb=round(s.rss / 2**20, 2),
                  heap_mb=round(s.heap / 2**20, 2)) for s in snapshots[::step]]
