"""How long one timed run may take before it counts as hung (and failed).

target.md's `## Workload` `timeout:` when given. Otherwise FACTOR times the median workload
time of the target's last successful runs on that backend (kept across run_abs in
`<state>/durations/`), or of the declared warmup + duration, with a floor, and a cap of
CAP_S (or twice the base, if longer). A target never measured, with no duration, gets
FIRST_S: its first run is the only one that can take that long.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from autoopt.tools.state import load_state, locked, write_atomic
from autoopt.tools.targets import TargetSpec

FACTOR = 10.0
FLOOR_S = 30.0
CAP_S = 600.0
FIRST_S = 300.0
KEEP = 20  # durations remembered per target and backend


class Durations:
    """The workload times of a target's recent successful runs on one backend."""

    def __init__(self, state_dir: Path, target: str, backend: str) -> None:
        self.file = state_dir / "durations" / f"{target}-{backend}.json"

    def load(self) -> list[float]:
        values = load_state(self.file, lambda d: [float(x) for x in d], [])
        return [v for v in values if v > 0]

    def add(self, seconds: float) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.file.with_suffix(".lock")):
            values = [*self.load(), round(seconds, 3)][-KEEP:]
            write_atomic(self.file, json.dumps(values))


def run_timeout(spec: TargetSpec, seen: list[float]) -> tuple[float, str]:
    """(seconds, why) for the next timed run of `spec`, given its recent durations."""
    if spec.workload.timeout_s is not None:
        return spec.workload.timeout_s, "timeout: in target.md"
    if seen:
        base, why = statistics.median(seen), f"the median of its last {len(seen)} good runs"
    elif spec.workload.duration_s is not None:
        base, why = spec.workload.warmup_s + spec.workload.duration_s, "warmup + duration"
    else:
        return FIRST_S, "no run of this target has been timed yet"
    limit = min(max(CAP_S, 2 * base), max(FLOOR_S, FACTOR * base))
    return round(limit, 1), f"{FACTOR:g}x {why} ({base:.3g} s), at least {FLOOR_S:g} s"
