"""The profile model every profiler produces: interned frames, weighted stacks, metadata.

A profile is a set of stacks (root..leaf frame ids into `frames`), each with a value in
one unit: bytes live at the heap peak (memray, heaptrack), bytes near the peak
(tracemalloc), bytes allocated, or CPU samples (py-spy, perf). The same model will hold
ClickHouse trace_log stacks. Profiles are stored as JSON (`<label>-profile.json`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from autoopt.tools.journal import Step

Kind = Literal["memory", "cpu", "plan"]  # plan: a SQL plan or statements (tools/pgplan.py)
Unit = Literal["bytes", "samples", "ms"]
Overhead = Literal["none", "low", "moderate", "high"]

UNRESOLVED_NAMES = ("[unknown]", "??", "<unknown>", "<unresolved function>")


class Frame(BaseModel):
    """One stack frame: a function, and where known its file, line and binary."""

    name: str
    file: str | None = None
    line: int | None = None
    module: str | None = Field(None, description="the binary or shared object (native)")
    symbolized: bool = True
    editable: bool = Field(False, description="in the target's editable scope")

    @property
    def short_file(self) -> str | None:
        """A relative path (tree, site-packages, stdlib) as it is; an absolute one by name."""
        if not self.file:
            return None
        return os.path.basename(self.file) if self.file.startswith("/") else self.file

    @property
    def qualname(self) -> str:
        """module.Class.method for a Python frame (the module from its relative path)."""
        file = self.short_file or ""
        if not file.endswith(".py"):
            return self.name
        module = file.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        return f"{module}.{self.name}"

    @property
    def label(self) -> str:
        """`name (file:line)`, the folded-stack spelling (no ';' inside)."""
        where = self.short_file or (os.path.basename(self.module) if self.module else None)
        if where and self.line:
            where = f"{where}:{self.line}"
        text = f"{self.name} ({where})" if where else self.name
        return text.replace(";", ":")

    @property
    def key(self) -> str:
        """Identity across revisions: function and file, not the line (patches move lines)."""
        where = self.short_file or (os.path.basename(self.module) if self.module else "")
        return f"{self.name} ({where})" if where else self.name


class Stack(BaseModel):
    """One distinct call path and its value."""

    frames: list[int] = Field(description="indices into Profile.frames, root first")
    value: float
    count: int | None = Field(None, description="allocations or samples merged into it")


class MemoryReadings(BaseModel):
    """What /proc (or wait4 for a batch process) says, independent of the profiler."""

    vm_hwm_mb: float | None = Field(None, description="peak RSS (VmHWM) during the workload")
    vm_rss_mb: float | None = Field(None, description="RSS after the workload")
    smaps: dict[str, float] = Field(default_factory=dict, description="smaps_rollup, MiB")
    peak_reset: bool = Field(False, description="VmHWM was reset (clear_refs) before the workload")
    source: str = Field("", description="where the numbers come from")


class Peak(BaseModel):
    """When the profiler's heap peaked, and the process's RSS then (the same run)."""

    heap_bytes: float | None = Field(None, description="the profiler's own peak")
    t_s: float | None = Field(None, description="when, since the recording started")
    span_s: float | None = Field(None, description="how long the recording ran")
    rss_mb: float | None = Field(None, description="RSS at that moment")
    start_rss_mb: float | None = Field(None, description="RSS when the recording started")
    how: str = ""


class Point(BaseModel):
    """One sample of the growth view."""

    t_s: float
    rss_mb: float | None = None
    heap_mb: float | None = None


class Profile(BaseModel):
    """A stored profile."""

    version: int = 1
    kind: Kind
    label: str
    target: str
    env: str
    revision: str | None = Field(None, description="the built tree's commit")
    base: str | None = None
    patch_sha256: str | None = None
    workload: str | None = Field(None, description="the workload file or command that ran")
    program: str | None = Field(None, description="the profiled program's command, as it ran")
    interpreter: str | None = Field(None, description="its Python: path (version)")
    tool: str = Field(description="the profiler that produced the stacks")
    measure: str = Field(description="what a value means, e.g. 'bytes live at the heap peak'")
    unit: Unit
    total: float = Field(description="the sum over all stacks (the peak, or all samples)")
    frames: list[Frame] = Field(default_factory=list)
    stacks: list[Stack] = Field(default_factory=list)
    overhead: Overhead = "low"
    overhead_note: str = ""
    unsymbolized_frames: int = Field(0, description="distinct frames with no function name")
    sample_rate_hz: float | None = None
    memory: MemoryReadings | None = None
    mode: str | None = Field(None, description="how bytes are attributed to stacks")
    granularity_bytes: float = Field(0, description="changes below this are attribution noise")
    peak: Peak | None = None
    growth: list[Point] = Field(default_factory=list, description="memory over the run")
    workload_s: float | None = Field(None, description="wall time of the profiled workload")
    workload_metrics: dict[str, float] = Field(default_factory=dict)
    complete: bool = True
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    raw_files: list[str] = Field(default_factory=list, description="the profiler's own output")
    steps: list[Step] = Field(default_factory=list)
    created: float = Field(default_factory=time.time)

    def stack_frames(self, stack: Stack) -> list[Frame]:
        return [self.frames[i] for i in stack.frames]


class ProfileBuilder:
    """Interns frames and merges identical stacks while a parser feeds it."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._frame_ids: dict[tuple[str, str | None, int | None, str | None], int] = {}
        self._stacks: dict[tuple[int, ...], Stack] = {}

    def frame_id(self, frame: Frame) -> int:
        key = (frame.name, frame.file, frame.line, frame.module)
        fid = self._frame_ids.get(key)
        if fid is None:
            fid = self._frame_ids[key] = len(self.frames)
            self.frames.append(frame)
        return fid

    def add(self, frames: Sequence[Frame], value: float, count: int | None = None) -> None:
        """Add a stack given root first; identical stacks are summed."""
        if value <= 0 and not count:
            return
        ids = tuple(self.frame_id(f) for f in frames)
        stack = self._stacks.get(ids)
        if stack is None:
            self._stacks[ids] = Stack(frames=list(ids), value=value, count=count)
        else:
            stack.value += value
            if count is not None:
                stack.count = (stack.count or 0) + count

    @property
    def stacks(self) -> list[Stack]:
        return sorted(self._stacks.values(), key=lambda s: -s.value)

    @property
    def total(self) -> float:
        return sum(s.value for s in self._stacks.values())

    @property
    def unsymbolized(self) -> int:
        return sum(1 for f in self.frames if not f.symbolized)


def unresolved(name: str) -> bool:
    """A frame name that is only an address or a placeholder."""
    return not name or name in UNRESOLVED_NAMES or name.startswith("0x")


def relativize(frames: Iterable[Frame], tree: str | None) -> list[Frame]:
    """Paths below the built tree become relative, so two builds' frames compare equal."""
    if not tree:
        return list(frames)
    prefix = tree.rstrip("/") + "/"
    out = []
    for f in frames:
        if f.file and f.file.startswith(prefix):
            f = f.model_copy(update={"file": f.file[len(prefix):]})
        if f.module and f.module.startswith(prefix):
            f = f.model_copy(update={"module": f.module[len(prefix):]})
        out.append(f)
    return out


def from_main(frames: list[Frame]) -> list[Frame]:
    """A native stack (root first) from `main` on: the C runtime's frames above it dropped."""
    mains = [i for i, f in enumerate(frames) if f.name == "main"]
    return frames[mains[0] :] if mains else frames


def human_bytes(value: float) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_value(value: float, unit: Unit) -> str:
    if unit == "ms":
        return f"{value:.1f} ms"
    return human_bytes(value) if unit == "bytes" else f"{value:.0f} samples"
