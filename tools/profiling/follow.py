"""Following a workload script's process tree: each Python it starts runs under memray.

A batch workload that is a shell (or other) script starts the programs itself. Shims named
python, python3 and python3.X, first on the script's PATH, make every Python it starts by
name exec the target's interpreter under `memray run` with a capture file of its own
(`<prefix>.<pid>.bin`); exec keeps the pid, so each capture is the real program's. A
program started by an absolute path is not followed (the profile says how many were).
"""

from __future__ import annotations

import os
from pathlib import Path

from autoopt.tools.interpreter import Interpreter
from autoopt.tools.profiling.model import Frame, ProfileBuilder

_SHIM = '''\
#!{python}
"""autoopt: run this Python under memray, one capture file per process."""
import os
import sys

args, opts = sys.argv[1:], []
while args and args[0].startswith("-") and args[0] not in ("-m", "-c", "-"):
    opts.append(args.pop(0))
    if opts[-1] in ("-X", "-W", "-Q") and args:
        opts.append(args.pop(0))
env = dict(os.environ)
extra = {pythonpath!r}
if extra:
    env["PYTHONPATH"] = extra + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
python = {python!r}
if not args or args[0] == "-":  # an interactive or stdin program: run it as it is
    os.execv(python, [python, *opts, *args])
out = "{prefix}.%d.bin" % os.getpid()
with open(out[:-4] + ".cmd", "w") as f:  # the command line, for the profile's notes
    f.write(" ".join([os.path.basename(sys.argv[0]), *opts, *args]))
os.execve(python, [python, *opts, "-m", "memray", "run", *{flags!r}, "-q", "-f", "-o", out, *args],
          env)
'''


def install_shims(folder: Path, python: Interpreter, prefix: Path, env: dict[str, str],
                  flags: list[str]) -> None:
    """python, python3 and python3.X in `folder`, each running `python` under memray with
    `flags`."""
    folder.mkdir(parents=True, exist_ok=True)
    text = _SHIM.format(python=python.path, prefix=prefix, pythonpath=env.get("PYTHONPATH", ""),
                        flags=flags)
    for name in ("python", "python3", f"python{python.tag}"):
        shim = folder / name
        shim.write_text(text)
        shim.chmod(0o755)


def captures(prefix: Path) -> list[Path]:
    """The capture files the shims wrote, by pid."""
    return sorted(prefix.parent.glob(f"{prefix.name}.*.bin"), key=lambda p: p.stat().st_mtime)


def command_of(capture: Path) -> str:
    """The command line the shim saw for one capture file."""
    try:
        return capture.with_suffix(".cmd").read_text()
    except OSError:
        return "?"


def merge(
    parsed: list[tuple[ProfileBuilder, dict[str, object]]],
) -> tuple[ProfileBuilder, list[str]]:
    """One profile of several processes: each process's stacks under a `[pid N] command`
    root frame; and one line per process for the notes."""
    merged = ProfileBuilder()
    lines = []
    for builder, info in parsed:
        root = Frame(name=f"[pid {info['pid']}] {_short(str(info['command_line']))}")
        for stack in builder.stacks:
            frames = [root, *(builder.frames[i] for i in stack.frames)]
            merged.add(frames, stack.value, stack.count)
        lines.append(f"pid {info['pid']} ({_short(str(info['command_line']))}): "
                     f"peak {info['peak_memory']} bytes")
    return merged, lines


def _short(command: str, width: int = 80) -> str:
    """Paths shown by their file name, the whole cut to `width`."""
    words = [os.path.basename(w) if w.startswith("/") else w for w in command.split(" ")]
    text = " ".join(words)
    return text if len(text) <= width else text[: width - 3] + "..."
