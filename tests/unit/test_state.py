"""State files: atomic writes that people and scripts can read."""

from __future__ import annotations

import stat
from pathlib import Path

from autoopt.tools.state import load_json, write_atomic


def test_write_atomic_is_readable_by_all_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "record.json"
    write_atomic(path, '{"a": 1}')
    write_atomic(path, '{"a": 2}')
    assert load_json(path) == {"a": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone would give 0600
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]
