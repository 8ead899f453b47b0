"""Duet against ABBA, per-run latency estimators and instruction counts, on this machine.

    python -m bench.duet [--count 20] [--pyserver 4] [--quick]

1. Time metric, real A/A series: `count` run_abs of batchdemo in ABBA order and `count` in
   duet order, interleaved (ABBA i, duet i, ...), metric wall_s; any KEEP is a false KEEP.
2. pyserver A/A in both orders: each metric's CV per arm, the SD of the per-pair log ratio
   and the runs per arm needed to decide a true 2% and 5% effect; latency_p99_ms as the
   workload takes it (p99 of all requests) and by the windowed estimators, from the same
   runs' latency files.
3. Simulation of both orders under interference shared by runs that run at the same time.
4. Instruction counts (valgrind --tool=cachegrind) on batchdemo: overhead and CV.
5. pyserver's request count: ABBA A/A run_abs with the workload's mix of 1370 requests per
   run and with the coarse mix of the same work in 290 (the mix before), alternating: each
   metric's CV per arm and the runs per arm to decide a 2% and 5% effect, before and after.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench.aa_series import Series, series_on, upper_bound
from bench.common import ROOT, cv, log, median, table, temp_workspace

TIME_TARGET, TIME_METRIC = "batchdemo", "wall_s"
TIME_RECORDS = 50_000  # a quarter of batchdemo's 200k events: 20 + 20 run_abs in ~10 min
PYSERVER_METRICS = ("peak_rss_mb", "cpu_s", "wall_s", "latency_p50_ms", "latency_p99_ms")
COARSE = "pyserver-coarse"  # pyserver with the workload's coarse mix (290 requests)
ESTIMATORS = ("p99", "median_of_windows", "trimmed")
Z = 1.6449 + 0.8416  # one-sided alpha 5%, power 80%
ORDERS = ("abba", "duet")


def runs_needed(sd_log_ratio: float, effect: float) -> int:
    """Pairs for 80% power at one-sided 5%: ((z_a + z_b) * sd_d / |log(1 - effect)|)^2."""
    if not math.isfinite(sd_log_ratio):
        return -1
    return max(3, math.ceil((Z * sd_log_ratio / -math.log1p(-effect)) ** 2))


def _pairs(record: dict[str, Any], metric: str) -> list[tuple[float, float]]:
    """(A, B) values of the counted runs, paired as run_ab pairs them (by position)."""
    counted = [s for s in record["samples"] if s["ok"] and not s["warmup"]]
    a = [s["metrics"][metric] for s in counted if s["arm"] == "A" and metric in s["metrics"]]
    b = [s["metrics"][metric] for s in counted if s["arm"] == "B" and metric in s["metrics"]]
    return list(zip(a, b, strict=False))


def log_ratio_sd(records: list[dict[str, Any]], metric: str) -> float:
    """The pooled SD of log(B/A) over the pairs of every run (within-run, df-weighted)."""
    num, df = 0.0, 0
    for rec in records:
        d = [math.log(b / a) for a, b in _pairs(rec, metric) if a > 0 and b > 0]
        if len(d) >= 2:
            num += statistics.variance(d) * (len(d) - 1)
            df += len(d) - 1
    return math.sqrt(num / df) if df else math.nan


def arm_cv(records: list[dict[str, Any]], metric: str) -> float:
    """The median over runs and arms of the per-arm CV."""
    cvs = []
    for rec in records:
        for k in (0, 1):
            xs = [p[k] for p in _pairs(rec, metric)]
            if len(xs) >= 2:
                cvs.append(cv(xs))
    return median([c for c in cvs if not math.isnan(c)]) if cvs else math.nan


def ci_width(series: Series) -> float:
    """Median width of the primary's 95% CI, in % of the ratio."""
    widths = []
    for rec in series.records:
        p = ((rec.get("report") or {}).get("decision") or {}).get("primary") or {}
        if p.get("ci_low") is not None:
            widths.append(100 * (p["ci_high"] - p["ci_low"]))
    return median(widths) if widths else math.nan


@dataclass
class Pair:
    """The two series of one comparison, run interleaved."""

    abba: Series
    duet: Series


async def interleaved(
    root: Path,
    count: int,
    runs: int,
    extra: dict[str, Any],
    first_seed: int = 1,
    abba_count: int | None = None,
) -> Pair:
    """`count` duet A/A run_abs and `abba_count` (default `count`) ABBA ones, alternating
    (ABBA i, then duet i, while both last)."""
    from mcp import Client

    from autoopt.server.app import create_server
    from autoopt.tools.workspace import Workspace

    ws = Workspace(root)
    out = {o: Series(count=count, runs=runs) for o in ORDERS}
    async with Client(create_server(ws)) as client:
        for i in range(count):
            for order in ORDERS if i < (count if abba_count is None else abba_count) else ["duet"]:
                one = await series_on(
                    client, ws, 1, runs, extra={**extra, "order": order},
                    first_seed=first_seed + i,
                )
                _merge(out[order], one)
    return Pair(out["abba"], out["duet"])


def _merge(into: Series, one: Series) -> None:
    into.views += one.views
    into.records += one.records
    into.errors += one.errors
    into.elapsed_s += one.elapsed_s


def add_coarse_target(root: Path) -> None:
    """targets/pyserver-coarse in the workspace `root`: pyserver whose workload sends the
    coarse mix (`workload.py --mode full-coarse`)."""
    src, dst = root / "targets" / "pyserver", root / "targets" / COARSE
    shutil.copytree(src, dst)
    md = dst / "target.md"
    md.write_text(md.read_text().replace("targets/pyserver/", f"targets/{COARSE}/"))
    script = dst / "workload.sh"
    script.write_text(script.read_text().replace('"${@:2}"', '--mode full-coarse "${@:2}"'))


async def by_mix(root: Path, count: int, runs: int) -> dict[str, Series]:
    """`count` ABBA A/A run_abs of pyserver-coarse and of pyserver, alternating."""
    from mcp import Client

    from autoopt.server.app import create_server
    from autoopt.tools.workspace import Workspace

    ws = Workspace(root)
    out = {t: Series(count=count, runs=runs) for t in (COARSE, "pyserver")}
    async with Client(create_server(ws)) as client:
        for i in range(count):
            for target, series in out.items():
                _merge(series, await series_on(
                    client, ws, 1, runs, extra={"target": target}, first_seed=201 + i
                ))
    return out


def requests_per_run(series: Series) -> str:
    counts = {s["metrics"].get("requests") for s in series.samples() if s["ok"]}
    return "/".join(f"{c:.0f}" for c in sorted(c for c in counts if c is not None)) or "?"


def mix_table(out: dict[str, Series]) -> tuple[str, dict[str, float]]:
    """Per metric and mix: median CV per arm, SD of log(B/A), runs/arm for 2% and 5%."""
    rows, key = [], {}
    for metric in PYSERVER_METRICS:
        for target, s in out.items():
            when = "before" if target == COARSE else "after"
            mix = f"coarse ({when})" if target == COARSE else f"full ({when})"
            rows.append([metric, mix, requests_per_run(s), *spread_cells(s.records, metric)])
            key[f"mix.{when}.{metric}.cv"] = arm_cv(s.records, metric)
    head = ["metric", "mix", "requests per run", "median CV per arm",
            "SD of log(B/A) per pair", "runs/arm for 2%", "runs/arm for 5%"]
    return table(head, rows), key


def verdict_row(order: str, s: Series, metric: str) -> list[object]:
    counts = s.verdicts()
    n = len(s.views)
    keep = counts.get("KEEP", 0)
    sd = log_ratio_sd(s.records, metric)
    return [
        order,
        n,
        counts.get("SAME", 0),
        keep,
        ", ".join(f"{v} {c}" for v, c in sorted(counts.items()) if v not in ("SAME", "KEEP"))
        or "-",
        f"{keep}/{n}, <= {100 * upper_bound(keep, n):.0f}%" if n else "-",
        f"{100 * arm_cv(s.records, metric):.2f}%",
        f"{100 * sd:.2f}%",
        f"{ci_width(s):.2f}%",
        runs_needed(sd, 0.02),
        runs_needed(sd, 0.05),
        f"{s.elapsed_s / 60:.1f} min",
    ]


VERDICT_HEAD = [
    "order", "run_abs", "SAME (right)", "KEEP (false)", "other verdicts",
    "false-KEEP, 95% upper bound", "median CV per arm", "SD of log(B/A) per pair",
    "median 95% CI width", "runs/arm for 2%", "runs/arm for 5%", "wall time",
]


def latency_values(root: Path, record: dict[str, Any], estimator: str) -> list[tuple[float, float]]:
    """(A, B) of latency_p99_ms recomputed by `estimator` from the run's latency files."""
    from autoopt.tools.stats import latency_estimate
    from autoopt.tools.workspace import Workspace

    folder = Workspace(root).state_dir / "runs" / record["id"] / "latencies"
    per_arm: dict[str, list[float]] = {"A": [], "B": []}
    for s in record["samples"]:
        if not s["ok"] or s["warmup"]:
            continue
        f = folder / f"run{s['run']:03d}-{s['arm']}.txt"
        if f.is_file() and (xs := [float(x) for x in f.read_text().split()]):
            per_arm[s["arm"]].append(latency_estimate(xs, estimator))  # type: ignore[arg-type]
    return list(zip(per_arm["A"], per_arm["B"], strict=False))


def _with_metric(root: Path, records: list[dict[str, Any]], name: str, est: str) -> list[dict]:
    """Records whose samples carry `name` = latency_p99_ms by `est` (for the same helpers)."""
    out = []
    for rec in records:
        pairs = latency_values(root, rec, est)
        samples = [
            {"ok": True, "warmup": False, "arm": arm, "metrics": {name: p[k]}}
            for p in pairs for k, arm in ((0, "A"), (1, "B"))
        ]
        out.append({"samples": samples})
    return out


def spread_cells(records: list[dict[str, Any]], metric: str) -> list[object]:
    """Median CV per arm, SD of log(B/A) per pair, runs/arm for a 2% and a 5% effect."""
    sd = log_ratio_sd(records, metric)
    return [f"{100 * arm_cv(records, metric):.1f}%", f"{100 * sd:.1f}%",
            runs_needed(sd, 0.02), runs_needed(sd, 0.05)]


def pyserver_table(root: Path, pair: Pair) -> str:
    rows = []
    for metric in PYSERVER_METRICS:
        for order in ORDERS:
            rows.append([metric, order, *spread_cells(getattr(pair, order).records, metric)])
    for est in ESTIMATORS:
        for order in ORDERS:
            recs = _with_metric(root, getattr(pair, order).records, "lat", est)
            rows.append([f"latency_p99_ms by {est} (from the latency files)", order,
                         *spread_cells(recs, "lat")])
    return table(
        ["metric", "order", "median CV per arm", "SD of log(B/A) per pair",
         "runs/arm for 2%", "runs/arm for 5%"],
        rows,
    )


SIM_TEXT = (
    "Each run's log value = m(t) + e: m is an AR(1) process over run slots (sd = the shared "
    "noise, lag-1 correlation 0.6: a machine whose load drifts), e is the run's own noise "
    "(sd 1%). ABBA gives each run its own slot; duet gives both runs of a pair one slot "
    "(their m cancels in the ratio) and adds a CPU effect of +-0.5% that the seed gives to "
    "either arm per pair. The rule: paired t on log(B/A), one-sided 5%, and an estimated "
    "gain >= 1% (run_ab's KEEP when it pairs). Not modelled: what duet costs (each arm has "
    "half the CPUs, the arms share memory bandwidth and caches)."
)


def _machine(rng: Any, trials: int, slots: int, sd: float) -> Any:
    """AR(1) machine states, lag-1 correlation 0.6, stationary sd `sd`."""
    import numpy as np

    m = np.zeros((trials, slots))
    m[:, 0] = rng.standard_normal(trials)
    for t in range(1, slots):
        m[:, t] = 0.6 * m[:, t - 1] + 0.8 * rng.standard_normal(trials)
    return sd * m


def simulate(trials: int, seed: int = 2023) -> str:
    """ABBA and duet under a slowly varying machine state shared by simultaneous runs
    (SIM_TEXT)."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(seed)
    rows = []
    for s_shared in (0.02, 0.05, 0.10):
        for n in (5, 10):
            cells = []
            for order in ORDERS:
                slots = 2 * n if order == "abba" else n

                out = []
                for effect in (0.0, 0.02, 0.05):
                    m = _machine(rng, trials, slots, s_shared)
                    if order == "abba":  # ABBA blocks: A B B A | A B B A | ...
                        arm = np.resize(np.array([0, 1, 1, 0]), slots)
                        ma, mb = m[:, arm == 0], m[:, arm == 1]
                        cpu = 0.0
                    else:
                        ma = mb = m
                        cpu = 0.005 * rng.choice([-1.0, 1.0], size=(trials, n))
                    la = ma + 0.01 * rng.standard_normal((trials, n))
                    lb = mb + 0.01 * rng.standard_normal((trials, n)) + np.log1p(-effect) + cpu
                    d = lb - la
                    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
                    keep = (t < -stats.t.ppf(0.95, n - 1)) & (np.exp(d.mean(1)) <= 0.99)
                    out.append(100 * keep.mean())
                    if effect == 0.0:
                        sd = float(np.median(d.std(1, ddof=1)))
                cells.append((sd, out))
            row: list[object] = [f"{100 * s_shared:g}%", n]
            for sd, out in cells:
                row += [f"{100 * sd:.1f}%", " / ".join(f"{x:.1f}" for x in out)]
            rows.append(row)
    return table(
        ["shared noise sd", "N pairs", "ABBA: SD log(B/A)",
         "ABBA: false-KEEP / power 2% / power 5%", "duet: SD log(B/A)",
         "duet: false-KEEP / power 2% / power 5%"],
        rows,
    ) + f"\n\n{trials} simulated experiments per cell (seed {seed}); rates in %."


INSTR_RECORDS = 20_000


def instructions(rounds: int) -> tuple[str, dict[str, Any]]:
    """batchdemo's job bare and under the cachegrind counter, interleaved."""
    from autoopt.tools.workload import COUNT_PY

    src = ROOT / "targets" / "batchdemo" / "src"
    job = [sys.executable, "dedupe.py", "--records", str(INSTR_RECORDS)]
    counted = [sys.executable, "-c", COUNT_PY, *job]
    bare_s, counted_s, counts = [], [], []
    for _ in range(rounds):
        t = time.monotonic()
        subprocess.run(job, cwd=src, check=True, capture_output=True)
        bare_s.append(time.monotonic() - t)
        t = time.monotonic()
        done = subprocess.run(counted, cwd=src, check=True, capture_output=True, text=True)
        counted_s.append(time.monotonic() - t)
        line = next(x for x in done.stdout.splitlines() if x.startswith("instructions="))
        counts.append(float(line.split("=", 1)[1]))
    figures = {
        "overhead": statistics.median(counted_s) / statistics.median(bare_s),
        "cv_instructions": cv(counts),
        "cv_wall": cv(bare_s),
    }
    sd = math.sqrt(2) * figures["cv_instructions"]
    text = "\n".join([
        "Commands (in targets/batchdemo/src, alternating, " f"{rounds} rounds):",
        "",
        "```",
        shlex.join(["python3", *job[1:]]) + "   # bare, timed",
        "python3 -c \"$COUNT_PY\" " + shlex.join(job[1:]) + "   # tools/workload.py COUNT_PY:"
        " valgrind -q --tool=cachegrind --cache-sim=no --trace-children=yes, summed",
        "```",
        "",
        table(
            ["rounds", "bare wall (median)", "under cachegrind (median)", "overhead",
             "CV instructions", "CV bare wall time", "runs/arm for 2% (instructions)",
             "runs/arm for 5%"],
            [[rounds, f"{statistics.median(bare_s):.2f} s",
              f"{statistics.median(counted_s):.2f} s", f"{figures['overhead']:.1f}x",
              f"{100 * figures['cv_instructions']:.4f}%", f"{100 * figures['cv_wall']:.1f}%",
              runs_needed(sd, 0.02), runs_needed(sd, 0.05)]],
        ),
        "",
        f"instruction counts: {', '.join(f'{c:.0f}' for c in counts)}. --records "
        f"{INSTR_RECORDS} (a tenth of the workload's 200k: valgrind is slow). Wall time, CPU "
        "time and peak RSS of a counted run measure valgrind, not the program.",
    ])
    return text, figures


def run(
    count: int, pyserver_count: int, runs: int, trials: int, rounds: int, abba_count: int,
    mix_count: int = 0,
) -> tuple[str, dict]:
    """Every section; (markdown, key figures)."""
    key: dict[str, Any] = {}
    parts = []
    with temp_workspace() as root:
        md = root / "targets" / TIME_TARGET / "target.md"
        text = md.read_text()
        md.write_text(text.replace("--seed {block_seed}",
                                   f"--seed {{block_seed}} --records {TIME_RECORDS}"))
        t = time.monotonic()
        log(f"duet: {count} duet + {abba_count} ABBA A/A run_abs of {TIME_TARGET}")
        pair = anyio.run(
            interleaved, root, count, runs,
            {"target": TIME_TARGET, "metric": TIME_METRIC, "min_effect": 1, "warmup": 0},
            1, abba_count,
        )
        parts += [
            f"### A time metric: {count} duet and {abba_count} ABBA A/A run_abs "
            f"({TIME_TARGET}, {TIME_METRIC})",
            "",
            "Commands (in-process MCP client, a temporary copy of targets/, interleaved):",
            "",
            "```",
            f'call_tool("run_ab", {{"target": "{TIME_TARGET}", "metric": "{TIME_METRIC}", '
            f'"runs": {runs}, "warmup": 0, "seed": i, "order": "abba"}})   # i = 1..{abba_count}',
            f'call_tool("run_ab", {{"target": "{TIME_TARGET}", "metric": "{TIME_METRIC}", '
            f'"runs": {runs}, "warmup": 0, "seed": i, "order": "duet"}})   # i = 1..{count}, '
            "each right after ABBA's i",
            "```",
            "",
            f"The temporary copy's batchdemo workload is `python3 dedupe.py --seed {{block_seed}}"
            f" --records {TIME_RECORDS}` (a quarter of the events, to fit the series in the "
            "bench's time).",
            "",
            f"_{(time.monotonic() - t) / 60:.1f} min._ Runs/arm for 2% / 5%: pairs for 80% "
            "power at one-sided 5% from the pooled SD of log(B/A) per pair, "
            "((1.645 + 0.842) * SD / |ln(1 - effect)|)^2, at least 3.",
            "",
            table(VERDICT_HEAD, [verdict_row(o, getattr(pair, o), TIME_METRIC) for o in ORDERS]),
            *[f"- run_ab failed: {e}" for o in ORDERS for e in getattr(pair, o).errors],
        ]
        for o in ORDERS:
            s = getattr(pair, o)
            key[f"duet.{o}.keep"], key[f"duet.{o}.n"] = s.verdicts().get("KEEP", 0), len(s.views)
            key[f"duet.{o}.sd"] = log_ratio_sd(s.records, TIME_METRIC)
        if pyserver_count:
            t = time.monotonic()
            log(f"duet: {pyserver_count} + {pyserver_count} A/A run_abs of pyserver")
            ps = anyio.run(interleaved, root, pyserver_count, runs, {"target": "pyserver"}, 101)
            parts += [
                "",
                f"### pyserver: {pyserver_count} A/A run_abs per order, every metric",
                "",
                "```",
                f'call_tool("run_ab", {{"target": "pyserver", "runs": {runs}, "seed": i, '
                '"order": "abba" | "duet"})   # alternating',
                "```",
                "",
                f"_{(time.monotonic() - t) / 60:.1f} min._ In duet each arm's service and its "
                "load driver share one CPU; in ABBA one run has both CPUs. The windowed "
                "latency estimators are recomputed from the same runs' latency files "
                "(AUTOOPT_LATENCY_FILE), so 'p99' against the others is before/after on "
                "identical requests.",
                "",
                pyserver_table(root, ps),
                "",
                table(VERDICT_HEAD, [verdict_row(o, getattr(ps, o), "peak_rss_mb")
                                     for o in ORDERS]),
                *[f"- run_ab failed: {e}" for o in ORDERS for e in getattr(ps, o).errors],
            ]
        if mix_count:
            t = time.monotonic()
            log(f"duet: {mix_count} + {mix_count} A/A run_abs of pyserver, coarse and full mix")
            add_coarse_target(root)
            mixes = anyio.run(by_mix, root, mix_count, runs)
            text, figures = mix_table(mixes)
            key.update(figures)
            parts += [
                "",
                f"### pyserver's request count: {mix_count} A/A run_abs per mix, before and after",
                "",
                "```",
                f'call_tool("run_ab", {{"target": "{COARSE}", "runs": {runs}, "seed": i}})'
                "   # workload.py --mode full-coarse: 290 requests",
                f'call_tool("run_ab", {{"target": "pyserver", "runs": {runs}, "seed": i}})'
                "   # workload.py (--mode full): 1370 requests; alternating, ABBA",
                "```",
                "",
                f"_{(time.monotonic() - t) / 60:.1f} min._ `{COARSE}` is a copy of pyserver in "
                "the temporary workspace whose workload sends the same work in 10x larger "
                "ingests (the mix before): a p99 of 290 requests rests on the 3 slowest, one "
                "of 1370 on the 14 slowest. Peak RSS, CPU and wall time measure the same work "
                "in both.",
                "",
                text,
                *[f"- run_ab failed: {e}" for s in mixes.values() for e in s.errors],
            ]
    t = time.monotonic()
    log("duet: simulation")
    parts += ["", "### Simulation", "", "```", f"python -m bench.duet  # simulate({trials})",
              "```", "", SIM_TEXT, "", simulate(trials), "", f"_{time.monotonic() - t:.0f} s._"]
    log("duet: instruction counts")
    text, figures = instructions(rounds)
    key.update({f"instr.{k}": v for k, v in figures.items()})
    parts += ["", "### Instruction counts (cachegrind) on batchdemo", "", text]
    return "\n".join(parts), key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--abba-count", type=int, default=None, help="default: --count")
    parser.add_argument("--pyserver", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mixes", type=int, default=3, help="A/A run_abs per pyserver mix")
    parser.add_argument("--quick", action="store_true", help="count 5, pyserver 2, mixes 2")
    args = parser.parse_args()
    if args.quick:
        args.count, args.pyserver = min(args.count, 5), min(args.pyserver, 2)
        args.mixes = min(args.mixes, 2)
    abba = args.count if args.abba_count is None else args.abba_count
    text, _ = run(
        args.count, args.pyserver, args.runs, args.trials, args.rounds, abba, args.mixes
    )
    print(text)


if __name__ == "__main__":
    main()
