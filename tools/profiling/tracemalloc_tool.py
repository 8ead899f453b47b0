"""tracemalloc, only where memray cannot run: a runner that snapshots near the peak.

tracemalloc has no high-water-mark snapshot. The runner (written next to the profile and
started in place of `python3`, so the pid stays the real process) polls the traced size
every POLL_S and dumps a snapshot each time it exceeds the last dumped one by 2%; the
stored stacks are the last such snapshot: bytes live NEAR the peak, not at it.
"""

from __future__ import annotations

from pathlib import Path

from autoopt.tools.command import Command
from autoopt.tools.profiling.detect import split_python
from autoopt.tools.profiling.model import Frame, ProfileBuilder, relativize

MEASURE = "bytes live near the peak (tracemalloc snapshot at the largest polled size)"
OVERHEAD_NOTE = "tracemalloc (25 frames): high overhead; use its stacks, not its timings"

RUNNER = '''\
"""autoopt tracemalloc runner: python3 runner.py OUT script.py [args]."""
import os, runpy, sys, threading, time, tracemalloc

POLL_S = 0.02
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
tracemalloc.start(25)
state = {"size": 0}


def poll():
    while True:
        time.sleep(POLL_S)
        current, _ = tracemalloc.get_traced_memory()
        if current > state["size"] * 1.02:
            snap = tracemalloc.take_snapshot()
            snap.dump(out + ".tmp")
            os.replace(out + ".tmp", out)
            state["size"] = current


threading.Thread(target=poll, daemon=True, name="autoopt-tracemalloc").start()
runpy.run_path(script, run_name="__main__")
'''


def wrap(command: str, output: Path, runner: Path) -> str:
    """`python3 script args` -> `python3 runner.py OUT script args` (same interpreter)."""
    runner.write_text(RUNNER)
    env, interpreter, rest = split_python(command)
    if not rest or rest[0].startswith("-"):
        raise ValueError("the tracemalloc runner needs `python3 script.py ...`")
    return Command(env=env, argv=[interpreter, str(runner), str(output), *rest]).text()


def parse(path: Path, tree: str | None) -> ProfileBuilder:
    import tracemalloc

    snapshot = tracemalloc.Snapshot.load(str(path))
    snapshot = snapshot.filter_traces([
        tracemalloc.Filter(False, "<frozen runpy>"),
        tracemalloc.Filter(False, "*tracemalloc.py"),
        tracemalloc.Filter(False, "*runner.py"),
    ])
    builder = ProfileBuilder()
    for stat in snapshot.statistics("traceback"):
        frames = [Frame(name=_function(f.filename, f.lineno), file=f.filename, line=f.lineno)
                  for f in stat.traceback
                  if not f.filename.endswith(("runpy.py", "runner.py", "<frozen runpy>"))]
        builder.add(relativize(frames, tree), float(stat.size), stat.count)
    return builder


_NAMES: dict[str, dict[int, str]] = {}


def _function(filename: str, lineno: int) -> str:
    """tracemalloc records file:line only; name the enclosing function from the source."""
    if filename not in _NAMES:
        _NAMES[filename] = _function_map(filename)
    table = _NAMES[filename]
    return table.get(lineno, "<module>") if table else "?"


def _function_map(filename: str) -> dict[int, str]:
    import ast

    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return {}
    table: dict[int, str] = {}
    nodes = [n for n in ast.walk(tree)
             if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)]
    for node in sorted(nodes, key=lambda n: n.lineno):  # inner functions overwrite outer
        name = getattr(node, "name", "<lambda>")
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
            table[line] = name
    return table
