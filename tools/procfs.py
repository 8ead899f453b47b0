"""Memory of a live process from /proc: VmHWM, VmRSS, smaps_rollup; resetting the peak."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import BaseModel


class MemoryReading(BaseModel):
    """One reading of a process's memory, in MiB (kB / 1024, as /proc counts); the `_mb`
    names are the seed's."""

    pid: int
    peak_rss_mb: float
    rss_mb: float
    smaps: dict[str, float] = {}


def _kb_fields(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key.strip()] = float(parts[0])
    return out


def parse_status(text: str) -> dict[str, float]:
    """kB fields of /proc/<pid>/status (VmHWM, VmRSS, ...)."""
    return _kb_fields(text)


def read_memory(pid: int, *, proc: Path = Path("/proc"), with_smaps: bool = True) -> MemoryReading:
    """VmHWM and VmRSS (and the smaps_rollup breakdown) of a live process."""
    status = parse_status((proc / str(pid) / "status").read_text())
    smaps: dict[str, float] = {}
    if with_smaps:
        with contextlib.suppress(OSError):
            rollup = _kb_fields((proc / str(pid) / "smaps_rollup").read_text())
            smaps = {k: round(v / 1024, 3) for k, v in rollup.items()}
    return MemoryReading(
        pid=pid,
        peak_rss_mb=round(status.get("VmHWM", 0.0) / 1024, 3),
        rss_mb=round(status.get("VmRSS", 0.0) / 1024, 3),
        smaps=smaps,
    )


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
