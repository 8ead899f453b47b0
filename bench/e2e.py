"""End to end: `autoopt demo` (a real MCP stdio session) timed, its runs counted.

    python -m bench.e2e [--runs 5]

Runs are counted from the demo workspace's persisted A/B runs (every sample of every
run.json, warmups included), plus the workload check and the profiled workload.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import f, log, table

SEED_MINUTES_PER_EXPERIMENT = 5.0  # quoted from the seed project's report, not measured
SEED_RUNS_PER_EXPERIMENT = 1


@dataclass
class ABRunFigures:
    exp: str
    verdict: str
    samples: int
    wall_s: float


@dataclass
class Demo:
    command: list[str]
    wall_s: float
    exit_code: int
    ab_runs: list[ABRunFigures] = field(default_factory=list)
    extra_runs: int = 0  # the phase-0 workload check and the profiled workload
    summary: str = ""
    tail: str = ""

    def markdown(self) -> str:
        samples = sum(r.samples for r in self.ab_runs)
        runs = samples + self.extra_runs
        minutes = self.wall_s / 60
        experiments = len(self.ab_runs)
        per_exp = minutes / experiments if experiments else float("nan")
        seed_rate = SEED_RUNS_PER_EXPERIMENT / SEED_MINUTES_PER_EXPERIMENT
        rate = runs / minutes
        rows = [
            [
                "autoopt demo (measured here)",
                f(minutes, 2),
                experiments,
                samples,
                runs,
                f(per_exp, 2),
                f(samples / experiments if experiments else 0, 1),
                f(rate, 1),
            ],
            [
                "seed (quoted, not measured here)",
                "-",
                "-",
                "-",
                "-",
                f"~{SEED_MINUTES_PER_EXPERIMENT:.0f}",
                SEED_RUNS_PER_EXPERIMENT,
                f(seed_rate, 1),
            ],
        ]
        head = [
            "",
            "wall time min",
            "run_abs",
            "A/B runs",
            "all runs",
            "min per run_ab",
            "runs per run_ab",
            "runs per minute",
        ]
        per_run = table(
            ["run_ab", "verdict", "runs (incl. warmup)", "wall s", "s per run"],
            [
                [r.exp, r.verdict, r.samples, f(r.wall_s, 1), f(r.wall_s / max(r.samples, 1), 2)]
                for r in self.ab_runs
            ],
        )
        ratio = rate / seed_rate
        lines = [
            table(head, rows),
            "",
            f"Runs per minute, demo vs the seed's quoted figure: **{ratio:.0f}x**; minutes per "
            f"experiment: {per_exp:.2f} vs ~{SEED_MINUTES_PER_EXPERIMENT:.0f} (with "
            f"{samples / max(experiments, 1):.0f} runs per experiment instead of "
            f"{SEED_RUNS_PER_EXPERIMENT}). 'all runs' adds the phase-0 workload check and the "
            "profiled workload to the A/B runs.",
            "",
            per_run,
        ]
        if self.exit_code != 0:
            lines += [
                "",
                f"**The demo exited with code {self.exit_code}.** Output tail:",
                "",
                "```",
                self.tail,
                "```",
            ]
        if self.summary:
            lines += ["", "The demo's own summary:", "", self.summary]
        return "\n".join(lines)


def run(runs: int) -> Demo:
    """Run the demo in a fresh workspace below a temporary directory; stream its output."""
    with tempfile.TemporaryDirectory(prefix="autoopt-bench-demo-") as tmp:
        root = Path(tmp) / "demo"
        command = [
            sys.executable,
            "-m",
            "autoopt.server.cli",
            "demo",
            "--workspace",
            str(root),
            "--runs",
            str(runs),
        ]
        log("demo: " + " ".join(command))
        t0 = time.monotonic()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            log("  demo| " + line.rstrip("\n"))
        code = proc.wait()
        wall = time.monotonic() - t0
        demo = Demo(command=command, wall_s=wall, exit_code=code, tail="\n".join(lines[-30:]))
        demo.summary = "\n".join(ln for ln in lines if ln.startswith("|"))
        demo.extra_runs = sum(ln.startswith("[phase 0]") for ln in lines) + sum(
            ln.startswith("[phase 1]") for ln in lines
        )
        exps = _experiments(root)
        for path in sorted(
            (root / ".autoopt" / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime
        ):
            data = json.loads(path.read_text())
            verdict = ((data.get("report") or {}).get("decision") or {}).get("verdict")
            demo.ab_runs.append(
                ABRunFigures(
                    exp=exps.get(data["id"], data["id"]),
                    verdict=verdict or data.get("status", "?"),
                    samples=len(data["samples"]),
                    wall_s=(data.get("finished") or data["created"]) - data["created"],
                )
            )
        return demo


def _experiments(root: Path) -> dict[str, str]:
    """run id -> exp id, from results.tsv."""
    out: dict[str, str] = {}
    for tsv in root.glob("results/*/*/results.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        head = lines[0].split("\t")
        for line in lines[1:]:
            row = dict(zip(head, line.split("\t"), strict=False))
            if row.get("run_id"):
                out[row["run_id"]] = row.get("exp_id", "?")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(run(args.runs).markdown())


if __name__ == "__main__":
    main()
