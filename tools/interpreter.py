"""The one Python interpreter of a target: decided once, used by build, run_ab, every
profiler and the recorded scripts.

target.md may name it (`## Local` `python: python3.12` or a path); the default is `python3`
on the PATH the workload sees. A profiler that must run inside that interpreter (memray) is
imported from it, or from a folder installed beside it for its version; never from another
interpreter.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from autoopt.tools.errors import ProfilerUnavailable, TargetSpecError
from autoopt.tools.process import base_env
from autoopt.tools.state import locked

_PROBE = "import sys; print(sys.executable); print(sys.version.split()[0])"


class Interpreter(BaseModel):
    """A Python interpreter as it reports itself."""

    path: str
    version: str

    @property
    def tag(self) -> str:
        """major.minor, e.g. 3.11."""
        return ".".join(self.version.split(".")[:2])

    def describe(self) -> str:
        return f"{self.path} (Python {self.version})"


def find(name: str | None) -> Interpreter:
    """The interpreter `name` (default python3) names on the workload's PATH."""
    return _find(name or "python3", base_env()["PATH"])


@functools.lru_cache(maxsize=32)
def _find(name: str, path: str) -> Interpreter:
    exe = shutil.which(name, path=path)
    if exe is None:
        raise TargetSpecError(
            f"no Python interpreter {name!r} on the PATH the workload sees ({path}); set "
            "`python:` in target.md's ## Local to an interpreter that exists"
        )
    try:
        proc = subprocess.run(
            [exe, "-c", _PROBE], capture_output=True, text=True, timeout=30, env=base_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetSpecError(f"the Python interpreter {exe} does not start: {exc}") from exc
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) < 2:
        raise TargetSpecError(
            f"{exe} is not a working Python interpreter (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-300:]}"
        )
    return Interpreter(path=lines[0] or exe, version=lines[1])


def cache_dir() -> Path:
    """Where profilers installed beside an interpreter live (shared by workspaces)."""
    base = os.environ.get("AUTOOPT_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "autoopt" / "python"


def memray_env(python: Interpreter, cache: Path | None = None) -> dict[str, str]:
    """The variables under which `python -m memray` runs: none when the interpreter has
    memray, else PYTHONPATH to a folder with memray installed for its version (made once
    under `cache`, the same memray version as the server's, so the server reads its files).
    ProfilerUnavailable says why when neither works."""
    if _imports(python.path, "memray", {}):
        return {}
    version = importlib.metadata.version("memray")
    cache = cache or cache_dir()
    folder = cache / f"memray-{version}-py{python.tag}"
    env = {"PYTHONPATH": str(folder)}
    with locked(cache / f".{folder.name}.lock"):
        if not _imports(python.path, "memray", env):
            _install(folder, version, python)
    if not _imports(python.path, "memray", env):
        raise ProfilerUnavailable(
            f"memray {version} was installed into {folder} for Python {python.tag}, but "
            f"{python.path} cannot import it from there; install memray into that "
            f"interpreter ({python.path} -m pip install memray=={version}) or use "
            "tool='tracemalloc'"
        )
    return env


def _imports(python: str, module: str, env: dict[str, str]) -> bool:
    proc = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, env=base_env(env), timeout=60
    )
    return proc.returncode == 0


def _install(folder: Path, version: str, python: Interpreter) -> None:
    """pip install memray==version --target folder, for the interpreter's version."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(tmp), "--python-version", python.tag, "--only-binary=:all:",
        f"memray=={version}",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ProfilerUnavailable(
            f"{python.describe()} has no memray, and installing memray=={version} for it "
            f"failed: {proc.stderr.strip()[-400:]}. Install memray into that interpreter, "
            "or use tool='tracemalloc'"
        )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
