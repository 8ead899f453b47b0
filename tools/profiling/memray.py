"""memray: run a Python program under `python -m memray run`, read its high-water mark.

The wrapped command is still one process: memray runs the script in-process (runpy), so
the pid the backend records is the real Python process. The stacks are memray's
high-water-mark records: the allocations live when the heap was at its largest, whose
sizes sum exactly to that peak.
"""

from __future__ import annotations

from pathlib import Path

from autoopt.tools.command import Command
from autoopt.tools.profiling.detect import split_python
from autoopt.tools.profiling.model import Frame, ProfileBuilder, relativize

MEASURE = "bytes live at the heap high-water mark"
OVERHEAD_NOTE = ("memray (default mode: Python stacks, system allocator calls and pymalloc "
                 "arenas): moderate overhead on allocation-heavy code")
_OPTS_WITH_VALUE = {"-X", "-W", "-Q"}
_SKIP_FILES = ("<frozen runpy>", "runpy.py")


def wrap(command: str, output: Path, env: dict[str, str]) -> str:
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
    argv = [python, *opts, "-m", "memray", "run", "-q", "-f", "-o", str(output), *rest]
    return Command(env=variables, argv=argv).text()


def _skip(frame: tuple[str, str, int]) -> bool:
    _, file, _ = frame
    return file.endswith(_SKIP_FILES) or "/memray/" in file


def parse(path: Path, tree: str | None) -> tuple[ProfileBuilder, dict[str, object]]:
    """The high-water-mark records as stacks (bytes), plus memray's metadata."""
    from memray import FileReader

    reader = FileReader(str(path))
    builder = ProfileBuilder()
    try:
        meta = reader.metadata
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            trace = list(reversed(record.stack_trace()))  # root first
            while trace and _skip(trace[0]):
                trace.pop(0)
            frames = [Frame(name=fn, file=file, line=line or None) for fn, file, line in trace]
            if not frames:
                frames = [Frame(name="[no Python frame]")]
            builder.add(relativize(frames, tree), float(record.size), record.n_allocations)
    finally:
        reader.close()
    info = {"peak_memory": meta.peak_memory, "total_allocations": meta.total_allocations,
            "pid": meta.pid, "python_allocator": meta.python_allocator}
    return builder, info
