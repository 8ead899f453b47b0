"""The per-run latency estimators and the ## Decision latency_estimator: setting."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from autoopt.tools.abrun import _estimate_latency
from autoopt.tools.errors import TargetSpecError
from autoopt.tools.stats import latency_estimate, quantile
from autoopt.tools.targets import TargetSpec, parse_target


def test_quantile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    xs = [random.Random(1).lognormvariate(0, 1) for _ in range(301)]
    for q in (0.0, 0.5, 0.99, 1.0):
        assert quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))


def test_windows_resist_one_bad_window() -> None:
    rng = random.Random(7)
    base = [rng.lognormvariate(0, 0.3) for _ in range(500)]
    hiccup = base[:100] + [x * 20 for x in base[100:110]] + base[110:]  # 10 slow in window 1
    p99 = latency_estimate(hiccup, "p99") / latency_estimate(base, "p99")
    mow = latency_estimate(hiccup, "median_of_windows") / latency_estimate(
        base, "median_of_windows"
    )
    assert p99 > 5 and mow < 1.2, (p99, mow)
    trimmed = latency_estimate(hiccup, "trimmed") / latency_estimate(base, "trimmed")
    assert trimmed < 1.2, trimmed


def test_estimators_agree_on_a_steady_run_and_fall_back_when_short() -> None:
    rng = random.Random(3)
    xs = [rng.gauss(10, 1) for _ in range(5000)]
    p99 = latency_estimate(xs, "p99")
    for kind in ("median_of_windows", "trimmed"):
        assert latency_estimate(xs, kind) == pytest.approx(p99, rel=0.05)  # type: ignore[arg-type]
    few = xs[:50]
    assert latency_estimate(few, "trimmed") == latency_estimate(few, "p99")
    assert latency_estimate([1.0] * 200, "median_of_windows") == 1.0


TARGET = """# Target: t

## Source
repo: local
path: targets/t/src

## Primary Metric
name: peak_rss_mb
direction: lower

## Secondary Metrics
- latency_p99_ms

## Workload
description: x
script: targets/t/w.sh

## Scope
editable:
  - a.py

## Decision
{decision}

## Local
kind: service
run: python3 a.py
"""


def spec(tmp_path: Path, decision: str) -> TargetSpec:
    folder = tmp_path / "targets" / "t"
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "w.sh").write_text("true\n")
    (folder / "target.md").write_text(TARGET.format(decision=decision))
    return parse_target(folder)


def test_setting_is_parsed_and_replaces_the_p99(tmp_path: Path) -> None:
    assert spec(tmp_path, "min_effect_pct: 1").latency_metric() is None
    s = spec(tmp_path, "latency_estimator: median_of_windows")
    assert s.latency_estimator == "median_of_windows" and s.latency_metric() == "latency_p99_ms"
    file = tmp_path / "lat.txt"
    file.write_text("".join(f"{1 + (i % 7)}\n" for i in range(300)))
    metrics = {"latency_p99_ms": 99.0}
    _estimate_latency(s, metrics, file)
    assert metrics["latency_p99_ms_workload"] == 99.0
    assert metrics["latency_p99_ms"] == 7.0
    with pytest.raises(TargetSpecError, match="latency_estimator"):
        spec(tmp_path, "latency_estimator: mean")
