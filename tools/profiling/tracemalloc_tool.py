"""tracemalloc, only where memray cannot run: a runner that snapshots near the peak.

tracemalloc has no high-water-mark snapshot. The runner (written next to the profile and
started in place of `python3`, so the pid stays the real process) polls the traced size
every POLL_S, keeps those samples (the growth view), and dumps a snapshot each time the
size exceeds the last dumped one by STEP while dumps took under BUDGET of the run; the
stored stacks are the last such snapshot: bytes live NEAR the peak, not at it. Each
allocation records a traceback (FRAMES deep): on allocation-heavy code it runs 4-10x
slower than memray (pyserver: 29 s of CPU against memray's 7.6 s; a trial: 545 s against
47 s), so memray is the default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autoopt.tools.command import Command
from autoopt.tools.profiling import names
from autoopt.tools.profiling.detect import split_python
from autoopt.tools.profiling.model import Frame, Peak, Point, ProfileBuilder, relativize

MEASURE = "bytes live near the peak (tracemalloc snapshot at the largest polled size)"
OVERHEAD_NOTE = ("tracemalloc (16 frames per allocation): high overhead, 4x memray's CPU on "
                 "pyserver and 10x in a trial (545 s against 47 s); its stacks, not its timings")
MODE = "tracemalloc: each Python allocation at its own site (16 frames)"

RUNNER = '''\
"""autoopt tracemalloc runner: python3 runner.py OUT script.py [args]."""
import json, os, runpy, sys, threading, time, tracemalloc

POLL_S, STEP, BUDGET, FRAMES = 0.05, 1.1, 0.25, 16
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
tracemalloc.start(FRAMES)
t0 = time.time()
state = {"dumped": 0, "spent": 0.0, "dumps": 0, "peak": 0, "at": 0.0, "written": 0.0}
samples = []


def write():
    with open(out + ".json", "w") as f:
        json.dump(dict(state, samples=samples), f)
    with open(out + ".status", "w") as f:
        f.write("traced %.0f MiB (max %.0f), %d snapshot(s), %.1f s in dumps\\n" % (
            samples[-1][1] if samples else 0, state["peak"] / 2**20, state["dumps"],
            state["spent"]))
    state["written"] = time.time()


def poll():
    while True:
        time.sleep(POLL_S)
        current, peak = tracemalloc.get_traced_memory()
        now = time.time()
        samples.append([round(now - t0, 3), round(current / 2**20, 2)])
        state["peak"] = peak
        if current > state["dumped"] * STEP and state["spent"] < BUDGET * max(now - t0, 1.0):
            tracemalloc.take_snapshot().dump(out + ".tmp")
            os.replace(out + ".tmp", out)
            state.update(dumped=current, at=round(now - t0, 3), dumps=state["dumps"] + 1,
                         spent=state["spent"] + time.time() - now)
            write()
        elif now - state["written"] > 2.0:
            write()


threading.Thread(target=poll, daemon=True, name="autoopt-tracemalloc").start()
try:
    runpy.run_path(script, run_name="__main__")
finally:
    write()
'''


def wrap(command: str, output: Path, runner: Path) -> str:
    """`python3 script args` -> `python3 runner.py OUT script args` (same interpreter)."""
    runner.write_text(RUNNER)
    env, interpreter, rest = split_python(command)
    if not rest or rest[0].startswith("-"):
        raise ValueError("the tracemalloc runner needs `python3 script.py ...`")
    return Command(env=env, argv=[interpreter, str(runner), str(output), *rest]).text()


def readings(path: Path) -> dict[str, Any]:
    """The runner's samples (traced MiB over time) and when its last snapshot was taken."""
    try:
        data = json.loads(path.with_name(path.name + ".json").read_text())
    except (OSError, ValueError):
        return {"peak": None, "growth": [], "note": "the runner left no samples"}
    samples = data.get("samples", [])
    growth = [Point(t_s=t, heap_mb=mb) for t, mb in samples[:: max(1, len(samples) // 200)]]
    peak = Peak(heap_bytes=data.get("peak"), t_s=data.get("at"),
                span_s=samples[-1][0] if samples else None,
                how=f"when the last of {data.get('dumps', 0)} snapshots was taken, at "
                f"{data.get('dumped', 0) / 2**20:.1f} MiB traced; the traced peak: "
                f"{data.get('peak', 0) / 2**20:.1f} MiB")
    note = (f"tracemalloc: {data.get('dumps', 0)} snapshot(s) dumped, "
            f"{data.get('spent', 0):.1f} s of the run spent dumping")
    return {"peak": peak, "growth": growth, "note": note}


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
        frames = [Frame(name=_function(_in(tree, f.filename), f.lineno), file=f.filename,
                        line=f.lineno)
                  for f in stat.traceback
                  if not f.filename.endswith(("runpy.py", "runner.py", "<frozen runpy>"))]
        builder.add(relativize(frames, tree), float(stat.size), stat.count)
    return builder


def _in(tree: str | None, filename: str) -> str:
    """A relative file name is the program's own, relative to its working directory."""
    return filename if filename.startswith(("/", "<")) or not tree else f"{tree}/{filename}"


def _function(filename: str, lineno: int) -> str:
    """tracemalloc records file:line only; name the enclosing function from the source."""
    return names.enclosing(filename, lineno) or "<module>"
