#!/usr/bin/env python3
"""Serve chromadb 0.6.3 with the hnswlib built in the cwd: chromadb's Python server
(chromadb.app, FastAPI under uvicorn, one process) on 127.0.0.1:PORT, in memory (not
persistent), telemetry off.

Usage: serve.py PORT. The tree (its hnswlib*.so) comes first on sys.path, then .deps
(build.py's folder: chromadb 0.6.3 and its dependencies, without an hnswlib of their own).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

tree = Path.cwd()
if not (tree / ".deps").is_dir() or not list(tree.glob("hnswlib*.so")):
    sys.exit(f"{tree} has no .deps or no hnswlib*.so: build it first (build.py)")
sys.path[:0] = [str(tree), str(tree / ".deps")]
os.environ["ANONYMIZED_TELEMETRY"] = "FALSE"
os.environ["IS_PERSISTENT"] = "FALSE"

import uvicorn  # noqa: E402 - from .deps

uvicorn.run("chromadb.app:app", host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
