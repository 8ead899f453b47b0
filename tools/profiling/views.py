"""Views of a profile: top-N functions (self and total), top paths, diffs, exports."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, Field

from autoopt.tools.profiling.model import Frame, Profile, Unit, human_value

PATH_FRAMES = 12  # frames shown per path in the text views (leaf side)


class TopEntry(BaseModel):
    """One function: its own value (as the leaf) and its inclusive value."""

    function: str = Field(description="name (file:line) of its heaviest occurrence")
    key: str = Field(description="name (file): the identity used across profiles")
    self_value: float
    self_pct: float
    total_value: float
    total_pct: float


class PathEntry(BaseModel):
    """One call path (recursion collapsed, lines ignored) and its value."""

    rank: int
    value: float
    pct: float
    stacks: int = Field(description="distinct stacks merged into this path")
    count: int | None = Field(None, description="allocations or samples")
    frames: list[str] = Field(description="root..leaf, name (file:line)")
    key: str = Field(description="the path identity used by diffs")


class DiffEntry(BaseModel):
    """A path or function whose value changed between two profiles."""

    key: str
    frames: list[str] = Field(default_factory=list, description="root..leaf (paths only)")
    before: float
    after: float
    delta: float = Field(description="after - before (signed)")
    delta_pct_of_before_total: float
    change: Literal["grown", "shrunk", "appeared", "disappeared"]


class ProfileDiff(BaseModel):
    """What changed from `before` to `after` (same unit)."""

    target: str
    env: str
    before: str
    after: str
    unit: Unit
    measure: str
    before_total: float
    after_total: float
    delta_total: float
    delta_total_pct: float | None
    paths: list[DiffEntry] = Field(description="by |delta|, largest first")
    functions: list[DiffEntry] = Field(description="inclusive values, by |delta|")
    counts: dict[str, int] = Field(description="paths grown / shrunk / appeared / disappeared")
    text: str
    warnings: list[str] = Field(default_factory=list)


def _pct(value: float, total: float) -> float:
    return round(100.0 * value / total, 2) if total else 0.0


def top_functions(profile: Profile, n: int = 10, by: Literal["self", "total"] = "self"
                  ) -> list[TopEntry]:
    """Functions by their own (leaf) value or by inclusive value, with % of the total."""
    self_v: dict[str, float] = defaultdict(float)
    total_v: dict[str, float] = defaultdict(float)
    best: dict[str, tuple[float, str]] = {}
    for stack in profile.stacks:
        frames = profile.stack_frames(stack)
        if not frames:
            continue
        self_v[frames[-1].key] += stack.value
        for f in frames:
            if best.get(f.key, (-1.0, ""))[0] < stack.value:
                best[f.key] = (stack.value, f.label)
        for key in {f.key for f in frames}:
            total_v[key] += stack.value
    chosen = self_v if by == "self" else total_v
    keys = sorted(chosen, key=lambda k: (-chosen[k], k))[:n]
    t = profile.total
    return [TopEntry(function=best[k][1], key=k, self_value=self_v.get(k, 0.0),
                     self_pct=_pct(self_v.get(k, 0.0), t), total_value=total_v[k],
                     total_pct=_pct(total_v[k], t)) for k in keys]


def collapse(frames: list[Frame]) -> list[Frame]:
    """Drop every frame whose function already appears nearer the root (recursion), so a
    recursive deepcopy is one path whatever its depth."""
    seen: set[str] = set()
    out: list[Frame] = []
    for f in frames:
        if f.key not in seen:
            seen.add(f.key)
            out.append(f)
    return out


def path_values(profile: Profile) -> dict[str, tuple[float, int, int | None, list[str]]]:
    """key -> (value, stacks merged, count, labels of the heaviest stack's frames)."""
    acc: dict[str, list[Any]] = {}
    for stack in profile.stacks:
        frames = collapse(profile.stack_frames(stack))
        key = ";".join(f.key for f in frames)
        entry = acc.get(key)
        if entry is None:
            acc[key] = [stack.value, 1, stack.count, [f.label for f in frames], stack.value]
            continue
        entry[0] += stack.value
        entry[1] += 1
        if stack.count is not None:
            entry[2] = (entry[2] or 0) + stack.count
        if stack.value > entry[4]:
            entry[3], entry[4] = [f.label for f in frames], stack.value
    return {k: (v[0], v[1], v[2], v[3]) for k, v in acc.items()}


def top_paths(profile: Profile, n: int = 10) -> list[PathEntry]:
    """The heaviest call paths (the methodology's top-10 allocation paths)."""
    values = path_values(profile)
    keys = sorted(values, key=lambda k: (-values[k][0], k))[:n]
    return [PathEntry(rank=i + 1, value=values[k][0], pct=_pct(values[k][0], profile.total),
                      stacks=values[k][1], count=values[k][2], frames=values[k][3], key=k)
            for i, k in enumerate(keys)]


def _frames_text(frames: list[str], indent: str = "    ") -> list[str]:
    shown = frames[-PATH_FRAMES:]
    lines = [f"{indent}... {len(frames) - len(shown)} frames nearer the root"] \
        if len(shown) < len(frames) else []
    lines += [f"{indent}{'  ' * i}{label}" for i, label in enumerate(shown)]
    return lines


def header(profile: Profile) -> str:
    rev = (profile.revision or "?")[:12]
    head = (f"# {profile.target} / {profile.env} / {profile.label}: {profile.measure} "
            f"({profile.tool}), total {human_value(profile.total, profile.unit)}\n"
            f"# revision {rev}, workload {profile.workload or '?'}")
    if profile.program:
        head += f"\n# program: {profile.program}"
    if profile.interpreter:
        head += f"\n# python: {profile.interpreter}"
    if profile.memory and profile.memory.vm_hwm_mb is not None:
        rss = profile.memory.vm_rss_mb
        head += (f"\n# VmHWM {profile.memory.vm_hwm_mb:.1f} MiB"
                 + (f", VmRSS {rss:.1f} MiB" if rss is not None else "")
                 + f" ({profile.memory.source})")
    if not profile.complete:
        head += f"\n# INCOMPLETE: {profile.error}"
    return head


def table_text(entries: list[TopEntry], unit: Unit, by: str) -> str:
    lines = [f"top functions by {by}:",
             f"  {'self':>12} {'self%':>6} {'total':>12} {'total%':>6}  function"]
    for e in entries:
        lines.append(f"  {human_value(e.self_value, unit):>12} {e.self_pct:>6.1f} "
                     f"{human_value(e.total_value, unit):>12} {e.total_pct:>6.1f}  {e.function}")
    return "\n".join(lines)


def stacks_text(profile: Profile, n: int = 10) -> str:
    """`<label>-stacks.txt`: the top-N paths with values and %, then the top functions."""
    out = [header(profile), ""]
    for p in top_paths(profile, n):
        count = f", {p.count} allocations" if p.count is not None and profile.unit == "bytes" \
            else ""
        out.append(f"#{p.rank} {human_value(p.value, profile.unit)} = {p.pct:.1f}% of total "
                   f"({p.stacks} stacks{count}); root..leaf:")
        out += _frames_text(p.frames)
        out.append("")
    out.append(table_text(top_functions(profile, n, "self"), profile.unit, "self (as leaf)"))
    out.append("")
    out.append(table_text(top_functions(profile, n, "total"), profile.unit, "total (inclusive)"))
    return "\n".join(out) + "\n"


def _change(before: float, after: float) -> Literal["grown", "shrunk", "appeared", "disappeared"]:
    if before <= 0:
        return "appeared"
    if after <= 0:
        return "disappeared"
    return "grown" if after > before else "shrunk"


def _function_totals(profile: Profile) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for stack in profile.stacks:
        for key in {f.key for f in profile.stack_frames(stack)}:
            totals[key] += stack.value
    return totals


def diff(before: Profile, after: Profile, n: int = 20) -> ProfileDiff:
    """Paths and functions that grew, shrank, appeared or disappeared (signed values)."""
    warnings = []
    if before.unit != after.unit or before.kind != after.kind:
        from autoopt.tools.errors import InvalidName

        raise InvalidName(f"cannot diff a {before.kind} profile in {before.unit} with a "
                          f"{after.kind} profile in {after.unit}")
    if before.tool != after.tool:
        warnings.append(f"different profilers ({before.tool} vs {after.tool}): values may "
                        "not be comparable")
    if not (before.complete and after.complete):
        warnings.append("at least one profile is incomplete (the target exited mid-profile)")
    if before.workload != after.workload:
        warnings.append(f"different workloads ({before.workload} vs {after.workload})")
    pb, pa = path_values(before), path_values(after)
    paths = []
    for key in set(pb) | set(pa):
        b, a = pb.get(key, (0.0, 0, None, []))[0], pa.get(key, (0.0, 0, None, []))[0]
        if a == b:
            continue
        frames = (pa.get(key) or pb[key])[3]
        paths.append(DiffEntry(key=key, frames=frames, before=b, after=a, delta=a - b,
                               delta_pct_of_before_total=_pct(a - b, before.total),
                               change=_change(b, a)))
    paths.sort(key=lambda e: (-abs(e.delta), e.key))
    counts = {c: sum(1 for e in paths if e.change == c)
              for c in ("grown", "shrunk", "appeared", "disappeared")}
    fb, fa = _function_totals(before), _function_totals(after)
    funcs = [DiffEntry(key=k, before=fb.get(k, 0.0), after=fa.get(k, 0.0),
                       delta=fa.get(k, 0.0) - fb.get(k, 0.0),
                       delta_pct_of_before_total=_pct(fa.get(k, 0.0) - fb.get(k, 0.0),
                                                      before.total),
                       change=_change(fb.get(k, 0.0), fa.get(k, 0.0)))
             for k in set(fb) | set(fa) if fb.get(k, 0.0) != fa.get(k, 0.0)]
    funcs.sort(key=lambda e: (-abs(e.delta), e.key))
    delta_total = after.total - before.total
    result = ProfileDiff(
        target=after.target, env=after.env, before=before.label, after=after.label,
        unit=after.unit, measure=after.measure, before_total=before.total,
        after_total=after.total, delta_total=delta_total,
        delta_total_pct=_pct(delta_total, before.total) if before.total else None,
        paths=paths[:n], functions=funcs[:n], counts=counts, text="", warnings=warnings)
    result.text = diff_text(result)
    return result


def _signed(value: float, unit: Unit) -> str:
    return ("+" if value >= 0 else "-") + human_value(abs(value), unit)


def diff_text(d: ProfileDiff) -> str:
    out = [f"# {d.target} / {d.env}: {d.before} -> {d.after} ({d.measure})",
           f"# total {human_value(d.before_total, d.unit)} -> "
           f"{human_value(d.after_total, d.unit)} ({_signed(d.delta_total, d.unit)}"
           + (f", {d.delta_total_pct:+.1f}%)" if d.delta_total_pct is not None else ")")]
    out += [f"# warning: {w}" for w in d.warnings]
    out.append("")
    out.append("paths (recursion collapsed; largest change first):")
    for e in d.paths[:10]:
        out.append(f"  {e.change:<11} {_signed(e.delta, d.unit):>12} "
                   f"({human_value(e.before, d.unit)} -> {human_value(e.after, d.unit)})")
        out += _frames_text(e.frames, indent="      ")
    out.append("")
    out.append("functions (inclusive):")
    for e in d.functions[:10]:
        out.append(f"  {e.change:<11} {_signed(e.delta, d.unit):>12} "
                   f"({human_value(e.before, d.unit)} -> {human_value(e.after, d.unit)})  "
                   f"{e.key}")
    return "\n".join(out) + "\n"


def folded(profile: Profile) -> str:
    """Brendan Gregg's folded stacks: `root;...;leaf value` (values rounded to integers)."""
    lines = []
    for stack in profile.stacks:
        names = ";".join(f.label for f in profile.stack_frames(stack)) or "[no frames]"
        lines.append(f"{names} {round(stack.value)}")
    return "\n".join(lines) + ("\n" if lines else "")


def speedscope(profile: Profile) -> dict[str, Any]:
    """A speedscope file (sampled profile; weights are bytes or samples)."""
    frames = [{"name": f.name, **({"file": f.file} if f.file else {}),
               **({"line": f.line} if f.line else {})} for f in profile.frames]
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [{
            "type": "sampled",
            "name": f"{profile.target} {profile.label}: {profile.measure} ({profile.tool})",
            "unit": "bytes" if profile.unit == "bytes" else "none",
            "startValue": 0,
            "endValue": profile.total,
            "samples": [s.frames for s in profile.stacks],
            "weights": [s.value for s in profile.stacks],
        }],
        "name": f"{profile.target} {profile.label}",
        "activeProfileIndex": 0,
        "exporter": "autoopt",
    }


def speedscope_json(profile: Profile) -> str:
    return json.dumps(speedscope(profile))
