"""Which profilers exist here, and what kind of program a target runs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from autoopt.tools.errors import ProfilerUnavailable

# tool -> (executable, Debian package, what it is for)
NATIVE_TOOLS = {
    "heaptrack": ("heaptrack_print", "heaptrack", "native heap profiles at the peak"),
    "perf": ("perf", "linux-perf", "native CPU profiles"),
    "gdb": ("gdb", "gdb", "attaching memray to a running Python process"),
}
HEAPTRACK_PRELOAD = "/usr/lib/heaptrack/libheaptrack_preload.so"
HEAPTRACK_INTERPRET = "/usr/lib/heaptrack/libexec/heaptrack_interpret"

_PYTHON = re.compile(r"python(\d+(\.\d+)?)?$")


def require(tool: str) -> str:
    """The tool's executable path, or ProfilerUnavailable naming the Debian package."""
    exe, package, purpose = NATIVE_TOOLS[tool]
    path = shutil.which(exe)
    if path is None:
        raise ProfilerUnavailable(
            f"{tool} is not installed ({purpose}): install the Debian package {package} "
            f"(`apt-get install -y {package}`), or choose another tool")
    if tool == "heaptrack":
        for helper in (HEAPTRACK_PRELOAD, HEAPTRACK_INTERPRET):
            if not Path(helper).exists():
                raise ProfilerUnavailable(
                    f"heaptrack is incomplete: {helper} is missing; reinstall the Debian "
                    "package heaptrack (`apt-get install --reinstall -y heaptrack`)")
    return path


def memray_reason() -> str | None:
    """None when `python -m memray` can run here, else why not."""
    if not sys.platform.startswith("linux"):
        return f"memray runs on Linux only (this is {sys.platform})"
    try:
        import memray  # noqa: F401
    except ImportError as exc:
        return f"memray is not importable by {sys.executable}: {exc} (pip install memray)"
    return None


def pyspy_path() -> str:
    """py-spy's executable (installed with autoopt, next to this interpreter)."""
    candidate = Path(sys.executable).parent / "py-spy"
    path = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if path is None:
        raise ProfilerUnavailable("py-spy is not installed: pip install py-spy")
    return path


def is_python_command(command: str | None) -> bool:
    """The command starts with a Python interpreter (python, python3, python3.11, ...)."""
    if not command:
        return False
    try:
        argv = shlex.split(command)
    except ValueError:
        return False
    while argv and "=" in argv[0] and not argv[0].startswith("/"):
        argv = argv[1:]  # VAR=value prefixes
    return bool(argv) and bool(_PYTHON.fullmatch(os.path.basename(argv[0])))


def split_python(command: str) -> tuple[list[str], list[str]]:
    """(VAR=value prefixes, the arguments after the interpreter) of a Python command."""
    argv = shlex.split(command)
    env = []
    while argv and "=" in argv[0] and not argv[0].startswith("/"):
        env.append(argv.pop(0))
    return env, argv[1:]


def program_path(command: str, cwd: Path) -> Path | None:
    """The executable a command starts, resolved like the shell would (cwd for ./x)."""
    argv = shlex.split(command)
    while argv and "=" in argv[0] and not argv[0].startswith("/"):
        argv = argv[1:]
    if not argv:
        return None
    exe = argv[0]
    if "/" in exe:
        path = (cwd / exe) if not os.path.isabs(exe) else Path(exe)
        return path if path.exists() else None
    found = shutil.which(exe)
    return Path(found) if found else None


def jemalloc_linkage(binary: Path | None) -> str | None:
    """'dynamic' (links libjemalloc.so), 'static' (jemalloc symbols inside) or None."""
    if binary is None or not binary.is_file():
        return None
    try:
        data = binary.read_bytes()
    except OSError:
        return None
    if b"libjemalloc.so" in data:
        return "dynamic"
    if b"je_mallctl" in data or b"_rjem_mallctl" in data or b"jemalloc_version" in data:
        return "static"
    return None


_SAFE = re.compile(r"[\w@%+=:,./{}-]+")


def join_command(argv: list[str]) -> str:
    """shlex.join that leaves `{port}`-style placeholders unquoted, so the backend's
    substitution and its human-readable journal line both stay right."""
    return " ".join(a if _SAFE.fullmatch(a) else shlex.quote(a) for a in argv)
