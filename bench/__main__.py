"""Benchmarks of what users feel, side by side with the anchors; writes docs/benchmarks.md.

    python -m bench [--quick] [--out docs/benchmarks.md]      (or: bench/run.sh [--quick])

Every figure in the output comes from this run on this machine. Progress goes to stderr.
Not part of the test suite. Quick mode takes about 5 minutes, full mode about 30.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench import (
    aa_series,
    context,
    duet,
    e2e,
    mcp_startup,
    native_profilers,
    overhead,
    profilers,
    simulate,
)
from bench.common import (
    ROOT,
    fmt_load,
    geomean,
    load,
    log,
    machine,
    table,
    temp_workspace,
)

INTRO = (
    "What users feel, side by side with the anchors: every figure below was measured by one "
    "run of the benchmark runner on the machine described here, and ratios compare arms "
    "measured in that same run (interleaved where the section says so). Nothing is "
    "hard-coded except the seed's quoted demo figure, which is marked as such. The machine "
    "may be shared (others running tests at the same time), so read the load averages "
    "with the figures. Regenerate with:"
)
SETUP_TEXT = (
    "The runner puts its interpreter's directory first on PATH, so `python3` in targets and "
    "workloads is the same interpreter (no pyenv shim in the timings), and unsets "
    "AUTOOPT_STATE_DIR; every measurement runs on a temporary copy of targets/ and "
    "program.md."
)
MCP_TEXT = (
    "Cold start = spawn `python -m autoopt.server.cli serve` and complete `initialize` "
    "(median and best of {starts}); list_targets = {calls} `tools/call` round trips on one "
    "session (nearest-rank p50/p99); tools/list bytes = the tool list as sent (compact JSON, "
    "no nulls). The "
    "workspace is this checkout."
)
DEMO_TEXT = (
    "`autoopt demo` starts `autoopt serve` as a stdio subprocess and drives it like a "
    "client: list_targets, a workload check (build, deploy, one workload, teardown), a "
    "memray profile, an A/A baseline (run_ab runs=3, no warmup), then three experiments at "
    "runs={runs} (+1 warmup pair), each recorded. Wall time is the whole command; runs are "
    "counted from the demo workspace's run.json files (plus the workload check and the "
    "profiled run). The seed's figure (~5 minutes per experiment at one run per experiment) "
    "is quoted from the seed project's report, **not measured here**. The demo's patches "
    "are pre-written (no agent thinking time is in the wall time), and each KEEP moves the "
    "frontier, so later experiments run a faster server (see 's per run')."
)


@dataclass
class Config:
    """What one mode measures."""

    quick: bool
    trials: int
    aa_count: int
    aa_runs: int
    docker_runs: int
    backend_warmup: int
    rounds: int
    by_hand: bool
    demo_runs: int
    starts: int
    calls: int
    duet_count: int
    duet_abba: int
    duet_pyserver: int
    mixes: int

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(
                quick=True,
                trials=100,
                aa_count=3,
                aa_runs=3,
                docker_runs=3,
                backend_warmup=0,
                rounds=1,
                by_hand=False,
                demo_runs=3,
                starts=3,
                calls=30,
                duet_count=20,  # the done-when of issue 23: a 20-run duet A/A series
                duet_abba=5,
                duet_pyserver=1,
                mixes=2,
            )
        return cls(
            quick=False,
            trials=1000,
            aa_count=20,
            aa_runs=5,
            docker_runs=5,
            backend_warmup=1,
            rounds=3,
            by_hand=True,
            demo_runs=5,
            starts=10,
            calls=200,
            duet_count=20,
            duet_abba=20,
            duet_pyserver=4,
            mixes=4,
        )


@dataclass
class Section:
    """One part of the report: its markdown, the commands behind it, and its conditions."""

    title: str
    body: str = ""
    commands: list[str] = field(default_factory=list)
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    elapsed_s: float = 0.0
    error: str | None = None

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        lines += ["Commands:", "", "```", *self.commands, "```", ""]
        lines += [
            f"_{self.elapsed_s / 60:.1f} min; load average (1/5/15 min) "
            f"{fmt_load(self.load_start)} at the start, {fmt_load(self.load_end)} at the end._",
            "",
        ]
        if self.error:
            lines += ["**This section failed:**", "", "```", self.error, "```", ""]
        lines.append(self.body)
        return "\n".join(lines)


def timed(section: Section, work: Callable[[], str]) -> Section:
    """Run `work`, keep its markdown, its duration and the load around it; never raise."""
    log(f"== {section.title}")
    section.load_start = load()
    t0 = time.monotonic()
    try:
        section.body = work()
    except Exception:
        section.error = traceback.format_exc()[-3000:]
        log(f"{section.title} failed:\n{section.error}")
    section.elapsed_s = time.monotonic() - t0
    section.load_end = load()
    log(f"== {section.title}: done in {section.elapsed_s:.0f} s")
    return section


def py(args: str) -> str:
    return f"{shlex.quote(sys.executable)} {args}"


# -- the sections ---------------------------------------------------------------------------
def mcp_section(cfg: Config, key: dict[str, Any]) -> Section:
    s = Section(
        "MCP over stdio",
        commands=[py(f"-m bench.mcp_startup --starts {cfg.starts} --calls {cfg.calls}")],
    )

    def work() -> str:
        body = mcp_startup.run(cfg.starts, cfg.calls)
        for line in body.splitlines()[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 2:
                key["mcp." + cells[0]] = float(cells[1])
        return "\n".join(
            [
                MCP_TEXT.format(starts=cfg.starts, calls=cfg.calls),
                "",
                body,
            ]
        )

    return timed(s, work)


def aa_section(cfg: Config, key: dict[str, Any], results: list[overhead.Overhead]) -> Section:
    bare_total = 2 * cfg.aa_runs + 2
    counts = overhead.spread(bare_total, cfg.aa_count + 1)
    s = Section(
        "Decision quality on real runs: an A/A series",
        commands=[
            f"# {cfg.aa_count} x, through an in-process MCP client (create_server + Client) on a "
            "temporary copy of targets/ and program.md:",
            f'call_tool("run_ab", {{"target": "pyserver", "runs": {cfg.aa_runs}, '
            '"backend": "local", "seed": i})   # i = 1..'
            f"{cfg.aa_count}, no patch, warmup 1 (default)",
            f"# and {sum(counts)} bare workload runs interleaved (before the first run_ab and "
            "after each):",
            "(cd targets/pyserver/src && python3 server.py --host 127.0.0.1 --port $PORT &)",
            "bash targets/pyserver/workload.sh http://127.0.0.1:$PORT   # timed",
            "# standalone (no bare runs): "
            + py(f"-m bench.aa_series --count {cfg.aa_count} --runs {cfg.aa_runs}"),
        ],
    )

    def work() -> str:
        bare: list[float] = []
        with temp_workspace() as root:
            series = anyio.run(
                aa_series.run_series,
                root,
                cfg.aa_count,
                cfg.aa_runs,
                overhead.local_bare(root, counts, bare),
            )
        results.append(
            overhead.Overhead.of(
                "local", series, bare, "server.py started by hand, interleaved with the A/A series"
            )
        )
        verdicts = series.verdicts()
        key["aa.n"] = len(series.views)
        for verdict in aa_series.VERDICTS:
            key[f"aa.{verdict.lower()}"] = verdicts.get(verdict, 0)
        key["aa.seed_keep"] = sum(bool(v.get("seed_rule_keep")) for v in series.views)
        return "\n".join(
            [
                f"{cfg.aa_count} run_abs of pyserver with no patch (both arms the same commit), "
                f"runs={cfg.aa_runs} per arm, on the local backend. Primary metric peak_rss_mb "
                "(lower is better, 1% minimum effect), guardrails from target.md (latency_p99_ms "
                "+50%, error_rate, pod_restarts). SAME (the change shown within ±1%) is the "
                "right answer, counted against every other verdict; any KEEP is a false KEEP. "
                "'seed rule KEEP' is "
                "the seed's rule (mean better by > 1 SD and no overlap) evaluated by run_ab on "
                "the same runs. CVs are per arm over the counted runs.",
                "",
                series.markdown(),
            ]
        )

    return timed(s, work)


def backend_section(cfg: Config, results: list[overhead.Overhead], backend: str) -> Section:
    runs, warmup = cfg.docker_runs, cfg.backend_warmup
    s = Section(
        f"Harness overhead: {backend}",
        commands=[
            f'call_tool("run_ab", {{"target": "pyserver", "runs": {runs}, "warmup": {warmup}, '
            f'"backend": "{backend}", "seed": 1}})   # in-process MCP client, temporary workspace',
            f"# plus {2 * (runs + warmup)} bare workload runs (half before, half after): "
            "engine.build + engine.deploy (untimed), then",
            "bash targets/pyserver/workload.sh $ENDPOINT   # timed",
            "# standalone: "
            + py(f"-m bench.overhead --backend {backend} --runs {runs} --warmup {warmup}"),
        ],
    )

    def work() -> str:
        with temp_workspace() as root:
            result = anyio.run(overhead.measure_backend, root, backend, runs, warmup)
        results.append(result)
        if result.skipped and not result.samples:
            s.commands[:] = [f"# {backend}: not run: {result.skipped}"]
        return overhead.markdown([result])

    return timed(s, work)


def merge(title: str, parts: list[Section]) -> Section:
    """One report section from several measured ones (commands, time, load, errors)."""
    errors = [f"{p.title}: {p.error}" for p in parts if p.error]
    return Section(
        title,
        commands=[c for p in parts for c in p.commands],
        load_start=parts[0].load_start,
        load_end=parts[-1].load_end,
        elapsed_s=sum(p.elapsed_s for p in parts),
        error="\n".join(errors) or None,
    )


def overhead_summary(results: list[overhead.Overhead], key: dict[str, Any]) -> str:
    for r in results:
        if r.samples and r.bare:
            key[f"overhead.{r.backend}"] = r.figures()
        elif r.skipped:
            key[f"overhead.{r.backend}.skipped"] = r.skipped
    return "\n".join(
        [
            "Per run, from each sample's `timings` in `<state_dir>/runs/<run_id>/run.json` "
            "(medians over all runs the harness did, warmups included): deploy = start the "
            "service, wait for its health check (and for the previous run's teardown, when it "
            "went on meanwhile: 'hidden') and reset the peak; workload = the workload script; "
            "collect = /proc (or the container) readings; teardown = stop and wait. "
            "**(deploy+collect+teardown) / bare** is the harness's own cost per run as a share of "
            "the bare workload time (mean of the per-run sums, a hidden teardown counted once, "
            "over the median bare time); "
            "'whole run / bare - 1' also counts any slowdown of the workload itself. 'run_ab wall "
            "per run' is a whole run_ab call (builds, runs, statistics, plot) divided by its runs. "
            "local: the runs of the A/A series above, with bare runs of server.py started by "
            "hand interleaved (see its commands); docker and kubernetes: the commands here.",
            "",
            overhead.markdown(results),
        ]
    )


def profilers_section(cfg: Config, key: dict[str, Any]) -> Section:
    s = Section(
        "Profiler overhead on pyserver's workload",
        commands=[
            f"# {cfg.rounds} round(s), the order rotated each round, on a temporary workspace:",
            "bare:        engine.build -> engine.deploy -> engine.run_workload -> teardown",
            'memray:      profile_memory(engine, "pyserver", tool="memray")',
            'py-spy:      profile_cpu(engine, "pyserver", tool="py-spy")   # 100 Hz, --pid',
            'tracemalloc: profile_memory(engine, "pyserver", tool="tracemalloc")',
            *(
                [
                    "by hand:     (cd targets/pyserver/src && python3 -X tracemalloc=25 "
                    "server.py --port $PORT &); bash targets/pyserver/workload.sh $URL"
                ]
                if cfg.by_hand
                else []
            ),
            f"# standalone: {py(f'-m bench.profilers --rounds {cfg.rounds}')}"
            + (" --by-hand" if cfg.by_hand else ""),
        ],
    )

    def work() -> str:
        with temp_workspace() as root:
            result = anyio.run(profilers.measure, root, cfg.rounds, cfg.by_hand)
        for tool in (*profilers.TOOLS, profilers.BY_HAND):
            ratios = result.ratios(tool)
            if ratios:
                key[f"prof.{tool}"] = ratios
        return "\n".join(
            [
                "The workload time is the `duration_s` that workload.py prints (its own clock "
                "around the requests; the profile keeps it in `Profile.workload_metrics`), so the "
                "client's interpreter start and the profiler's start-up and post-processing are "
                "not in the ratio; they are in 'whole call s'. Each ratio is profiled / bare of "
                "the same round; the table gives their geometric mean and range. memray and "
                "tracemalloc start the service under the profiler (memray run; the engine's "
                "tracemalloc runner: 25 frames plus a snapshot whenever the traced size grew by "
                "2%, polled every 20 ms); py-spy attaches to the running service's pid."
                + (
                    " The by-hand row is the server under `python -X tracemalloc=25` with no "
                    "snapshots: it separates tracing from the runner's snapshots."
                    if cfg.by_hand
                    else ""
                ),
                "",
                result.markdown(),
            ]
        )

    return timed(s, work)


def native_section(cfg: Config, key: dict[str, Any]) -> Section:
    s = Section(
        "Native heap profilers on an allocation-heavy C program",
        commands=[
            f"# {cfg.rounds} round(s), the order rotated each round, on a temporary workspace "
            "with targets/churn (bench/native/churn.c, gcc -O1 -g ... -ljemalloc):",
            "bare:      engine.build -> engine.deploy -> engine.run_workload -> teardown",
            'heaptrack: profile_memory(engine, "churn", tool="heaptrack")',
            'jemalloc:  profile_memory(engine, "churn", tool="jemalloc")',
            f"# standalone: {py(f'-m bench.native_profilers --rounds {cfg.rounds}')}",
        ],
    )

    def work() -> str:
        with temp_workspace() as root:
            result = anyio.run(native_profilers.measure, root, cfg.rounds)
        for tool in native_profilers.TOOLS[1:]:
            if result.ratios(tool):
                key[f"native.{tool}"] = (result.ratios(tool), result.accuracy(tool))
        return "\n".join(
            [
                "The program makes 4 million malloc/free pairs of 64..1024 bytes (jemalloc size "
                "classes, so requested = allocated) and holds a 64 MiB buffer in its middle "
                "round; it counts its own live bytes and prints their peak, the anchor of the "
                "accuracy column. heaptrack traces every call (its whole call includes "
                "heaptrack_interpret and the server's replay of the trace); jemalloc samples "
                "one backtrace per 128 KiB allocated and dumps the heap every 4 MiB allocated "
                "(the profile is the heaviest dump; being sampled, its estimate can land on "
                "either side of the true peak). Each ratio is profiled / bare wall time of the "
                "same round.",
                "",
                result.markdown(),
            ]
        )

    return timed(s, work)


def demo_section(cfg: Config, key: dict[str, Any]) -> Section:
    s = Section(
        "End to end: the demo",
        commands=[py(f"-m autoopt.server.cli demo --workspace <tmp>/demo --runs {cfg.demo_runs}")],
    )

    def work() -> str:
        demo = e2e.run(cfg.demo_runs)
        samples = sum(r.samples for r in demo.ab_runs)
        key["demo.wall_s"] = demo.wall_s
        key["demo.runs"] = samples + demo.extra_runs
        key["demo.exit"] = demo.exit_code
        return "\n".join(
            [
                DEMO_TEXT.format(runs=cfg.demo_runs),
                "",
                demo.markdown(),
            ]
        )

    return timed(s, work)


def context_section(cfg: Config) -> Section:
    before = ROOT / "docs" / "context" / "before.json"
    s = Section(context.TITLE, commands=[py(
        f"-m bench.context --runs {cfg.demo_runs} --before {before.relative_to(ROOT)}")])

    def work() -> str:
        import json

        tally = context.measure(cfg.demo_runs)
        earlier = json.loads(before.read_text()) if before.is_file() else None
        # the section's own heading and commands are the Section's; keep its body
        return context.section(tally, earlier, cfg.demo_runs).split("```\n\n", 1)[1]

    return timed(s, work)


def simulation_section(cfg: Config) -> Section:
    s = Section(
        "Decision quality: the simulation",
        commands=[
            py(f"-m bench.simulate --trials {cfg.trials}" + (" --quick" if cfg.quick else ""))
        ],
    )
    return timed(
        s,
        lambda: simulate.run(cfg.trials, cfg.quick).replace(
            "## Decision rules under simulated noise\n\n", "", 1
        ),
    )


def duet_section(cfg: Config, key: dict[str, Any]) -> Section:
    rounds = max(3, cfg.rounds)
    trials = 4 * cfg.trials
    s = Section(
        "Duet against ABBA, latency estimators, instruction counts",
        commands=[py(f"-m bench.duet --count {cfg.duet_count} --abba-count {cfg.duet_abba} "
                     f"--pyserver {cfg.duet_pyserver} --runs 5 --trials {trials} "
                     f"--rounds {rounds} --mixes {cfg.mixes}")],
    )

    def work() -> str:
        text, figures = duet.run(
            cfg.duet_count, cfg.duet_pyserver, 5, trials, rounds, cfg.duet_abba, cfg.mixes
        )
        key.update(figures)
        return text

    return timed(s, work)


# -- the report -------------------------------------------------------------------------------
def key_figures(key: dict[str, Any], cfg: Config) -> str:
    """The headline figures next to their anchors; every number from this run."""
    rows: list[list[str]] = []
    if "aa.n" in key:
        n = key["aa.n"]
        others = ", ".join(f"{v} {key[f'aa.{v.lower()}']}" for v in aa_series.VERDICTS[2:])
        rows.append(
            [
                f"real A/A run_abs (pyserver, local, runs={cfg.aa_runs}): SAME; false KEEPs",
                f"SAME {key['aa.same']} / {n}; KEEP {key['aa.keep']} / {n} ({others}); "
                f"false-KEEP rate <= "
                f"{100 * aa_series.upper_bound(key['aa.keep'], n):.0f}% (95% upper bound)",
                f"seed rule on the same runs: {key['aa.seed_keep']} / {n} KEEP",
            ]
        )
    for order in ("abba", "duet"):
        if f"duet.{order}.n" in key:
            n, k = key[f"duet.{order}.n"], key[f"duet.{order}.keep"]
            rows.append(
                [
                    f"false KEEPs in real A/A run_abs, order={order} (batchdemo, wall_s)",
                    f"{k} / {n}; rate <= {100 * aa_series.upper_bound(k, n):.0f}% "
                    f"(95% upper bound); SD of log(B/A) per pair "
                    f"{100 * key[f'duet.{order}.sd']:.2f}%",
                    "the same series in the other order, interleaved",
                ]
            )
    if "mix.after.latency_p99_ms.cv" in key:
        cvs = {m: (key[f"mix.before.{m}.cv"], key[f"mix.after.{m}.cv"])
               for m in ("latency_p99_ms", "latency_p50_ms", "wall_s")}
        rows.append(
            [
                "pyserver, CV per arm (ABBA A/A): 290 requests per run (before) -> 1370 (after)",
                "; ".join(f"{m} {100 * b:.1f}% -> {100 * a:.1f}%" for m, (b, a) in cvs.items()),
                "the same work; its p99 rests on the 3 slowest requests before, 14 after",
            ]
        )
    if "instr.overhead" in key:
        rows.append(
            [
                "instructions (cachegrind) on batchdemo: wall time / bare; CV of the count",
                f"{key['instr.overhead']:.1f}x; {100 * key['instr.cv_instructions']:.4f}%",
                f"bare wall-time CV {100 * key['instr.cv_wall']:.1f}%",
            ]
        )
    for backend in ("local", "docker", "kubernetes"):
        x = key.get(f"overhead.{backend}")
        if x:
            rows.append(
                [
                    f"harness cost per run, {backend} ((deploy+collect+teardown) / bare workload)",
                    f"{100 * x['extra_ratio']:.1f}% ({x['extra_ratio'] * x['bare_s']:.2f} s per "
                    "run, mean)",
                    f"bare workload {x['bare_s']:.2f} s = 100%",
                ]
            )
        elif f"overhead.{backend}.skipped" in key:
            rows.append([f"harness cost per run, {backend}", "not measured", "see below"])
    if "demo.wall_s" in key:
        rate = key["demo.runs"] / (key["demo.wall_s"] / 60)
        seed = e2e.SEED_RUNS_PER_EXPERIMENT / e2e.SEED_MINUTES_PER_EXPERIMENT
        rows.append(
            [
                f"demo (runs={cfg.demo_runs}): wall time, runs per minute",
                f"{key['demo.wall_s'] / 60:.1f} min, {rate:.1f} runs/min",
                f"seed (quoted): ~{e2e.SEED_MINUTES_PER_EXPERIMENT:.0f} min per experiment at "
                f"{e2e.SEED_RUNS_PER_EXPERIMENT} run, {seed:.1f} runs/min ({rate / seed:.0f}x)",
            ]
        )
    if "mcp.cold_start_median_s" in key:
        rows.append(
            [
                "MCP cold start to initialized; list_targets p50 / p99",
                f"{key['mcp.cold_start_median_s']:.2f} s; {key['mcp.list_targets_p50_ms']:.1f} / "
                f"{key['mcp.list_targets_p99_ms']:.1f} ms",
                f"tools/list {key['mcp.tools_list_bytes']:.0f} bytes",
            ]
        )
    for tool in ("memray", "py-spy", "tracemalloc"):
        ratios = key.get(f"prof.{tool}")
        if ratios:
            anchor = "bare = 1.00x, same rounds"
            by_hand = key.get(f"prof.{profilers.BY_HAND}")
            if tool == "tracemalloc" and by_hand:
                anchor += f"; `python -X tracemalloc=25` without snapshots: {geomean(by_hand):.2f}x"
            rows.append(
                [
                    f"{tool}: profiled workload time / bare",
                    f"{geomean(ratios):.2f}x ({len(ratios)} round(s))",
                    anchor,
                ]
            )
    for tool in native_profilers.TOOLS[1:]:
        native = key.get(f"native.{tool}")
        if native:
            ratios, acc = native
            rows.append(
                [
                    f"{tool} on a malloc-heavy C program: wall time / bare; peak found",
                    f"{geomean(ratios):.2f}x; {min(acc):.3f} .. {max(acc):.3f} of the peak",
                    "bare = 1.00x; the program's own count of its live bytes = 1.000",
                ]
            )
    return table(["figure", "measured", "anchor"], rows)


def report(
    cfg: Config,
    sections: list[Section],
    key: dict[str, Any],
    started: float,
    load_start: tuple[float, float, float],
    argv: list[str],
) -> str:
    m = machine()
    load_end = load()
    rows = [[k, v] for k, v in m.items()]
    rows += [
        ["load average (1/5/15 min) at start", fmt_load(load_start)],
        ["load average (1/5/15 min) at end", fmt_load(load_end)],
        ["date", time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))],
        ["mode", "quick" if cfg.quick else "full"],
        ["total wall time", f"{(time.time() - started) / 60:.1f} min"],
    ]
    command = " ".join([shlex.quote(sys.executable), "-m", "bench", *map(shlex.quote, argv)])
    failed = [s.title for s in sections if s.error]
    return (
        "\n".join(
            [
                "# Benchmarks",
                "",
                INTRO,
                "",
                "```",
                command,
                "bench/run.sh" + (" --quick" if cfg.quick else "") + "   # the same",
                "```",
                "",
                SETUP_TEXT,
                "",
                "## Machine",
                "",
                table(["", ""], rows),
                "",
                *([f"**Sections that failed:** {', '.join(failed)}", ""] if failed else []),
                "## Key figures",
                "",
                key_figures(key, cfg),
                "",
                *[s.markdown() + "\n" for s in sections],
            ]
        ).rstrip()
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    if raw_argv[:1] == ["broken"]:  # python -m bench broken: the broken-patch series only
        from bench import broken

        return broken.main(raw_argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials and runs (~5 min)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--trials", type=int, help="simulated experiments per cell")
    parser.add_argument("--aa-count", type=int, help="A/A run_abs in the real series")
    parser.add_argument("--aa-runs", type=int, help="runs per arm in the real A/A series")
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else argv
    cfg = Config.make(args.quick)
    cfg.trials = args.trials or cfg.trials
    cfg.aa_count = args.aa_count or cfg.aa_count
    cfg.aa_runs = args.aa_runs or cfg.aa_runs

    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
    os.environ.pop("AUTOOPT_STATE_DIR", None)
    started, load_start = time.time(), load()
    log(
        f"mode {'quick' if cfg.quick else 'full'}; load average {fmt_load(load_start)}; "
        f"writing {args.out}"
    )

    key: dict[str, Any] = {}
    results: list[overhead.Overhead] = []
    mcp = mcp_section(cfg, key)
    aa = aa_section(cfg, key, results)
    harness = merge(
        "Harness overhead",
        [backend_section(cfg, results, "docker"), backend_section(cfg, results, "kubernetes")],
    )
    harness.body = overhead_summary(results, key)
    prof = profilers_section(cfg, key)
    native = native_section(cfg, key)
    demo = demo_section(cfg, key)
    reads = context_section(cfg)
    sim = simulation_section(cfg)
    pair = duet_section(cfg, key)
    sections = [sim, aa, pair, harness, demo, reads, mcp, prof, native]  # the report's order

    text = report(cfg, sections, key, started, load_start, raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"wrote {args.out} in {(time.time() - started) / 60:.1f} min")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    raise SystemExit(main())
