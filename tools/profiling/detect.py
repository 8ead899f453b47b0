"""Which profilers exist here, and what kind of program a target runs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Literal, NamedTuple

from autoopt.tools.command import is_python_name, parse_command
from autoopt.tools.errors import ProfilerUnavailable

# tool -> (executable, Debian package, what it is for)
NATIVE_TOOLS = {
    "heaptrack": ("heaptrack_print", "heaptrack", "native heap profiles at the peak"),
    "perf": ("perf", "linux-perf", "native CPU profiles"),
    "gdb": ("gdb", "gdb", "attaching memray to a running Python process"),
    "addr2line": ("addr2line", "binutils", "symbolizing jemalloc heap dumps"),
}
HEAPTRACK_PRELOAD = "/usr/lib/heaptrack/libheaptrack_preload.so"
HEAPTRACK_INTERPRET = "/usr/lib/heaptrack/libexec/heaptrack_interpret"


def require(tool: str) -> str:
    """The tool's executable path, or ProfilerUnavailable naming the Debian package."""
    exe, package, purpose = NATIVE_TOOLS[tool]
    path = shutil.which(exe)
    if path is None:
        raise ProfilerUnavailable(
            f"{tool} is not installed ({purpose}): install the Debian package {package} "
            f"(`apt-get install -y {package}`), or choose another tool"
        )
    if tool == "heaptrack":
        for helper in (HEAPTRACK_PRELOAD, HEAPTRACK_INTERPRET):
            if not Path(helper).exists():
                raise ProfilerUnavailable(
                    f"heaptrack is incomplete: {helper} is missing; reinstall the Debian "
                    "package heaptrack (`apt-get install --reinstall -y heaptrack`)"
                )
    return path


def memray_reason() -> str | None:
    """None when memray can run here and the server can read its files, else why not."""
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
    """The command starts a Python interpreter (python, python3, python3.11, a path to one),
    after any VAR=value prefix."""
    if not command:
        return False
    try:
        return is_python_name(parse_command(command).argv[0])
    except ValueError:
        return False


def split_python(command: str) -> tuple[dict[str, str], str, list[str]]:
    """(the variables it sets, the interpreter, the arguments after it) of a Python command."""
    cmd = parse_command(command)
    return cmd.env, cmd.argv[0], cmd.argv[1:]


def program_path(command: str, cwd: Path) -> Path | None:
    """The executable a command starts, resolved like the shell would (cwd for ./x)."""
    exe = parse_command(command).argv[0]
    if "/" in exe:
        path = (cwd / exe) if not os.path.isabs(exe) else Path(exe)
        return path if path.exists() else None
    found = shutil.which(exe)
    return Path(found) if found else None


class JemallocUse(NamedTuple):
    """How a program gets jemalloc, and the configuration variable that jemalloc reads."""

    linkage: Literal["dynamic", "static", "preload"]
    variable: str


_JEMALLOC_STATIC = (b"<jemalloc>:", b"je_mallctl", b"_rjem_mallctl", b"jemalloc_version")
_LIB_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/lib",
    "/usr/lib",
    "/lib",
)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes() if path.is_file() else b""
    except OSError:
        return b""


def _conf_variable(data: bytes) -> str:
    """The configuration variable a jemalloc build reads: MALLOC_CONF, or the prefixed one
    of a build with a symbol prefix (je_ -> JE_MALLOC_CONF, _rjem_ -> _RJEM_MALLOC_CONF)."""
    names = re.findall(rb"(?<![A-Za-z0-9_])([A-Z0-9_]*MALLOC_CONF)\x00", data)
    return max(names, key=len).decode() if names else "MALLOC_CONF"


def _library(soname: str, *first: Path) -> Path | None:
    """The shared object in the given folders, else in the system's library folders."""
    for folder in (*first, *map(Path, _LIB_DIRS)):
        candidate = folder / soname
        if candidate.is_file():
            return candidate
    return None


def system_jemalloc() -> Path:
    """Debian's libjemalloc.so.2 (to preload into a program that has no jemalloc of its own),
    or ProfilerUnavailable naming the package."""
    lib = _library("libjemalloc.so.2")
    if lib is None:
        raise ProfilerUnavailable(
            "jemalloc is not installed (preloaded into programs that do not use it): install "
            "the Debian package libjemalloc2 (`apt-get install -y libjemalloc2`)"
        )
    return lib


def jemalloc_use(command: str, cwd: Path) -> JemallocUse | None:
    """Whether the command's program runs on jemalloc: preloaded (LD_PRELOAD=...libjemalloc),
    linked to libjemalloc.so, or with jemalloc inside the binary; None otherwise."""
    try:
        env = parse_command(command).env
    except ValueError:
        return None
    for name, value in env.items():
        if name == "LD_PRELOAD" and "libjemalloc" in value:
            lib = next((Path(v) for v in re.split(r"[:\s]", value) if "libjemalloc" in v), None)
            return JemallocUse("preload", _conf_variable(_read(lib)) if lib else "MALLOC_CONF")
    binary = program_path(command, cwd)
    data = _read(binary) if binary else b""
    if not data:
        return None
    linked = re.search(rb"libjemalloc\.so[.0-9]*", data)
    if linked and binary is not None:
        lib = _library(linked.group().decode(), binary.parent)
        return JemallocUse("dynamic", _conf_variable(_read(lib)) if lib else "MALLOC_CONF")
    if any(marker in data for marker in _JEMALLOC_STATIC):
        return JemallocUse("static", _conf_variable(data))
    return None


_SAFE = re.compile(r"[\w@%+=:,./{}-]+")


def join_command(argv: list[str]) -> str:
    """shlex.join that leaves `{port}`-style placeholders unquoted, so the backend's
    substitution and its human-readable journal line both stay right."""
    return " ".join(a if _SAFE.fullmatch(a) else shlex.quote(a) for a in argv)
