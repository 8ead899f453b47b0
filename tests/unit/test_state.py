"""State files: atomic writes that people and scripts can read."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from autoopt.tools.state import load_json, load_state, write_atomic


def test_write_atomic_is_readable_by_all_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "record.json"
    write_atomic(path, '{"a": 1}')
    write_atomic(path, '{"a": 2}')
    assert load_json(path) == {"a": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone would give 0600
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


@pytest.mark.parametrize(
    "raw", [b'{"a": 1', b"\xff\xfe\x00garbage", b"[" * 100_000, b'{"a": 1}', b""]
)
def test_a_corrupt_file_reads_as_missing_and_is_moved_aside(
    tmp_path: Path, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Truncated, not UTF-8, nested past the recursion limit, or not the record expected:
    the default, a warning, and the bytes kept beside it; the next write starts afresh."""
    path = tmp_path / "deployments.json"
    path.write_bytes(raw)
    with caplog.at_level(logging.WARNING, "autoopt"):
        assert load_state(path, lambda d: {k: int(v) for k, v in d["x"].items()}, {}) == {}
    [aside] = tmp_path.glob("deployments.json.corrupt-*")
    assert aside.read_bytes() == raw and not path.exists()
    assert "corrupt" in caplog.text and aside.name in caplog.text
    write_atomic(path, '{"x": {}}')
    assert load_json(path) == {"x": {}}


def test_a_corrupt_record_can_be_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"id": ')
    assert load_json(path, "missing", set_aside=False) == "missing"
    assert path.read_text() == '{"id": ' and len(list(tmp_path.iterdir())) == 1


def test_a_directory_in_place_of_a_state_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "deployments.json" / "junk").mkdir(parents=True)
    assert load_json(tmp_path / "deployments.json", {}) == {}
    [aside] = tmp_path.glob("deployments.json.corrupt-*")
    assert (aside / "junk").is_dir() and not (tmp_path / "deployments.json").exists()
