"""Small, safe file helpers: atomic JSON writes, tolerant reads and an exclusive lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

log = logging.getLogger("autoopt")
T = TypeVar("T")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; records are read by people and scripts
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_model(path: Path, model: BaseModel) -> None:
    write_atomic(path, model.model_dump_json(indent=1))


def load_json(path: Path, default: Any = None, *, set_aside: bool = True) -> Any:
    """The file's JSON; `default` when it is missing or corrupt (see load_state)."""
    return load_state(path, lambda data: data, default, set_aside=set_aside)


def load_state(
    path: Path, parse: Callable[[Any], T], default: T, *, set_aside: bool = True
) -> T:
    """parse(the file's JSON), or `default` when the file is missing. A corrupt file (not
    JSON, JSON of a shape `parse` rejects - pydantic's ValidationError, a KeyError - or a
    directory) is never fatal: it reads as missing, with a warning, and is moved aside to
    <name>.corrupt-<time>, so the next write starts afresh and the bytes are kept."""
    raw: bytes | None = None
    try:
        raw = path.read_bytes()
        return parse(json.loads(raw))
    except FileNotFoundError:
        return default
    except IsADirectoryError:
        why = "a directory"
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
    aside = path.with_name(f"{path.name}.corrupt-{datetime.now():%Y%m%dT%H%M%S.%f}")
    try:  # only what was read: a good file another process wrote since stays in place
        if set_aside and (path.is_dir() if raw is None else path.read_bytes() == raw):
            os.replace(path, aside)
            log.warning("state file %s is corrupt (%s); moved aside to %s", path, why, aside.name)
            return default
    except OSError:  # moved or removed meanwhile (another server set it aside)
        pass
    log.warning("state file %s is corrupt (%s); read as missing", path, why)
    return default


def append_locked(path: Path, text: str, *, header: str = "") -> None:
    """Append `text` (after `header` when the file is new or empty) in one write, holding an
    exclusive lock on the file itself, so concurrent appenders never lose or interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            f.write((header if f.tell() == 0 else "") + text)
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
