"""Issue 18's views without a profiler: qualified names from the source, the scope view,
heap against RSS, the peak's move and the granularity warning in diffs, and the retention
runner's census on objects of this process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from autoopt.tools.profiling import names, views
from autoopt.tools.profiling.model import (
    Frame,
    MemoryReadings,
    Peak,
    Point,
    Profile,
    ProfileBuilder,
)

MIB = 1024 * 1024
SOURCE = '''import json


class CharsetMatch:
    def __lt__(self, other):
        return json.loads("[1]") < [2]

    def nested(self):
        def inner():
            return 1
        return inner()
'''


def profile(stacks: list[tuple[list[Frame], float]], **extra: object) -> Profile:
    b = ProfileBuilder()
    for frames, value in stacks:
        b.add(frames, value, 1)
    return Profile(kind="memory", label="p", target="t", env="local", tool="memray",
                   measure="bytes live at the heap high-water mark", unit="bytes",
                   total=b.total, frames=b.frames, stacks=b.stacks, **extra)  # type: ignore[arg-type]


def test_qualnames_from_the_source_and_package_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "models.py").write_text(SOURCE)
    frames = [
        Frame(name="__lt__", file="pkg/models.py", line=6),
        Frame(name="inner", file="pkg/models.py", line=10),
        Frame(name="decode", file="/nowhere/lib/python3.11/json/decoder.py", line=337),
        Frame(name="get", file="/v/lib/python3.11/site-packages/requests/api.py", line=3),
        Frame(name="K.spin", file="pkg/models.py", line=6),  # py-spy's own qualname kept
        Frame(name="main", file="/ws/targets/t/work.py", line=1),
    ]
    names.qualify(frames, str(tmp_path), lambda p: p == "pkg/models.py", ["/ws/targets/t"])
    assert [f.name for f in frames[:2]] == ["CharsetMatch.__lt__",
                                            "CharsetMatch.nested.<locals>.inner"]
    assert [f.file for f in frames] == ["pkg/models.py", "pkg/models.py", "json/decoder.py",
                                        "requests/api.py", "pkg/models.py", "work.py"]
    assert [f.editable for f in frames] == [True, True, False, False, True, False]
    assert frames[0].label == "CharsetMatch.__lt__ (pkg/models.py:6)"
    assert frames[2].qualname == "json.decoder.decode"


def test_scope_groups_by_the_deepest_editable_frame_with_its_external_callee() -> None:
    lt = Frame(name="CharsetMatch.__lt__", file="models.py", line=6, editable=True)
    api = Frame(name="from_bytes", file="api.py", line=9, editable=True)
    loads = Frame(name="loads", file="json/__init__.py", line=346)
    decode = Frame(name="JSONDecoder.raw_decode", file="json/decoder.py", line=353)
    imp = Frame(name="_find_and_load", file="<frozen importlib._bootstrap>", line=1)
    p = profile([([api, lt, loads, decode], 60), ([api, lt], 10), ([api], 20), ([imp], 10)])
    first, second, third = views.scope(p, 5)
    assert first.function == "CharsetMatch.__lt__ (models.py:6)" and first.pct == 70.0
    assert first.callee == "json.loads" and first.leaf == "json.decoder.JSONDecoder.raw_decode"
    assert first.text == ("#1 70.0% 70 B: CharsetMatch.__lt__ (models.py:6) → json.loads … "
                          "json.decoder.JSONDecoder.raw_decode (+1 other callee)")
    assert second.text == "#2 20.0% 20 B: from_bytes (api.py:9) itself"
    assert third.key == views.OUTSIDE and third.pct == 10.0
    text = views.stacks_text(p)
    assert text.index("by the code you may change") < text.index("#1 60 B = ")
    assert views.scope(profile([([loads], 1)])) == []  # nothing editable: no scope view


def test_heap_against_rss_reads_the_gap() -> None:
    def reading(heap_mib: float, hwm: float, start: float | None) -> str:
        p = profile([([Frame(name="f")], heap_mib * MIB)],
                    memory=MemoryReadings(vm_hwm_mb=hwm),
                    peak=Peak(heap_bytes=heap_mib * MIB, start_rss_mb=start))
        line = views.heap_vs_rss(p)
        assert line is not None
        return line

    close = reading(50, 72, 20)
    assert close.startswith("heap peak 50.0 MiB, VmHWM 72.0 MiB, gap +22.0 MiB; the gap is")
    assert "should lower RSS about as much" in close
    assert "arena fragmentation" in reading(50, 150, 20)
    assert "not resident" in reading(50, 30, 20)
    assert views.heap_vs_rss(profile([([Frame(name="f")], 1)])) is None  # no VmHWM


def test_growth_view_says_when_memory_grows_to_the_end() -> None:
    rising = [Point(t_s=t / 10, heap_mb=float(t)) for t in range(20)]
    text = views.growth_text(profile([([Frame(name="f")], 1)], growth=rising))
    assert text is not None and text.startswith("heap over the run (s: MiB): 0.0: 0.0")
    assert "grows steadily to the end" in text
    spike = [Point(t_s=t / 10, rss_mb=30.0 if t == 5 else 5.0) for t in range(20)]
    text = views.growth_text(profile([([Frame(name="f")], 1)], growth=spike))
    assert text is not None and "RSS over the run" in text and "peaks at 0.5 s and falls" in text


def test_diff_warns_when_the_peak_moved_and_below_the_granularity() -> None:
    a, b = Frame(name="a", file="x.py"), Frame(name="b", file="x.py")
    arenas = {"mode": "pymalloc arenas", "granularity_bytes": float(MIB)}
    before = profile([([a], 8 * MIB), ([b], 2 * MIB)],
                     peak=Peak(t_s=9.0, span_s=10.0), **arenas)
    after = profile([([a], 7 * MIB), ([b], 2.5 * MIB)],
                    peak=Peak(t_s=1.0, span_s=10.0), **arenas)
    d = views.diff(before, after)
    moved = [w for w in d.warnings if w.startswith("the peak moved")]
    assert moved == ["the peak moved: before at 9.0 s of 10.0 s (90%), after at 1.0 s of "
                     "10.0 s (10%). Each profile is compared at its own peak, so stacks live "
                     "at only one of the two moments appear or disappear without any change "
                     "to them"]
    assert any(w.startswith("1 of the 2 changed paths differ by less than the attribution "
                            "granularity (±1.0 MiB") for w in d.warnings), d.warnings
    same = profile([([a], 8 * MIB)], peak=Peak(t_s=9.1, span_s=10.0))
    d = views.diff(profile([([a], 9 * MIB)], peak=Peak(t_s=9.0, span_s=10.0)), same)
    assert not any("peak" in w for w in d.warnings), d.warnings
    unknown = views.diff(profile([([a], 1)]), profile([([a], 2)]))
    assert any("when the peak came is unknown" in w for w in unknown.warnings)


def _runner():  # type: ignore[no-untyped-def]
    path = Path(views.__file__).with_name("retention_runner.py")
    spec = importlib.util.spec_from_file_location("autoopt_retention_runner", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Handler:
    def __init__(self) -> None:
        self.stack: list[dict[str, object]] = []


HELD = Handler()


def test_census_names_the_container_and_its_owner() -> None:
    runner = _runner()
    HELD.stack = [{"id": i, "name": f"item-{i}"} for i in range(50000)]
    try:
        census = runner.Census(skip_thread=-1)
        census.run()
        report = census.report(0.0)
    finally:
        held, HELD.stack = len(HELD.stack), []
    assert held == 50000
    mod = __name__
    top = next(s for s in report["stacks"] if s["frames"][0]["name"].startswith(f"{mod}.HELD"))
    assert [f["name"] for f in top["frames"]] == [f"{mod}.HELD (Handler)", ".stack (list)",
                                                  "dict"], report["stacks"]
    assert top["count"] == 50000 and top["value"] > 50000 * sys.getsizeof({}), top
    assert any(name == "dict" and n >= 50000 for name, n, _ in report["types"])
