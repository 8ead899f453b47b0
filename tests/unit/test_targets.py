"""target.md parsing: the seed's files unchanged, our sections, and clear errors."""

from __future__ import annotations

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
