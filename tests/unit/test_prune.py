"""The server's logs stay bounded: a target keeps its last K runs and finished job records;
active runs, other targets' runs and running jobs are never removed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from autoopt.tools.prune import prune_jobs, prune_runs


def _run(state: Path, run_id: str, target: str, status: str) -> Path:
    folder = state / "runs" / run_id
    (folder / "outputs").mkdir(parents=True)
    body = {"version": 1, "id": run_id, "target": target, "backend": "local", "status": status,
            "journal": {"steps": ["x" * 5000]}}
    (folder / "run.json").write_text(json.dumps(body, indent=1))
    return folder


def test_only_the_oldest_finished_runs_and_jobs_of_the_target_go(tmp_path: Path) -> None:
    runs = [_run(tmp_path, f"run-20261202-0000{i:02d}-aaaaaa", "t", "done") for i in range(6)]
    active = _run(tmp_path, "run-20261202-000000-000000", "t", "running")  # the oldest
    other = _run(tmp_path, "run-20261202-000000-bbbbbb", "u", "done")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for i, status in enumerate(["done", "failed", "done", "running", "done"]):
        record = {"id": f"j{i}", "kind": "profile_memory", "target": "t", "status": status}
        (jobs / f"j{i}.json").write_text(json.dumps(record))
        os.utime(jobs / f"j{i}.json", (1000 + i, 1000 + i))
    removed = [*prune_runs(tmp_path, "t", keep=3), *prune_jobs(jobs, "t", keep=3)]
    assert active.is_dir() and other.is_dir()
    assert [r.is_dir() for r in runs] == [False] * 3 + [True] * 3  # and the active one
    assert sorted(p.stem for p in jobs.iterdir()) == ["j1", "j2", "j3", "j4"]  # 3 finished
    assert len(removed) == 3 + 1
    assert prune_runs(tmp_path, "t", keep=3) == prune_jobs(jobs, "t", keep=3) == []
