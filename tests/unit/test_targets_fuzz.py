"""Fuzzing the target.md parser (issue 19): any bytes give a TargetSpec whose numbers are
finite and in range, or a TargetSpecError naming the file (and the line) - nothing else.

Three generators: raw bytes, a real target.md mutated byte by byte, and documents built
from the parser's own vocabulary (sections, keys, hostile numbers, commands, paths)."""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from autoopt.server.views import commands
from autoopt.tools.errors import TargetSpecError
from autoopt.tools.targets import MAX_SECONDS, TargetSpec, parse_target

REPO = Path(__file__).resolve().parents[2]
REAL = sorted((REPO / "targets").glob("*/target.md"))
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,  # the same examples every run, nothing written to .hypothesis/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed"
        path.mkdir()
        yield path


def check(folder: Path, data: bytes) -> TargetSpec | None:
    """parse_target on `data`: a spec that holds its ranges, or a TargetSpecError naming
    the file; any other exception fails the test."""
    (folder / "target.md").write_bytes(data)
    try:
        spec = parse_target(folder)
    except TargetSpecError as exc:
        message = str(exc)
        assert re.match(rf"{re.escape(str(folder / 'target.md'))}(:\d+)?: ", message), message
        assert len(message) < 2000, len(message)
        if currently_in_test_context():
            event("error at a line" if re.search(r"target\.md:\d+: ", message) else "error")
        return None
    if currently_in_test_context():
        event("spec")
    numbers = [
        spec.min_effect_pct,
        spec.build.timeout_s,
        spec.local.health_timeout_s,
        spec.correctness.tests_timeout_s,
        spec.workload.warmup_s,
        *(g.value for g in spec.guardrails),
    ]
    for optional in (spec.workload.duration_s, spec.docker.cpus):
        if optional is not None:
            numbers.append(optional)
            assert optional > 0
    assert all(math.isfinite(x) for x in numbers), numbers
    assert 0 <= spec.min_effect_pct <= 100
    assert 0 < spec.build.timeout_s <= MAX_SECONDS and spec.local.health_timeout_s > 0
    assert spec.correctness.tests_timeout_s > 0 and 0 <= spec.workload.warmup_s <= MAX_SECONDS
    assert spec.service_port is None or 1 <= spec.service_port <= 65535
    assert spec.workload.concurrency is None or spec.workload.concurrency >= 1
    spec.model_dump_json()  # the output schema's view of it
    commands(spec)  # what list_targets shows: the commands parse again
    spec.harness_paths()
    spec.declared_metrics("local")
    return spec


# --- raw and mutated bytes -------------------------------------------------------------


@settings(SETTINGS, max_examples=700)
@given(data=st.binary(max_size=4096))
def test_raw_bytes(folder: Path, data: bytes) -> None:
    check(folder, data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real target.md with a few bytes replaced, inserted or deleted."""
    data = bytearray(REAL[draw(st.integers(0, len(REAL) - 1))].read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        chunk = draw(st.binary(min_size=1, max_size=12))
        if action == "insert":
            data[at:at] = chunk
        elif action == "replace":
            data[at : at + len(chunk)] = chunk
        else:
            del data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


@settings(SETTINGS, max_examples=700)
@given(data=mutated())
def test_mutated_real_files(folder: Path, data: bytes) -> None:
    check(folder, data)


# --- documents from the parser's vocabulary --------------------------------------------

HOSTILE_NUMBERS = [
    "inf", "-inf", "nan", "NaN", "1e400", "-1e400", "1e-400", "9" * 400, "-50", "-0", "0",
    "0.0", "1", "1.5", "65535", "65536", "100", "100.0001", "1_000", "٨٠٨٠", "0x50", "1e3",
    ".5", "5.", "1.2.3", "...", "+7", "50%", "1e308", "2**64", " 3 ", "1e5", "604801",
]  # fmt: skip
NUMBER = st.one_of(
    st.integers(1, 1000).map(str),  # most values are fine, so the rest of the file is read
    st.sampled_from(HOSTILE_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
)
DURATION = st.tuples(NUMBER, st.sampled_from(["", "s", "ms", "m", "min", "h", "d", " s"])).map(
    "".join
)
COMMANDS = [
    "python3 server.py --port {port}", "A=1 python3 x.py", "env A=1 x", "env -i x", "A=1",
    "''", '""', "a | b", "a && b", "a; b", "x > y", "'unclosed", '"unclosed', "\\", "(x)",
    "python3 -c 'import sys'", "./run.sh {port} {endpoint}", "python3 \u2028x", "$(rm -rf /)",
    "python3 -m unittest -q test_x tests/ a::b", "/usr/bin/env python3 x.py",
]  # fmt: skip
COMMAND = st.one_of(st.sampled_from(COMMANDS), st.text(min_size=1, max_size=30))
PATH = st.one_of(
    st.sampled_from(["targets/t/src", "src", "/etc/passwd", "../../x", "a/../b", "~/x", "."]),
    st.sampled_from(["a" * 300, "b/" * 600, "x\u00e9/y"]),
    st.text(min_size=1, max_size=20),
)
WORDS = [
    "local", "main", "lower", "higher", "LOWER", "service", "batch", "stdout", "checks",
    "none", "true", "false", "sdist", "wheel", "six==1.16.0", "six", "zlib", "zlib=1:1.3",
    "MB", "BASE_IMAGE", "512m", "peak_rss_mb", "KEY=VALUE", "NOEQUALS", "(a", "[",
    "a{99999999999}", "(" * 300 + ")" * 300, "x (higher is better)", "(none)",
]  # fmt: skip
WORD = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=20))
SENTENCES = [
    "{m} must not increase by more than {n}% from baseline",
    "{m} must not decrease by more than {n}%", "{m} must remain {n}", "{m} must stay {n}.",
    "{m} should be small",
]  # fmt: skip
CONSTRAINT = st.tuples(
    st.sampled_from(SENTENCES),
    st.sampled_from(["p99", "error_rate", "pod_restarts", "x.y", "\u00e9"]),
    NUMBER,
).map(lambda t: t[0].format(m=t[1], n=t[2]))
LIST = st.lists(WORD, max_size=3)
# section -> key -> what its value is (a list strategy: '- item' lines below 'key:')
SCHEMA: dict[str, dict[str, st.SearchStrategy[str] | st.SearchStrategy[list[str]]]] = {
    "source": {"repo": WORD, "branch": WORD, "path": PATH, "commit": WORD, "pypi": WORD,
               "debian": WORD, "dist": WORD},
    "build": {"dockerfile": PATH, "build_timeout": DURATION, "args": LIST, "incremental": WORD},
    "primary metric": {"name": WORD, "direction": WORD, "unit": WORD},
    "workload": {"description": WORD, "warmup": DURATION, "duration": DURATION, "script": PATH,
                 "concurrency": NUMBER},
    "scope": {"editable": LIST, "readonly": LIST},
    "service": {"port": NUMBER},
    "local": {"kind": WORD, "build": COMMAND, "run": COMMAND, "health": WORD,
              "health_timeout": DURATION, "workload": COMMAND, "python": WORD,
              "measure_children": WORD, "health_cmd": COMMAND},
    "correctness": {"output": WORD, "ignore": LIST, "tests": COMMAND, "tests_timeout": DURATION},
    "docker": {"base_image_arg": WORD, "memory": WORD, "cpus": NUMBER},
    "kubernetes": {"manifest": PATH, "memory": WORD, "cpu": WORD},
    "decision": {"min_effect_pct": NUMBER},
}  # fmt: skip
ITEMS = {"secondary metrics": WORD, "constraints": CONSTRAINT, "profiling": WORD}
NOISE = st.one_of(  # a line of anything: keys outside the schema, prose, odd list markers
    st.tuples(st.text(max_size=10), WORD).map(lambda kv: f"{kv[0]}: {kv[1]}"),
    st.sampled_from(["", "# comment", "   ", "\t- x", "- ", "-x", "###", "## ", "key:"]),
    st.text(max_size=40),
)


@st.composite
def section(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from([*SCHEMA, *ITEMS, "notes", "l\u043ecal", ""]))
    heading = draw(st.sampled_from([name, name.title(), name.upper(), f" {name} "]))
    lines = [f"## {heading}"]
    keys = SCHEMA.get(name, {})
    for _ in range(draw(st.integers(0, 4))):
        pick = draw(st.integers(0, 9))
        if pick < 7 and keys:
            key = draw(st.sampled_from(sorted(keys)))
            value = draw(keys[key])
            if isinstance(value, list):
                lines += [f"{key}:", *(f"  - {v}" for v in value)]
            else:
                lines.append(f"{draw(st.sampled_from([key, key.replace('_', ' ')]))}: {value}")
        elif pick < 8 and name in ITEMS:
            lines.append(f"- {draw(ITEMS[name])}")
        else:
            lines.append(draw(NOISE))
    return "\n".join(lines)


BASE = "## Source\nrepo: local\npath: src\n\n## Primary Metric\nname: m\ndirection: lower\n"


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """A target.md from the vocabulary; most start valid, so the deep checks are reached."""
    head = BASE if draw(st.integers(0, 9)) < 8 else ""
    sections = draw(st.lists(section(), max_size=5))
    if sections and draw(st.integers(0, 9)) == 0:  # a section twice
        sections.append(sections[draw(st.integers(0, len(sections) - 1))])
    text = "\n\n".join([head, *sections]) + "\n"
    data = text.replace("\n", draw(st.sampled_from(["\n", "\r\n"]))).encode("utf-8", "replace")
    return b"\xef\xbb\xbf" + data if draw(st.integers(0, 19)) == 0 else data


@settings(SETTINGS, max_examples=1600)
@given(data=documents())
def test_structured_documents(folder: Path, data: bytes) -> None:
    check(folder, data)


@pytest.mark.parametrize("path", REAL, ids=[p.parent.name for p in REAL])
def test_real_targets_hold_the_invariants(folder: Path, path: Path) -> None:
    assert check(folder, path.read_bytes()) is not None
