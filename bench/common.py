"""Shared helpers of the benchmark runner: progress, workspaces, the machine, statistics."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYSERVER = "pyserver"


def log(message: str) -> None:
    """Progress to stderr (stdout stays clean)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> tuple[float, float, float]:
    return os.getloadavg()


def fmt_load(avg: Sequence[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg)


@contextlib.contextmanager
def temp_workspace(prefix: str = "autoopt-bench-") -> Iterator[Path]:
    """A throwaway workspace: a copy of targets/ and program.md, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        copy_workspace(root)
        yield root


def copy_workspace(root: Path) -> None:
    shutil.copytree(
        ROOT / "targets", root / "targets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.copy2(ROOT / "program.md", root / "program.md")


def read_run(state_dir: Path, run_id: str) -> dict[str, Any]:
    """The persisted run: <state_dir>/runs/<run_id>/run.json."""
    return json.loads((state_dir / "runs" / run_id / "run.json").read_text())


# -- the machine ---------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """CPU model, cores, memory, kernel, Python, as strings for the report."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": model,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
    }


# -- statistics ----------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    if not xs:
        return math.nan
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cv(xs: Sequence[float]) -> float:
    """Coefficient of variation (sample SD / mean)."""
    if len(xs) < 2:
        return math.nan
    return statistics.stdev(xs) / statistics.fmean(xs)


def geomean(xs: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else math.nan


def f(x: float | None, digits: int = 2) -> str:
    """A number for a table; '-' when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- a bare pyserver, started by hand --------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def timed_workload(script: Path, endpoint: str) -> tuple[float, dict[str, float]]:
    """Wall time of `bash workload.sh ENDPOINT` and its key=value output."""
    t0 = time.perf_counter()
    done = subprocess.run(
        ["bash", str(script), endpoint], capture_output=True, text=True, timeout=600, check=False
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} exited {done.returncode}: {done.stderr[-500:]}")
    metrics: dict[str, float] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            with contextlib.suppress(ValueError):
                metrics[key.strip()] = float(value)
    return elapsed, metrics


def bare_local_workload(
    ws_root: Path, python_opts: Sequence[str] = ()
) -> tuple[float, dict[str, float]]:
    """Start targets/pyserver/src/server.py by hand (`python3 [python_opts] server.py`), time
    workload.sh against it, stop it."""
    target = ws_root / "targets" / PYSERVER
    port = free_port()
    server = subprocess.Popen(
        ["python3", *python_opts, "server.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=target / "src",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_healthy(endpoint + "/health")
        return timed_workload(target / "workload.sh", endpoint)
    finally:
        stop_group(server)


def stop_group(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started with start_new_session, SIGKILL after 10 s; reaped."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


async def bare_run(engine: Any, target: str) -> tuple[Any, float]:
    """The engine's build -> deploy -> run_workload -> teardown -> discard, without a
    profiler: (the workload result, the whole call in seconds)."""
    t0 = time.monotonic()
    build = await engine.build(target)
    try:
        dep = await engine.deploy(build.id)
        try:
            result = await engine.run_workload(dep.id)
        finally:
            await engine.teardown(dep.id)
    finally:
        await engine.discard_build(build.id)
    return result, time.monotonic() - t0


def rotated(items: Sequence[str], r: int) -> list[str]:
    """`items` rotated by the round number, so each takes every position in turn."""
    k = r % len(items)
    return [*items[k:], *items[:k]]


def round_ratios(measurements: Sequence[Any], tool: str, rounds: int, attr: str) -> list[float]:
    """Per round, `attr` of `tool`'s measurement over bare's in the same round (failed
    measurements, with an `error`, left out)."""
    by = {(m.tool, m.round): m for m in measurements if m.error is None}
    return [
        getattr(by[(tool, r)], attr) / getattr(by[("bare", r)], attr)
        for r in range(rounds)
        if (tool, r) in by and ("bare", r) in by
    ]
