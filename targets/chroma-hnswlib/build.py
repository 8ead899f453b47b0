#!/usr/bin/env python3
"""Build chroma-hnswlib 0.7.6 in the current tree (its sdist) for chromadb 0.6.3.

chromadb 0.6.3 and its dependencies, with numpy and pybind11 (hnswlib's build
dependencies), are installed once with pip --target into
$AUTOOPT_CACHE/chroma/hnswlib-deps-<python>-<hash> (default ~/.cache/autoopt), without the
chroma-hnswlib wheel pip brings along, and linked from the tree as .deps; then the extension
is compiled in place (`setup.py build_ext --inplace`: -O3 -march=native -fopenmp from
setup.py, plus -g for file:line in native profiles), about 30 s. A second build reuses the
folder; a patch to hnswlib/*.h or python_bindings/ recompiles the one extension.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = ["chromadb==0.6.3", "numpy>=1.22.5", "pybind11>=2.0", "setuptools>=42"]


def cache_root() -> Path:
    base = os.environ.get("AUTOOPT_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoopt"


def install(requirements: list[str], name: str) -> Path:
    """A folder holding `requirements` but not chroma-hnswlib, made once per list and Python."""
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
            for built in [*tmp.glob("hnswlib*.so"), *tmp.glob("chroma_hnswlib*")]:
                shutil.rmtree(built) if built.is_dir() else built.unlink()  # the tree's, not pip's
            (tmp / ".complete").write_text("\n".join(requirements) + "\n")
            shutil.rmtree(deps, ignore_errors=True)
            tmp.rename(deps)
    return deps


def main() -> None:
    tree = Path.cwd()
    if not (tree / "hnswlib" / "hnswalg.h").is_file():
        sys.exit(f"{tree} is not chroma-hnswlib's source tree (no hnswlib/hnswalg.h)")
    deps = install(REQUIREMENTS, "hnswlib-deps")
    dot = tree / ".deps"
    if dot.is_symlink() or dot.exists():
        dot.unlink()
    dot.symlink_to(deps)
    env = {**os.environ, "PYTHONPATH": str(deps), "CFLAGS": "-g -fno-omit-frame-pointer"}
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"build_ext failed:\n{(done.stderr or done.stdout)[-3000:]}")
    built = sorted(tree.glob("hnswlib*.so"))
    if not built:
        sys.exit("build_ext made no hnswlib*.so")
    print(f"built {built[0].name} for chromadb 0.6.3 from {deps}")


if __name__ == "__main__":
    main()
