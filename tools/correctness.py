"""A KEEP means faster and still correct: the workload's output, compared block by block,
and the target's own tests, run once per arm build.

What is compared (`## Correctness` output:): a batch program's stdout without its
`key=value` metric lines, or a service workload's `check: ...` and `digest=...` lines, each
with the `ignore:` patterns blanked. Every run's lines are saved beside the run and reduced
to a fingerprint. In a block (the runs that share one AUTOOPT_BLOCK_SEED), every B run must
print what the block's A runs print; A runs that disagree among themselves mean the workload
is not deterministic, and nothing can be concluded about equivalence.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from autoopt.tools.process import base_env, run, tail_text
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workload import host_python, is_metric, program

_CHECK = re.compile(r"^\s*(check:|digest\s*=)")
MAX_SAVED = 1 << 20  # bytes of normalised output kept per run, for the diffs
TAIL_LINES = 40
_FAILED_TESTS = (
    re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)"),  # pytest
    re.compile(r"^(?:FAIL|ERROR): (\S+ \([\w.]+\))"),  # unittest
    re.compile(r"^--- FAIL: (\S+)"),  # go test
    re.compile(r"^test (\S+) \.\.\. FAILED$"),  # cargo test
)


class OutputDiff(BaseModel):
    """The first line where two runs' outputs differ."""

    block: int
    runs: list[str] = Field(description="the two runs, e.g. ['run004-A', 'run005-B']")
    line: int = Field(description="1-based line number of the first difference")
    a: str | None = Field(description="the first run's line (None: its output ended)")
    b: str | None


class OutputCheck(BaseModel):
    """How the arms' outputs compared, so far."""

    mode: str = Field(description="stdout | checks | none")
    status: Literal["same", "changed", "nondeterministic", "unchecked"] = "unchecked"
    compared: int = Field(0, description="B runs compared with an A run of their block")
    lines: int = Field(0, description="lines compared per run (the first A run's)")
    changed: list[OutputDiff] = Field(default_factory=list)
    nondeterministic: list[OutputDiff] = Field(default_factory=list)

    def summary(self) -> str:
        if self.status == "changed":
            d = self.changed[0]
            return (f"behaviour changed: {d.runs[1]} differs from {d.runs[0]} (same block) at "
                    f"output line {d.line}: {_show(d.a)} -> {_show(d.b)}")
        if self.status == "nondeterministic":
            d = self.nondeterministic[0]
            return (f"the workload's output is not deterministic: {d.runs[0]} and {d.runs[1]} "
                    f"(same code, same block seed) differ at line {d.line}: {_show(d.a)} vs "
                    f"{_show(d.b)}; declare ignore: patterns in ## Correctness")
        if self.status == "same":
            return f"output the same in {self.compared} B runs ({self.lines} lines, {self.mode})"
        return f"output not compared ({self.mode})"


class TestRun(BaseModel):
    """The target's tests on one arm's build."""

    arm: str
    command: str
    passed: bool
    exit_code: int
    duration_s: float
    timed_out: bool = False
    failing: list[str] = Field(default_factory=list, description="test names, when parsed")
    tail: str = ""


def _show(line: str | None, width: int = 80) -> str:
    if line is None:
        return "(end of output)"
    return repr(line if len(line) <= width else line[: width - 3] + "...")


def observed(text: str, spec: TargetSpec) -> list[str]:
    """The lines that must not change, with the ignore patterns blanked."""
    mode = spec.correctness.mode(spec.kind)
    if mode == "none":
        return []
    patterns = [re.compile(p) for p in spec.correctness.ignore]
    out = []
    for line in text.splitlines():
        if not line.strip() or is_metric(line):
            continue
        if mode == "checks" and not _CHECK.match(line):
            continue
        for pattern in patterns:
            line = pattern.sub("<ignored>", line)
        out.append(line.rstrip())
    return out


def save(folder: Path, name: str, lines: list[str]) -> str:
    """Keep one run's compared lines (capped) and return their fingerprint."""
    text = "\n".join(lines)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text[:MAX_SAVED], encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def first_difference(a: list[str], b: list[str]) -> tuple[int, str | None, str | None]:
    for i in range(max(len(a), len(b))):
        la = a[i] if i < len(a) else None
        lb = b[i] if i < len(b) else None
        if la != lb:
            return i + 1, la, lb
    return 0, None, None


def check(
    mode: str, samples: list[tuple[str, str, int, str | None]], folder: Path, aa: bool
) -> OutputCheck:
    """Compare (name, arm, block, fingerprint) runs block by block; `aa`: both arms run
    the same code (no patch), so any difference is nondeterminism."""
    result = OutputCheck(mode=mode)
    if mode == "none":
        return result
    blocks: dict[int, list[tuple[str, str, str]]] = {}
    for name, arm, block, fp in samples:
        if fp is not None:
            blocks.setdefault(block, []).append((name, arm, fp))

    def diff(block: int, x: str, y: str) -> OutputDiff:
        a, b = (_read(folder / f"{n}.txt") for n in (x, y))
        line, la, lb = first_difference(a, b)
        return OutputDiff(block=block, runs=[x, y], line=line, a=la, b=lb)

    for block, runs in sorted(blocks.items()):
        a_runs = [(n, fp) for n, arm, fp in runs if arm == "A"]
        b_runs = [(n, fp) for n, arm, fp in runs if arm == "B"]
        reference = a_runs + b_runs if aa else a_runs
        if not result.lines and a_runs:
            result.lines = len(_read(folder / f"{a_runs[0][0]}.txt"))
        for name, fp in reference[1:]:
            if fp != reference[0][1] and len(result.nondeterministic) < 3:
                result.nondeterministic.append(diff(block, reference[0][0], name))
        if aa or not a_runs:
            result.compared += len(b_runs) if a_runs else 0
            continue
        for name, fp in b_runs:
            result.compared += 1
            if fp not in {f for _, f in a_runs} and len(result.changed) < 3:
                result.changed.append(diff(block, a_runs[0][0], name))
    if result.nondeterministic:
        result.status = "nondeterministic"
    elif result.changed:
        result.status = "changed"
    elif result.compared:
        result.status = "same"
    return result


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


async def run_tests(
    spec: TargetSpec, arm: str, tree: Path, target_dir: Path, logs: Path
) -> TestRun:
    """The test command in the arm's built tree, with the target's interpreter."""
    assert spec.correctness.tests is not None
    python = host_python(spec)
    values = {"python": python, "target_dir": str(target_dir)}
    cmd = program(spec.correctness.tests, values, python=python, cwd=tree)
    started = time.monotonic()
    child, done, timed_out = await run(
        cmd.argv,
        cwd=tree,
        env=base_env(cmd.env),
        logs=logs,
        name=f"tests-{arm}",
        timeout=spec.correctness.tests_timeout_s,
    )
    text = child.stdout.read_text(errors="replace")[-200_000:] + "\n" + child.stderr.read_text(
        errors="replace"
    )[-200_000:]
    failing = []
    for line in text.splitlines():
        for pattern in _FAILED_TESTS:
            if (m := pattern.match(line.strip())) and m[1] not in failing:
                failing.append(m[1])
    return TestRun(
        arm=arm,
        command=cmd.text(),
        passed=done.code == 0 and not timed_out,
        exit_code=done.code,
        duration_s=round(time.monotonic() - started, 3),
        timed_out=timed_out,
        failing=failing[:20],
        tail=tail_text(child.stderr, TAIL_LINES) or tail_text(child.stdout, TAIL_LINES),
    )


def gate(
    verdict: str, reason: str, outputs: OutputCheck | None, tests: dict[str, TestRun]
) -> tuple[str, str]:
    """The verdict once correctness is counted: changed output or tests failing on B
    (passing on A) is DISCARD whatever the metrics; nondeterministic output or a red
    baseline cannot KEEP (nor be SAME)."""
    a, b = tests.get("A"), tests.get("B")
    if a is not None and b is not None and a.passed and not b.passed:
        names = ", ".join(b.failing[:5]) or f"exit {b.exit_code}"
        return "DISCARD", f"tests failed on B (they pass on A): {names}"
    if outputs is not None and outputs.status == "changed":
        return "DISCARD", outputs.summary()
    held = "INCONCLUSIVE" if verdict in ("KEEP", "SAME") else verdict
    if a is not None and not a.passed:
        names = ", ".join(a.failing[:5]) or f"exit {a.exit_code}"
        return held, f"the baseline is red: the tests fail on A ({names}); {reason}"
    if outputs is not None and outputs.status == "nondeterministic":
        return held, f"{outputs.summary()}; {reason}"
    return verdict, reason


_SKIP_DIRS = frozenset({".git", "__pycache__"})


def tree_files(tree: Path) -> dict[str, tuple[int, int]]:
    """Every file of a built tree (path -> size, mtime), bytecode caches left out."""
    out = {}
    for folder, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out[os.path.relpath(path, tree)] = (st.st_size, st.st_mtime_ns)
    return out


def clean_leftovers(tree: Path, built: dict[str, tuple[int, int]]) -> tuple[list[str], list[str]]:
    """Remove what a run left in the built tree (files the build did not make), so every
    run starts from the tree as built and no cache survives to the next run; (the files
    removed, the built files the run changed)."""
    now = tree_files(tree)
    removed = sorted(set(now) - set(built))
    changed = sorted(p for p in built if p in now and now[p] != built[p])
    for rel in removed:
        with contextlib.suppress(OSError):
            os.unlink(tree / rel)
    kept = {str(Path(rel).parent) for rel in built}
    kept |= {str(parent) for rel in kept for parent in Path(rel).parents}
    for rel in sorted({str(Path(r).parent) for r in removed} - kept, key=len, reverse=True):
        for folder in (Path(rel), *Path(rel).parents):  # folders the run made, now empty
            if str(folder) in kept or str(folder) == ".":
                break
            with contextlib.suppress(OSError):
                (tree / folder).rmdir()
    return removed, changed
