#!/usr/bin/env python3
"""Serve the chromadb tree in the cwd: chromadb's own Python server (chromadb.app, FastAPI
under uvicorn, one process) on 127.0.0.1:PORT, in memory (not persistent), telemetry off.

Usage: serve.py PORT. The tree comes first on sys.path, then its .deps (build.py's
dependency folder), so the server runs the tree's code, not an installed chromadb.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

tree = Path.cwd()
if not (tree / ".deps").is_dir():
    sys.exit(f"{tree} has no .deps: build it first (build.py)")
sys.path[:0] = [str(tree), str(tree / ".deps")]
os.environ["ANONYMIZED_TELEMETRY"] = "FALSE"
os.environ["IS_PERSISTENT"] = "FALSE"

import uvicorn  # noqa: E402 - from .deps

uvicorn.run("chromadb.app:app", host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
