"""Bounded logs: the server's state does not grow with every run.

Each target keeps its last KEEP_RUNS runs (`.autoopt/runs/<id>/`: run.json, outputs, test
logs, plot) and, per kind of job, its last KEEP_RUNS finished job records. Older ones are
removed when a new run is saved (prune_runs) or a job starts (prune_jobs); an active run
is never removed. What record_experiment wrote lives in results/, which is never pruned.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

KEEP_RUNS = int(os.environ.get("AUTOOPT_KEEP_RUNS", "50"))


def prune_runs(state_dir: Path, target: str, keep: int | None = None) -> list[str]:
    """Remove `target`'s finished runs beyond its last `keep` runs; their ids."""
    from autoopt.tools.abrun import ACTIVE, runs_dir

    keep = KEEP_RUNS if keep is None else keep
    runs = []
    folder = runs_dir(state_dir)
    for path in sorted(folder.glob("run-*/run.json")) if folder.is_dir() else []:  # by time
        head = _head(path)
        if head.get("target") == target:
            runs.append((path.parent, head.get("status")))
    removed = []
    for run, status in runs[: max(0, len(runs) - keep)]:
        if status not in ACTIVE:
            shutil.rmtree(run, ignore_errors=True)
            removed.append(run.name)
    return removed


def prune_jobs(jobs_dir: Path, target: str, keep: int | None = None) -> list[str]:
    """Remove `target`'s finished job records beyond the last `keep` of each kind; their ids."""
    keep = KEEP_RUNS if keep is None else keep
    by_kind: dict[str, list[tuple[float, Path]]] = defaultdict(list)
    for path in jobs_dir.glob("*.json") if jobs_dir.is_dir() else []:
        head = _head(path)
        if head.get("target") == target and head.get("status") not in (None, "running"):
            with contextlib.suppress(OSError):
                by_kind[head.get("kind", "")].append((path.stat().st_mtime, path))
    removed = []
    for records in by_kind.values():
        records.sort()
        for _, path in records[: max(0, len(records) - keep)]:
            path.unlink(missing_ok=True)
            removed.append(path.stem)
    return sorted(removed)


_FIELD = re.compile(rb'"(target|status|kind)":\s*"([^"]*)"')


def _head(path: Path) -> dict[str, str]:
    """A run's or job's target, status and kind, from its first bytes (pydantic writes
    them first): no journal or answer of megabytes is parsed to tell whose it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return {}
    out: dict[str, str] = {}
    for key, value in _FIELD.findall(head):
        out.setdefault(key.decode(), value.decode(errors="replace"))
    return out
