#!/usr/bin/env python3
"""Build chromadb 1.5.9 in the current tree (the wheel's files: chromadb/, the read-only
chromadb_rust_bindings/ and the dist-info).

Nothing compiles: the Python layer is byte-compiled (a syntax error fails the build) and its
dependencies, those the dist-info requires plus EXTRA (what the Python server,
chromadb.app, needs: dev extras since 1.0), are installed once with pip --target into
$AUTOOPT_CACHE/chroma/deps-<python>-<hash of the list> (default ~/.cache/autoopt) and linked
from the tree as .deps, so a second build takes seconds. serve.py puts the tree, then .deps,
on sys.path.
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import PathDistribution
from pathlib import Path

# chromadb.app (the Python server) needs these: dev extras since 1.0
EXTRA = ["fastapi>=0.115.9", "opentelemetry-instrumentation-fastapi>=0.41b0"]


def cache_root() -> Path:
    base = os.environ.get("AUTOOPT_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoopt"


def install(requirements: list[str], name: str) -> Path:
    """A folder holding `requirements`, installed once per list and Python version."""
    tag = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    key = hashlib.sha256("\n".join([tag, *requirements]).encode()).hexdigest()[:12]
    root = cache_root() / "chroma"
    deps = root / f"{name}-{tag}-{key}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two arms building at once install once
        if not (deps / ".complete").exists():
            tmp = deps.with_name(deps.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"installing {len(requirements)} requirements into {deps}", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-warn-conflicts",
                            "--target", str(tmp), *requirements], check=True)
            (tmp / ".complete").write_text("\n".join(requirements) + "\n")
            shutil.rmtree(deps, ignore_errors=True)
            tmp.rename(deps)
    os.utime(deps)  # the newest folder is the one workload.py falls back on
    return deps


def link(tree: Path, deps: Path) -> None:
    dot = tree / ".deps"
    if dot.is_symlink() or dot.exists():
        dot.unlink()
    dot.symlink_to(deps)


def main() -> None:
    tree = Path.cwd()
    info = sorted(tree.glob("chromadb-*.dist-info"))
    if not info or not (tree / "chromadb").is_dir():
        sys.exit(f"{tree} is not chromadb's wheel tree (no chromadb/ and chromadb-*.dist-info)")
    requires = PathDistribution(info[0]).requires or []
    deps = install([r for r in requires if "extra ==" not in r] + EXTRA, "deps")
    link(tree, deps)
    if not compileall.compile_dir(tree / "chromadb", quiet=1):
        sys.exit("the chromadb Python layer does not compile")
    print(f"chromadb tree {tree} with dependencies from {deps}")


if __name__ == "__main__":
    main()
