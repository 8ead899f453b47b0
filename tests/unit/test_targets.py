"""target.md parsing: the seed's files unchanged, our sections, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoopt.tools.errors import InvalidName, TargetNotFound, TargetSpecError
from autoopt.tools.targets import glob_matches, parse_constraint, parse_target
from autoopt.tools.workspace import Workspace, check_name, inside

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "seed"
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "targets"


@pytest.mark.parametrize("root", [FIXTURES, SHARED_SEED], ids=["fixture-copy", "shared"])
def test_seed_pyserver_parses_unchanged(root: Path) -> None:
    if not root.exists():
        pytest.skip(f"{root} is not beside this checkout")
    spec = parse_target(root / "pyserver")
    assert (spec.primary.name, spec.primary.direction, spec.primary.unit) == (
        "peak_rss_mb",
        "lower",
        "MB",
    )
    assert spec.scope.editable == ["server.py"]
    assert spec.scope.readonly == []  # "(none)"
    assert spec.service_port == 8080
    assert spec.workload.warmup_s == 5 and spec.workload.duration_s == 30
    assert [(g.metric, g.rule, g.value) for g in spec.guardrails] == [
        ("latency_p99_ms", "max_increase_pct", 50.0),
        ("error_rate", "remain", 0.0),
        ("restarts", "remain", 0.0),  # the seed's pod_restarts: the built-in, any backend
    ]
    assert spec.guardrails[2].text == "pod_restarts must remain 0"


def test_seed_chroma_scope_and_notes() -> None:
    spec = parse_target(FIXTURES / "chroma")
    assert "rust/index/src/" in spec.scope.editable
    assert spec.scope.readonly == ["rust/*/Cargo.toml", "chromadb/", "idl/"]
    assert spec.is_editable("rust/index/src/hnsw.rs")
    assert not spec.is_editable("rust/index/Cargo.toml")
    assert not spec.is_editable("chromadb/api/client.py")
    assert any("jemalloc" in note for note in spec.profiling)
    assert spec.build.timeout_s == 900


def test_our_pyserver_target_has_local_section() -> None:
    spec = parse_target(Path(__file__).resolve().parents[2] / "targets" / "pyserver")
    assert spec.kind == "service"
    assert spec.local.run and "{port}" in spec.local.run
    assert spec.local.health == "/health"


def _write(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "t"
    folder.mkdir(exist_ok=True)
    (folder / "target.md").write_text(body)
    return folder


BASE = """# Target: t

## Source
repo: local
path: src

## Primary Metric
name: peak_rss_mb
direction: lower
unit: MB
"""


def test_unknown_constraint_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, BASE + "\n## Constraints\n- memory should be small\n")
    with pytest.raises(TargetSpecError, match=r"target\.md:13: constraint not understood"):
        parse_target(folder)


def test_bad_direction_names_the_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, BASE.replace("direction: lower", "direction: down"))
    with pytest.raises(TargetSpecError, match=r"target\.md:9: direction must be one of"):
        parse_target(folder)


def test_missing_primary_metric_name(tmp_path: Path) -> None:
    folder = _write(tmp_path, BASE.replace("name: peak_rss_mb\n", ""))
    with pytest.raises(TargetSpecError, match=r"needs 'name: \.\.\.'"):
        parse_target(folder)


def test_batch_kind_and_decision(tmp_path: Path) -> None:
    folder = _write(
        tmp_path,
        BASE + "\n## Local\nkind: batch\nworkload: python3 x.py\n"
        "\n## Decision\nmin_effect_pct: 2.5\n",
    )
    spec = parse_target(folder)
    assert spec.kind == "batch" and spec.min_effect_pct == 2.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "throughput_qps must not decrease by more than 10% from baseline",
            ("throughput_qps", "max_decrease_pct", 10.0),
        ),
        ("p99 must not increase by more than 5.5%", ("p99", "max_increase_pct", 5.5)),
        ("restarts must remain 0", ("restarts", "remain", 0.0)),
    ],
)
def test_constraint_sentences(text: str, expected: tuple[str, str, float]) -> None:
    g = parse_constraint(text)
    assert g is not None and (g.metric, g.rule, g.value) == expected


@pytest.mark.parametrize(
    ("path", "glob", "ok"),
    [
        ("server.py", "server.py", True),
        ("sub/server.py", "server.py", False),
        ("rust/index/src/a.rs", "rust/index/src/", True),
        ("rust/index/Cargo.toml", "rust/*/Cargo.toml", True),
        ("src/x.c", "src", True),
        ("srcx/x.c", "src", False),
    ],
)
def test_glob_matches(path: str, glob: str, ok: bool) -> None:
    assert glob_matches(path, glob) is ok


@pytest.mark.parametrize("bad", ["../../etc", "..", "a/b", "A", "-x", "", "x\x00"])
def test_names_refuse_escapes(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_name(bad)


def test_inside_refuses_escape(tmp_path: Path) -> None:
    with pytest.raises(InvalidName):
        inside(tmp_path, "../x")
    with pytest.raises(InvalidName):
        inside(tmp_path, "/etc/passwd")
    assert inside(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()


def test_unknown_target_lists_known(tmp_path: Path) -> None:
    (tmp_path / "targets" / "known").mkdir(parents=True)
    (tmp_path / "targets" / "known" / "target.md").write_text(BASE)
    with pytest.raises(TargetNotFound, match="Known targets: known"):
        Workspace(tmp_path).target_dir("nope")


# --- hostile input (issue 19): every refusal names file:line ---------------------------


@pytest.mark.parametrize(
    ("section", "line", "match"),
    [
        ("## Service\nport: inf", 13, "port: not a number"),
        ("## Service\nport: 1e400", 13, "port: '1e400' is not an integer >= 1 and <= 65535"),
        ("## Service\nport: 0", 13, "port: '0' is not an integer"),
        ("## Service\nport: 8080.5", 13, "port: '8080.5' is not an integer"),
        ("## Service\nport: ٨٠٨٠", 13, "port: not a number"),  # unicode digits
        ("## Workload\nconcurrency: inf", 13, "concurrency: not a number"),
        ("## Workload\nconcurrency: 0", 13, "concurrency: '0' is not an integer >= 1"),
        ("## Decision\nmin_effect_pct: nan", 13, "min_effect_pct: not a number"),
        ("## Decision\nmin_effect_pct: -50", 13, "min_effect_pct: '-50' is not a number >= 0"),
        ("## Decision\nmin_effect_pct: 101", 13, "min_effect_pct: .* <= 100"),
        ("## Workload\nduration: 0", 13, "duration: '0' is not a number > 0"),
        ("## Workload\nduration: 1e400s", 13, "duration: '1e400s'"),
        ("## Workload\nwarmup: -1", 13, "warmup: '-1' is not a number >= 0"),
        ("## Build\nbuild_timeout: 1e300h", 13, "build_timeout"),
        ("## Build\nincremental: yes", 13, "incremental must be one of true | false, not 'yes'"),
        ("## Local\nhealth: /h\nhealth_cmd: pg_isready", 14, "give health: .* or health_cmd:"),
        ("## Local\nhealth_cmd: a | b", 13, "health_cmd: "),
        ("## Local\nhealth_timeout: nan", 13, "health_timeout: not a duration"),
        ("## Correctness\ntests_timeout: 0", 13, "tests_timeout"),
        ("## Docker\ncpus: 0", 13, "cpus: '0' is not a number > 0"),
        ("## Constraints\n- x must remain " + "9" * 400, 13, "constraint: .* is too large"),
        ("## Correctness\nignore:\n  - " + "(" * 3000 + ")" * 3000, 14, "ignore: .*RecursionError"),
        ("## Correctness\nignore:\n  - a{99999999999}", 14, "ignore: bad regex .*OverflowError"),
        ("## Build\ndockerfile: /etc/passwd", 13, "dockerfile: .* must be a path inside"),
        ("## Workload\nscript: ../../x.sh", 13, "script: .* must be a path inside the workspace"),
        ("## Build\ndockerfile: " + "a" * 300, 13, "dockerfile: .* too long for a path"),
        ("## Local\nrun: ''", 13, "run: .* the program's name is empty"),
        ("## Local\nrun: python3 a\x00b", 13, "control character U\\+0000 at column 15"),
        ("## Local\nkind: batch\nkind: service", 14, "kind given twice in '## Local' .*line 13"),
        ("## Primary Metric\nunit: MB", 12, "'## Primary Metric' again \\(first at line 7\\)"),
    ],
)
def test_hostile_values_name_the_line(tmp_path: Path, section: str, line: int, match: str) -> None:
    folder = _write(tmp_path, BASE + "\n" + section + "\n")
    with pytest.raises(TargetSpecError, match=rf"target\.md:{line}: {match}"):
        parse_target(folder)


def test_incremental_and_health_cmd(tmp_path: Path) -> None:
    spec = parse_target(_write(tmp_path, BASE))
    assert spec.build.incremental is False and spec.local.health_cmd is None
    text = BASE + "\n## Build\nincremental: TRUE\n## Local\nhealth_cmd: pg_isready -p {port}\n"
    spec = parse_target(_write(tmp_path, text))
    assert spec.build.incremental is True
    assert spec.local.health_cmd == "pg_isready -p {port}"


def test_zero_min_effect_is_kept(tmp_path: Path) -> None:
    """0 means 'any shown change counts' (it used to become the default 1 silently)."""
    spec = parse_target(_write(tmp_path, BASE + "\n## Decision\nmin_effect_pct: 0\n"))
    assert spec.min_effect_pct == 0


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, "")
    (folder / "target.md").write_bytes(BASE.encode() + b"## Local\nrun: python3 \xff.py\n")
    with pytest.raises(TargetSpecError, match=r"target\.md:12: not UTF-8 \(byte 0xff at column 14"):
        parse_target(folder)


def test_oversize_file_is_refused_unread(tmp_path: Path) -> None:
    folder = _write(tmp_path, BASE + "## Notes\n" + "x" * 1000 + "\n")
    with (folder / "target.md").open("a") as f:
        f.truncate(40 * 1024 * 1024)  # 40 MB (sparse): refused at once, not read whole
    with pytest.raises(TargetSpecError, match=r"target\.md: over 256 KiB, not read"):
        parse_target(folder)


def test_not_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t" / "target.md").mkdir(parents=True)
    with pytest.raises(TargetSpecError, match=r"target\.md: cannot read it"):
        parse_target(tmp_path / "t")
    fifo = tmp_path / "f" / "target.md"
    fifo.parent.mkdir()
    os.mkfifo(fifo)  # must not block the server
    with pytest.raises(TargetSpecError, match=r"target\.md: not a regular file"):
        parse_target(fifo.parent)


def test_bom_and_crlf_parse(tmp_path: Path) -> None:
    folder = _write(tmp_path, "")
    (folder / "target.md").write_bytes(b"\xef\xbb\xbf" + BASE.replace("\n", "\r\n").encode())
    assert parse_target(folder).primary.name == "peak_rss_mb"


def test_a_long_unclosed_note_is_linear(tmp_path: Path) -> None:
    """'- ((((...' without ')': the note stripper was a quadratic regex (91 s at 250 KB)."""
    folder = _write(tmp_path, BASE + "\n## Scope\neditable:\n  - " + "(" * 250_000 + "\n")
    assert parse_target(folder).scope.editable == ["(" * 250_000]


def test_errors_do_not_echo_a_whole_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, BASE + "\n## Local\nrun: a | " + "b" * 100_000 + "\n")
    with pytest.raises(TargetSpecError) as caught:
        parse_target(folder)
    assert len(str(caught.value)) < 1000


def test_fetches_lists_hosts_and_rejects_urls(tmp_path: Path) -> None:
    """`## Build fetches:` is a comma-separated host list; a URL or a shell word is refused."""
    text = BASE + "\n## Build\nfetches: static.crates.io, github.com:443\n"
    assert parse_target(_write(tmp_path, text)).build.fetches == [
        "static.crates.io", "github.com:443"
    ]
    for bad in ("https://github.com/x", "a.com; rm -rf /"):
        with pytest.raises(TargetSpecError, match=r"target.md:13: fetches: .* not a host"):
            parse_target(_write(tmp_path, BASE + f"\n## Build\nfetches: {bad}\n"))
