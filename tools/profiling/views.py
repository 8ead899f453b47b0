"""Views of a profile: top-N functions (self and total), top paths, diffs, exports."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, Field

from autoopt.tools.profiling.model import Frame, Profile, Unit, human_bytes, human_value

PATH_FRAMES = 12  # frames shown per path in the text views (leaf side)
MIB = 1024 * 1024
OUTSIDE = "[no frame in the editable scope]"


class ScopeEntry(BaseModel):
    """The deepest frame on a stack inside the target's editable scope (the code the agent
    may change), its stacks merged; or, for a retention profile, one owner chain."""

    rank: int
    value: float
    pct: float
    function: str = Field(description="name (file:line) of its heaviest line")
    key: str
    callee: str | None = Field(None, description="what it calls outside the scope there")
    leaf: str | None = Field(None, description="where the bytes or samples land")
    text: str = Field(description="the one-line view")


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


def _deepest_editable(frames: list[Frame]) -> int | None:
    return next((i for i in range(len(frames) - 1, -1, -1) if frames[i].editable), None)


def scope(profile: Profile, n: int = 10) -> list[ScopeEntry]:
    """Stacks grouped by their deepest editable frame, heaviest first, with the external
    callee each spends in (`json.loads ... json.decoder.JSONDecoder.raw_decode`). Stacks
    with no editable frame form one entry; no entries when no frame is editable."""
    if profile.tool == "retention":
        return _owners(profile, n)
    acc: dict[str, dict[str, Any]] = {}
    any_editable = False
    for stack in profile.stacks:
        frames = profile.stack_frames(stack)
        i = _deepest_editable(frames)
        any_editable |= i is not None
        key = OUTSIDE if i is None else frames[i].key
        e = acc.setdefault(key, {"value": 0.0, "labels": defaultdict(float),
                                 "callees": defaultdict(float), "leaves": defaultdict(float)})
        e["value"] += stack.value
        e["labels"][OUTSIDE if i is None else frames[i].label] += stack.value
        callee = frames[i + 1].qualname if i is not None and i + 1 < len(frames) else ""
        e["callees"][callee] += stack.value
        below = frames and (i is None or i < len(frames) - 1)
        e["leaves"][frames[-1].qualname if below else ""] += stack.value
    if not any_editable:
        return []
    keys = sorted(acc, key=lambda k: (-acc[k]["value"], k))[:n]
    out = []
    for rank, key in enumerate(keys, 1):
        e = acc[key]
        function = _heaviest(e["labels"])
        callee, leaf = _heaviest(e["callees"]) or None, _heaviest(e["leaves"]) or None
        pct = _pct(e["value"], profile.total)
        where = ("itself" if key != OUTSIDE else "") if callee is None else f"→ {callee}"
        if leaf and leaf != callee:
            where = f"{where} … {leaf}".lstrip()
        others = len(e["callees"]) - 1
        if others > 0 and key != OUTSIDE:
            where += f" (+{others} other callee{'s' if others > 1 else ''})"
        text = (f"#{rank} {pct:.1f}% {human_value(e['value'], profile.unit)}: "
                f"{function} {where}").rstrip()
        out.append(ScopeEntry(rank=rank, value=e["value"], pct=pct,
                              function=function, key=key, callee=callee, leaf=leaf,
                              text=text))
    return out


def _heaviest(values: dict[str, float]) -> str:
    return max(values, key=lambda k: (values[k], k))


def _owners(profile: Profile, n: int) -> list[ScopeEntry]:
    """A retention profile's chains, root first: `Parser.feed: self.stack — list of dict`."""
    out = []
    for p in top_paths(profile, n):
        chain, leaf = p.frames[:-1], p.frames[-1]
        owner = (chain[0] + "".join(chain[1:])) if chain else ""
        count = f"{p.count} " if p.count else ""
        if owner:
            held = f"{owner} holds {count}{leaf}"
        else:
            held = leaf + (f" ({p.count} objects)" if p.count else "")
        text = f"#{p.rank} {p.pct:.1f}% {human_value(p.value, profile.unit)}: {held}"
        out.append(ScopeEntry(rank=p.rank, value=p.value, pct=p.pct, function=owner,
                              key=p.key, leaf=leaf, text=text))
    return out


def heap_vs_rss(profile: Profile) -> str | None:
    """The profiler's heap peak, the same run's VmHWM, the gap, and a one-line reading."""
    peak = profile.peak
    heap = peak.heap_bytes if peak and peak.heap_bytes else (
        profile.total if profile.kind == "memory" and profile.unit == "bytes" else None)
    hwm = profile.memory.vm_hwm_mb if profile.memory else None
    if not heap or hwm is None:
        return None
    heap_mb = heap / MIB
    gap = hwm - heap_mb
    start = peak.start_rss_mb if peak else None
    line = f"heap peak {heap_mb:.1f} MiB, VmHWM {hwm:.1f} MiB, gap {gap:+.1f} MiB"
    if peak and peak.rss_mb is not None:
        line += f" (RSS at the heap peak {peak.rss_mb:.1f} MiB)"
    beyond = gap - (start or 0.0)
    if gap < 0:
        reading = ("the heap exceeds RSS: memory allocated but never touched (calloc, "
                   "reserved buffers) is not resident")
    elif beyond <= max(4.0, 0.15 * heap_mb):
        reading = ("the gap is about the process at start"
                   + (f" ({start:.1f} MiB: interpreter, libraries)" if start else "")
                   + " and the profiler: a smaller heap peak should lower RSS about as much")
    else:
        reading = (f"{beyond:.1f} MiB beyond the heap"
                   + (f" and the start RSS ({start:.1f} MiB)" if start else "")
                   + ": freed memory the allocator keeps (arena fragmentation, malloc caching)"
                   ", native memory this profiler does not trace, or the profiler's own: RSS "
                   "may fall less than the heap")
    return f"{line}; {reading}"


def growth_text(profile: Profile, points: int = 8) -> str | None:
    """Memory over the run in a few samples, and whether it grows to the end."""
    g = profile.growth
    if len(g) < 2:
        return None
    use_heap = all(p.heap_mb is not None for p in g)
    values = [(p.t_s, p.heap_mb if use_heap else p.rss_mb) for p in g]
    values = [(t, v) for t, v in values if v is not None]
    if len(values) < 2:
        return None
    step = max(1, (len(values) - 1) // (points - 1))
    shown = values[::step]
    if shown[-1] != values[-1]:
        shown.append(values[-1])
    top = max(values, key=lambda tv: tv[1])
    span = values[-1][0] - values[0][0]
    reading = ""
    if span > 0 and top[1] > 0:
        if values[-1][1] >= 0.9 * top[1] and _correlation(values) > 0.9:
            reading = "; it grows steadily to the end (kept, not freed?)"
        elif values[-1][1] < 0.6 * top[1]:
            reading = f"; it peaks at {top[0]:.1f} s and falls"
    what = "heap" if use_heap else "RSS"
    return (f"{what} over the run (s: MiB): " + ", ".join(f"{t:.1f}: {v:.1f}" for t, v in shown)
            + reading)


def _correlation(values: list[tuple[float, float]]) -> float:
    n = len(values)
    mt = sum(t for t, _ in values) / n
    mv = sum(v for _, v in values) / n
    cov = sum((t - mt) * (v - mv) for t, v in values)
    st = sum((t - mt) ** 2 for t, _ in values) ** 0.5
    sv = sum((v - mv) ** 2 for _, v in values) ** 0.5
    return cov / (st * sv) if st and sv else 0.0


def _frames_text(frames: list[str], indent: str = "    ") -> list[str]:
    shown = frames[-PATH_FRAMES:]
    lines = [f"{indent}... {len(frames) - len(shown)} frames nearer the root"] \
        if len(shown) < len(frames) else []
    lines += [f"{indent}{'  ' * i}{label}" for i, label in enumerate(shown)]
    return lines


SCOPE_TITLE = ("by the code you may change (the deepest frame in the editable scope):",
               "what keeps the memory alive (owner chains from a module global or a frame "
               "local, gc census):")


def peak_text(profile: Profile) -> str | None:
    p = profile.peak
    if p is None or p.t_s is None:
        return None
    span = f" of {p.span_s:.1f} s" if p.span_s else ""
    return f"the peak came at {p.t_s:.1f} s{span} ({p.how})"


def header(profile: Profile) -> str:
    rev = (profile.revision or "?")[:12]
    head = (f"# {profile.target} / {profile.env} / {profile.label}: {profile.measure} "
            f"({profile.tool}), total {human_value(profile.total, profile.unit)}\n"
            f"# revision {rev}, workload {profile.workload or '?'}")
    if profile.program:
        head += f"\n# program: {profile.program}"
    if profile.interpreter:
        head += f"\n# python: {profile.interpreter}"
    if profile.mode:
        head += f"\n# mode: {profile.mode}"
    if profile.memory and profile.memory.vm_hwm_mb is not None:
        rss = profile.memory.vm_rss_mb
        head += (f"\n# VmHWM {profile.memory.vm_hwm_mb:.1f} MiB"
                 + (f", VmRSS {rss:.1f} MiB" if rss is not None else "")
                 + f" ({profile.memory.source})")
    for line in (heap_vs_rss(profile), peak_text(profile), growth_text(profile)):
        if line:
            head += f"\n# {line}"
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
    """`<label>-stacks.txt`: the scope view, the top-N paths with values and %, then the
    top functions."""
    out = [header(profile), ""]
    entries = scope(profile, n)
    if entries:
        out.append(SCOPE_TITLE[profile.tool == "retention"])
        out += [f"  {e.text}" for e in entries]
        out.append("")
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
    if before.mode != after.mode:
        warnings.append(f"different attribution modes ({before.mode} vs {after.mode})")
    moved = peak_moved(before, after)
    if moved:
        warnings.append(moved)
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
    grain = max(before.granularity_bytes, after.granularity_bytes)
    small = sum(1 for e in paths if abs(e.delta) < grain)
    if small:
        warnings.append(
            f"{small} of the {len(paths)} changed paths differ by less than the attribution "
            f"granularity (±{human_bytes(grain)}: {after.mode or before.mode}): noise, not a "
            "change; profile both with tool='memray' (each object at its own site)")
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


def peak_moved(before: Profile, after: Profile) -> str | None:
    """A warning when the two peaks came at different moments of the run (or when that
    cannot be told); None when they did not move."""
    if before.kind != "memory":
        return None
    b, a = before.peak, after.peak
    if not (b and a and b.t_s is not None and a.t_s is not None):
        tool = after.tool if b and b.t_s is not None else before.tool
        return (f"when the peak came is unknown ({tool}): each profile is compared at its "
                "own peak, which may be a different moment of the run")
    fb = b.t_s / b.span_s if b.span_s else None
    fa = a.t_s / a.span_s if a.span_s else None
    apart = abs(a.t_s - b.t_s) > max(0.25, 0.1 * max(b.span_s or 0, a.span_s or 0))
    if fb is not None and fa is not None:
        apart = apart and abs(fa - fb) > 0.1
    if not apart:
        return None

    def when(p: Any, f: float | None) -> str:
        return f"{p.t_s:.1f} s" + (f" of {p.span_s:.1f} s ({f:.0%})" if f is not None else "")

    return (f"the peak moved: before at {when(b, fb)}, after at {when(a, fa)}. Each profile "
            "is compared at its own peak, so stacks live at only one of the two moments "
            "appear or disappear without any change to them")


def _signed(value: float, unit: Unit) -> str:
    return ("+" if value >= 0 else "-") + human_value(abs(value), unit)


def diff_text(d: ProfileDiff) -> str:
    out = [f"# {d.target} / {d.env}: {d.before} -> {d.after} ({d.measure})",
           f"# total {human_value(d.before_total, d.unit)} -> "
           f"{human_value(d.after_total, d.unit)} ({_signed(d.delta_total, d.unit)}"
           + (f", {d.delta_total_pct:+.1f}%)" if d.delta_total_pct is not None else ")")
           + (", each at its own peak" if "peak" in d.measure else "")]
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
