"""A timed run's limit: target.md's timeout, else 10x the recent median (floor and cap),
else warmup + duration, else the first-run limit; recent durations persist per backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.tools.errors import TargetSpecError
from autoopt.tools.targets import parse_target
from autoopt.tools.timeouts import CAP_S, FIRST_S, FLOOR_S, KEEP, Durations, run_timeout
from tests.unit.test_targets import BASE, _write

BATCH = BASE + "\n## Local\nkind: batch\nworkload: python3 x.py\n"


def test_the_limit_follows_what_was_measured(tmp_path: Path) -> None:
    spec = parse_target(_write(tmp_path, BATCH))
    assert run_timeout(spec, [])[0] == FIRST_S
    assert run_timeout(spec, [0.2, 0.1, 0.3])[0] == FLOOR_S  # 10x 0.2 s is below the floor
    limit, why = run_timeout(spec, [5.0, 6.0, 40.0])
    assert limit == 60.0 and "median of its last 3" in why
    assert run_timeout(spec, [100.0])[0] == CAP_S
    assert run_timeout(spec, [1000.0])[0] == 2000.0  # a long workload keeps twice its time


def test_declared_timeout_and_duration(tmp_path: Path) -> None:
    service = BASE + "\n## Workload\nwarmup: 2\nduration: 20s\n"
    assert run_timeout(parse_target(_write(tmp_path, service)), [])[0] == 220.0
    spec = parse_target(_write(tmp_path, service + "timeout: 1m\n"))
    assert run_timeout(spec, [1.0]) == (60.0, "timeout: in target.md")
    for bad in ("0", "inf", "-5", "soon"):
        with pytest.raises(TargetSpecError, match="timeout"):
            parse_target(_write(tmp_path, service + f"timeout: {bad}\n"))


def test_durations_persist_and_stay_bounded(tmp_path: Path) -> None:
    durations = Durations(tmp_path, "t", "local")
    for i in range(KEEP + 5):
        durations.add(1.0 + i)
    again = Durations(tmp_path, "t", "local").load()
    assert len(again) == KEEP and again[-1] == KEEP + 5.0
    assert Durations(tmp_path, "t", "docker").load() == []
    durations.file.write_text("{corrupt")
    assert Durations(tmp_path, "t", "local").load() == []
