"""Broken patches: is a faster wrong answer caught?

Every patch in bench/broken/ is a plausible "optimization" of one of our own targets that
changes what the program answers (skip work, return early, memoize). Each gets one run_ab
through the Engine (local backend, warmup 0, not sequential) on a temporary workspace copy;
it is caught when the verdict is DISCARD for the correctness gate: the reason starts with
'behaviour changed' (the output differs from A's in the same block) or says 'tests failed'
(the target's tests fail on B and pass on A). The real fixes in examples/patches are the
controls: they must not be caught.

The disk memo (right answer, unfair measurement) runs once more at --memo-runs per arm.

Before its run_ab, each patch is also run by hand, without the gate (A B B A, the same
input every time, best of two per arm), to show what it saves: that is what makes it
tempting.

    python -m bench broken [--runs 3] [--memo-runs 10] [--no-by-hand]
                           [--out docs/benchmarks.md | --no-doc]
    python -m bench.broken ...   (the same)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench.common import (
    ROOT,
    fmt_load,
    free_port,
    load,
    log,
    machine,
    stop_group,
    table,
    temp_workspace,
    wait_healthy,
)

TITLE = "Broken patches: is a faster wrong answer caught?"
BROKEN_DIR = ROOT / "bench" / "broken"
CONTROLS = (
    "pyserver-set-membership",
    "pyserver-history-cap",
    "pyserver-generator-stats",
    "batchdemo-stream",
)
# What each patch does, and the kind of shortcut it is; a patch added to bench/broken/
# without an entry here still runs (described by its file name).
WHAT: dict[str, tuple[str, str]] = {
    "pyserver-process-sample": (
        "skip work", "/process summarises every other record once the store holds > 1,000"),
    "pyserver-process-memo": (
        "memoize", "/process summarises (and snapshots) once, then answers from a cache"),
    "pyserver-ingest-id-only": (
        "skip work", "duplicate check by id in a set, not by comparing whole records"),
    "pyserver-ingest-cap": (
        "skip work", "store capped at 2,500 records: the rest of a batch is dropped"),
    "batchdemo-half-input": ("skip work", "generates every other event: half the input"),
    "batchdemo-early-return": ("return early", "stops after 100,000 of the events"),
    "batchdemo-disk-memo": (
        "memoize", "result pickled next to dedupe.py keyed by (count, seed), loaded next time"),
    "batchdemo-drop-duplicates": (
        "skip work", "duplicates dropped as generated: each key counts only its first event"),
    "pyserver-set-membership": ("control", "membership by a set of whole-record keys"),
    "pyserver-history-cap": ("control", "shallow snapshots, HISTORY capped at 10 runs"),
    "pyserver-generator-stats": ("control", "/stats streams instead of building lists"),
    "batchdemo-stream": ("control", "events streamed and folded into their key's row"),
}


@dataclass
class Case:
    name: str
    target: str
    path: Path
    control: bool

    @property
    def kind(self) -> str:
        return WHAT.get(self.name, ("control" if self.control else "broken", ""))[0]

    @property
    def what(self) -> str:
        return WHAT.get(self.name, ("", self.name))[1]


def cases() -> list[Case]:
    """Every patch in bench/broken/, then the controls."""
    out = [
        Case(p.stem, p.stem.split("-", 1)[0], p, False) for p in sorted(BROKEN_DIR.glob("*.patch"))
    ]
    out += [
        Case(n, n.split("-", 1)[0], ROOT / "examples" / "patches" / f"{n}.patch", True)
        for n in CONTROLS
    ]
    return out


# -- by hand, without the gate ------------------------------------------------------------
@dataclass
class HandRun:
    arm: str
    peak_mb: float
    cpu_s: float
    output: str  # the line the gate would compare (pyserver digest=, batchdemo checksum=)


@dataclass
class ByHand:
    runs: list[HandRun] = field(default_factory=list)
    error: str | None = None

    def best(self, arm: str, attr: str) -> float:
        return min(getattr(r, attr) for r in self.runs if r.arm == arm)

    def ratio(self, attr: str) -> str:
        if self.error or not self.runs:
            return "-"
        return f"{100 * (self.best('B', attr) / self.best('A', attr) - 1):+.1f}%"

    def output(self) -> str:
        if self.error or not self.runs:
            return "-"
        a = {r.output for r in self.runs if r.arm == "A"}
        b = {r.output for r in self.runs if r.arm == "B"}
        return "same" if a == b and len(a) == 1 else "differs"


def _tree(target: str, dest: Path, patch: Path | None) -> Path:
    shutil.copytree(
        ROOT / "targets" / target / "src", dest,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".dedupe-cache"),
    )
    if patch is not None:
        subprocess.run(["git", "apply", str(patch)], cwd=dest, check=True, capture_output=True)
    return dest


def _line(text: str, prefix: str) -> str:
    return next((ln for ln in text.splitlines() if ln.startswith(prefix)), "(none)")


def _pyserver_run(tree: Path, arm: str) -> HandRun:
    """server.py started by hand, the workload against it; the server's VmHWM and CPU."""
    port = free_port()
    server = subprocess.Popen(
        ["python3", "server.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url + "/health")
        done = subprocess.run(
            ["bash", str(ROOT / "targets" / "pyserver" / "workload.sh"), url],
            capture_output=True, text=True, timeout=300, check=True,
        )
        status = Path(f"/proc/{server.pid}/status").read_text()
        hwm_kb = int(re.search(r"^VmHWM:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
        stat = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return HandRun(arm, hwm_kb / 1024, cpu, _line(done.stdout, "digest="))
    finally:
        stop_group(server)


def _batch_run(tree: Path, arm: str) -> HandRun:
    """`python3 dedupe.py` (its default, fixed seed) under the engine's small measuring
    wrapper (wait4 from a fresh interpreter: a child of this big process would inherit its
    RSS as a floor of ru_maxrss)."""
    from autoopt.tools.workload import MEASURE_PY, parse_metrics

    done = subprocess.run(
        ["python3", "-c", MEASURE_PY, "python3", "dedupe.py"],
        cwd=tree, capture_output=True, text=True, timeout=300, check=True,
    )
    m = parse_metrics(done.stdout)
    return HandRun(arm, m["peak_rss_mb"], m["cpu_s"], _line(done.stdout, "checksum="))


def by_hand(case: Case) -> ByHand:
    """A B B A by hand on fresh copies of the source (B = + the patch), without the gate."""
    result = ByHand()
    run = _pyserver_run if case.target == "pyserver" else _batch_run
    try:
        with tempfile.TemporaryDirectory(prefix="autoopt-broken-") as tmp:
            trees = {
                "A": _tree(case.target, Path(tmp) / "a", None),
                "B": _tree(case.target, Path(tmp) / "b", case.path),
            }
            for arm in "ABBA":
                result.runs.append(run(trees[arm], arm))
    except Exception as exc:  # keep the run_ab; say what failed
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        log(f"{case.name}: by hand failed: {result.error}")
    return result


# -- run_ab, with the gate ------------------------------------------------------------------
@dataclass
class Outcome:
    case: Case
    runs: int = 0
    hand: ByHand | None = None
    verdict: str = "-"
    reason: str = ""
    tests: str = "-"
    timed: int = 0
    change: str = "-"
    wall_s: float = 0.0
    run_id: str = ""
    values: dict[str, list[float]] = field(default_factory=dict)  # arm -> primary, run order
    left_b: int = 0  # B runs that left files in the built tree (removed before the next)
    error: str | None = None

    @property
    def caught(self) -> bool:
        return self.verdict == "DISCARD" and (
            self.reason.startswith("behaviour changed") or "tests failed" in self.reason
        )


def _values(run: Any) -> dict[str, list[float]]:
    """Per arm, the primary metric of the counted runs run_ab did (few when the gate
    stopped it early), in run order."""
    return {
        arm: [
            s.metrics[run.metric]
            for s in run.samples
            if s.arm == arm and s.ok and not s.warmup and run.metric in s.metrics
        ]
        for arm in ("A", "B")
    }


def _change(values: dict[str, list[float]]) -> str:
    """B's median over A's."""
    if not values.get("A") or not values.get("B"):
        return "-"
    ratio = statistics.median(values["B"]) / statistics.median(values["A"])
    return f"{100 * (ratio - 1):+.1f}% (n={len(values['A'])}/{len(values['B'])})"


async def run_ab(engine: Any, case: Case, runs: int, seed: int) -> Outcome:
    out = Outcome(case, runs)
    t0 = time.monotonic()

    async def progress(done: float, total: float | None, message: str | None) -> None:
        if message:
            log(f"  {case.name} [{int(done)}/{int(total or 0)}] {message[:160]}")

    try:
        run = await engine.run_ab(
            case.target, progress=progress, patch=case.path.read_text(), runs=runs,
            warmup=0, backend="local", seed=seed, sequential=False,
        )
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:500]
        out.reason = f"run_ab failed: {out.error}"
        out.wall_s = time.monotonic() - t0
        return out
    out.run_id = run.id
    if run.report is not None:
        out.verdict = str(run.report.decision["verdict"])
        out.reason = str(run.report.decision["reason"])
    else:
        out.verdict, out.reason = run.status, run.error or ""
    if run.tests:
        out.tests = " / ".join(
            f"{'pass' if run.tests[a].passed else 'FAIL'}" for a in ("A", "B") if a in run.tests
        )
    out.timed = sum(1 for s in run.samples if not s.warmup)
    out.left_b = sum(1 for s in run.samples if s.arm == "B" and s.left)
    out.values = _values(run)
    out.change = _change(out.values)
    out.wall_s = time.monotonic() - t0
    return out


MEMO = "batchdemo-disk-memo"


async def series(
    root: Path, runs: int, hand: bool, memo_runs: int = 0
) -> tuple[list[Outcome], Outcome | None]:
    """Every case at `runs`; then, when `memo_runs`, the disk memo once more at that many
    runs per arm (more ABBA blocks, so more within-block cache hits)."""
    from autoopt.tools.engine import Engine
    from autoopt.tools.workspace import Workspace

    engine = Engine(Workspace(root))
    outcomes = []
    memo = None
    all_cases = cases()
    try:
        for i, case in enumerate(all_cases):
            log(f"== {case.name} ({'control' if case.control else 'broken'})")
            measured = by_hand(case) if hand else None
            out = await run_ab(engine, case, runs, seed=i + 1)
            out.hand = measured
            outcomes.append(out)
            log(f"{case.name}: {out.verdict} in {out.wall_s:.0f} s, "
                f"{'CAUGHT' if out.caught else 'not caught'}: {out.reason[:140]}")
        case = next((c for c in all_cases if c.name == MEMO), None)
        if memo_runs and case is not None:
            log(f"== {MEMO} again at runs={memo_runs}")
            memo = await run_ab(engine, case, memo_runs, seed=len(all_cases) + 1)
            log(f"{MEMO} at runs={memo_runs}: {memo.verdict}: {memo.reason[:140]}")
    finally:
        await engine.shutdown()
    return outcomes, memo


# -- the report ---------------------------------------------------------------------------
def _cell(text: str, n: int = 150) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def markdown(outcomes: list[Outcome], runs: int, hand: bool, started: float, elapsed: float,
             loads: tuple[tuple[float, ...], tuple[float, ...]], command: str,
             memo_again: Outcome | None = None) -> str:
    broken = [o for o in outcomes if not o.case.control]
    controls = [o for o in outcomes if o.case.control]
    caught = [o for o in broken if o.caught]
    missed = [o for o in broken if not o.caught]
    wrongly = [o for o in controls if o.caught]
    kept = [o for o in controls if o.verdict == "KEEP"]
    head = ["patch", "kind", "what it does"]
    if hand:
        head += ["by hand: peak RSS B vs A", "by hand: CPU B vs A", "by hand: output"]
    head += ["run_ab verdict", "tests A / B", "timed runs", "peak_rss_mb B vs A (run_ab)",
             "caught", "reason (head)"]
    rows = []
    for o in outcomes:
        row = [f"`{o.case.path.relative_to(ROOT)}`", o.case.kind, o.case.what]
        if hand:
            h = o.hand or ByHand(error="not run")
            row += [h.ratio("peak_mb"), h.ratio("cpu_s"), h.output()]
        if o.case.control:
            mark = "**yes (wrong)**" if o.caught else "no (right)"
        else:
            mark = "yes" if o.caught else "**NO**"
        row += [o.verdict, o.tests, o.timed, o.change, mark, _cell(o.reason)]
        rows.append(row)
    m = machine()
    lines = [
        f"## {TITLE}",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Not part of the full `python -m bench` run, which rewrites this file without this "
        "section: run `python -m bench broken` after it (it replaces only this section).",
        "",
        f"_{time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))}; {elapsed / 60:.1f} "
        f"min; {m['CPU']}, {m['cores']}, {m['memory']}, {m['kernel']}, {m['Python']}; load "
        f"average (1/5/15 min) {fmt_load(loads[0])} at the start, {fmt_load(loads[1])} at the "
        "end._",
        "",
        f"**Caught {len(caught)} of {len(broken)} broken patches**"
        + (f" (not caught: {', '.join(o.case.name for o in missed)})" if missed else "")
        + f"; **controls not caught {len(controls) - len(wrongly)} of {len(controls)}, kept "
        f"(KEEP) {len(kept)} of {len(controls)}**"
        + (
            f"; {MEMO} again at runs={memo_again.runs}: **{memo_again.verdict}**"
            + (" (a false KEEP)" if memo_again.verdict == "KEEP" else "")
            if memo_again is not None
            else ""
        )
        + ".",
        "",
        "Each patch in bench/broken/ is a plausible optimization of one of our own targets that "
        "changes what the program answers; the controls are the real fixes in examples/patches. "
        f"One run_ab per patch through the Engine: local backend, runs={runs} per arm, warmup 0, "
        "not sequential, seed = the patch's place in the table, on a temporary copy of "
        "targets/ (the working tree's, with whatever tests and ## Correctness the targets "
        "declare at the time). **Caught** = DISCARD with a reason that starts with 'behaviour "
        "changed' (a B run printed something other than its block's A: pyserver's digest of its "
        "sequential responses, batchdemo's checksum) or says 'tests failed' (the target's tests "
        "fail on B and pass on A, so no timed run happens: timed runs 0). The gate stops a "
        "run_ab at the first changed output, so the run_ab's peak_rss_mb change is over the "
        "few runs done (n = A/B runs); '-' when there were none."
        + (
            " The by-hand columns run each patch without any gate before its run_ab (A B B A on "
            "fresh copies of the source, the same input every time, best of two per arm; "
            "pyserver: the server's VmHWM and CPU time over one workload; batchdemo: "
            "`python3 dedupe.py`'s ru_maxrss and CPU time): what the shortcut saves, which "
            "is what makes it tempting, and whether its output differs."
            if hand
            else ""
        ),
        "",
        table(head, rows),
        "",
    ]
    if missed:
        lines += [
            "**Not caught:** "
            + "; ".join(f"`{o.case.name}` ({_cell(o.reason, 200)})" for o in missed)
            + ".",
            "",
        ]
    memo = next((o for o in outcomes if o.case.name == MEMO), None)
    if memo is not None:
        lines += [_memo_note(memo, memo_again), ""]
    return "\n".join(lines)


def _mib(xs: list[float]) -> str:
    return ", ".join(f"{x:.1f}" for x in xs) or "none"


def _memo_note(o: Outcome, again: Outcome | None) -> str:
    """What the disk memo did, from its own runs."""
    hand = ""
    if o.hand is not None and o.hand.runs and not o.hand.error:
        b = [r.peak_mb for r in o.hand.runs if r.arm == "B"]
        hand = (f" By hand, with the same input twice, B's two runs peaked at {_mib(b)} MiB "
                "(the second one loads the first one's pickle).")
    verdict = (
        "caught (for a reason of its own, see the table)" if o.caught
        else f"not caught ({o.verdict})"
    )
    text = (
        f"**`{MEMO}` was {verdict}.** Its answer is right (the same checksum), so neither "
        "the output nor the tests can tell; what it would do wrong is make the measurement "
        "unfair, with a pickle in the build tree that a later run with the same input loads "
        "(the runs of a block share one AUTOOPT_BLOCK_SEED). run_ab removes what a run leaves "
        "in the built tree before the next run (each sample's `left` lists it) and gives each "
        "deployment its own TMPDIR, so no B run can load another's pickle: "
        f"{o.left_b} of {len(o.values.get('B', []))} B runs wrote it again." + hand
        + " In its run_ab above, peak_rss_mb per run (MiB, run order): A "
        f"{_mib(o.values.get('A', []))}; B {_mib(o.values.get('B', []))}."
    )
    if again is not None:
        b = again.values.get("B", [])
        a = again.values.get("A", [])
        hits = sum(1 for x in b if a and x < 0.5 * statistics.median(a))
        text += (
            f" Run again at runs={again.runs} per arm ({again.left_b} B runs wrote the "
            "pickle again): "
            f"**{again.verdict}**"
            + (" — a false KEEP" if again.verdict == "KEEP" else "")
            + f"; {hits} of {len(b)} B runs were cache hits (under half A's median); "
            f"peak_rss_mb A {_mib(a)}; B {_mib(b)}. Reason: {_cell(again.reason, 400)}"
        )
    return text


def write_section(path: Path, section: str) -> None:
    """Replace this section in `path` (up to the next '## ' heading), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = f"## {TITLE}"
    start = text.find("\n" + heading + "\n")
    if start < 0:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    else:
        nxt = text.find("\n## ", start + 1)
        rest = "" if nxt < 0 else text[nxt:]
        text = text[: start + 1] + section.rstrip() + "\n" + rest
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench broken",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per arm of each run_ab")
    parser.add_argument("--no-by-hand", action="store_true",
                        help="skip the by-hand runs without the gate")
    parser.add_argument("--memo-runs", type=int, default=10,
                        help=f"run {MEMO} once more at this many runs per arm (0: do not)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench broken", *raw]).strip()

    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
    os.environ.pop("AUTOOPT_STATE_DIR", None)
    started, load_start, t0 = time.time(), load(), time.monotonic()
    hand = not args.no_by_hand
    with temp_workspace("autoopt-broken-") as root:
        outcomes, memo = anyio.run(series, root, args.runs, hand, args.memo_runs)
    section = markdown(outcomes, args.runs, hand, started, time.monotonic() - t0,
                       (load_start, load()), command, memo)
    print(section)
    if not args.no_doc:
        write_section(args.out, section)
        log(f"wrote the section to {args.out}")
    log(f"done in {(time.monotonic() - t0) / 60:.1f} min")
    return 1 if any(o.error for o in outcomes) or (memo and memo.error) else 0


if __name__ == "__main__":
    raise SystemExit(main())
