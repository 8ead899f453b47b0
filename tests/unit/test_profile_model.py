"""The profile model, its views (top-N, paths, diff, exports), storage and the parsers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from autoopt.tools.command import parse_command
from autoopt.tools.errors import AlreadyExists, InvalidName, NotFound, ProfilerUnavailable
from autoopt.tools.profiling import detect, heaptrack, memray, perf, pyspy, store, views
from autoopt.tools.profiling.model import (
    Frame,
    Profile,
    ProfileBuilder,
    human_bytes,
    relativize,
)
from autoopt.tools.workspace import Workspace


def f(name: str, line: int = 1, file: str = "app.py") -> Frame:
    return Frame(name=name, file=file, line=line)


def make(stacks: list[tuple[list[Frame], float]], label: str = "p", kind: str = "memory",
         unit: str = "bytes", tool: str = "memray") -> Profile:
    b = ProfileBuilder()
    for frames, value in stacks:
        b.add(frames, value, 1)
    return Profile(kind=kind, label=label, target="t", env="local", tool=tool,  # type: ignore[arg-type]
                   measure="bytes live at the heap high-water mark", unit=unit,  # type: ignore[arg-type]
                   total=b.total, frames=b.frames, stacks=b.stacks,
                   unsymbolized_frames=b.unsymbolized)


def test_builder_interns_frames_and_merges_identical_stacks() -> None:
    b = ProfileBuilder()
    b.add([f("main"), f("a")], 10, 1)
    b.add([f("main"), f("a")], 5, 2)
    b.add([f("main"), Frame(name="0x7f00", module="lib.so", symbolized=False)], 1, 1)
    b.add([f("main")], 0)  # nothing
    assert len(b.frames) == 3 and b.total == 16 and b.unsymbolized == 1
    assert [(s.value, s.count) for s in b.stacks] == [(15, 3), (1, 1)]


def test_frame_label_and_key() -> None:
    fr = Frame(name="g;h", file="/x/y/app.py", line=7)
    assert fr.label == "g:h (app.py:7)"  # no ';' inside a folded frame
    assert fr.key == "g;h (app.py)"  # the line is not part of the identity
    native = Frame(name="0x1", module="/usr/lib/libc.so.6", symbolized=False)
    assert native.label == "0x1 (libc.so.6)"
    rel = relativize([Frame(name="a", file="/tree/src/x.py"), Frame(name="b", file="/usr/y.py")],
                     "/tree")
    assert [r.file for r in rel] == ["src/x.py", "/usr/y.py"]


def test_top_functions_self_and_total_with_percent() -> None:
    p = make([([f("main"), f("load"), f("parse")], 60),
              ([f("main"), f("load")], 30),
              ([f("main"), f("other")], 10)])
    by_self = views.top_functions(p, 2, "self")
    assert [(e.key, e.self_value, e.self_pct) for e in by_self] == [
        ("parse (app.py)", 60, 60.0), ("load (app.py)", 30, 30.0)]
    by_total = views.top_functions(p, 2, "total")
    assert [(e.key, e.total_value, e.total_pct) for e in by_total] == [
        ("main (app.py)", 100, 100.0), ("load (app.py)", 90, 90.0)]


def test_recursion_collapses_into_one_path_whatever_its_depth() -> None:
    root = [f("handle"), f("_snapshot_store")]
    deep1 = [f("deepcopy", 1, "copy.py"), f("_deepcopy_list", 2, "copy.py"),
             f("deepcopy", 3, "copy.py"), f("_deepcopy_dict", 4, "copy.py")]
    deep2 = [*deep1, f("deepcopy", 5, "copy.py"), f("_deepcopy_list", 6, "copy.py"),
             f("deepcopy", 7, "copy.py"), f("_deepcopy_dict", 8, "copy.py")]
    p = make([(root + deep1, 40), (root + deep2, 50), ([f("handle"), f("json")], 10)])
    paths = views.top_paths(p, 10)
    assert len(paths) == 2
    top = paths[0]
    assert (top.rank, top.value, top.pct, top.stacks) == (1, 90, 90.0, 2)
    assert top.key.split(";") == ["handle (app.py)", "_snapshot_store (app.py)",
                                  "deepcopy (copy.py)", "_deepcopy_list (copy.py)",
                                  "_deepcopy_dict (copy.py)"]
    assert top.frames[-1] == "_deepcopy_dict (copy.py:4)"  # first occurrence, heaviest stack
    text = views.stacks_text(p)
    assert "#1 90 B = 90.0% of total (2 stacks, 2 allocations)" in text
    assert "top functions by self" in text and "top functions by total" in text


def test_diff_signs_and_categories_ignore_line_moves() -> None:
    before = make([([f("main"), f("hist", 10)], 100), ([f("main"), f("json")], 20),
                   ([f("main"), f("gone")], 5), ([f("main"), f("same")], 7)], label="a")
    after = make([([f("main"), f("hist", 14)], 10), ([f("main"), f("json")], 30),
                  ([f("main"), f("new")], 3), ([f("main"), f("same", 99)], 7)], label="b")
    d = views.diff(before, after)
    changes = {e.key: (e.change, e.delta) for e in d.paths}
    assert changes == {"main (app.py);hist (app.py)": ("shrunk", -90),
                       "main (app.py);json (app.py)": ("grown", 10),
                       "main (app.py);gone (app.py)": ("disappeared", -5),
                       "main (app.py);new (app.py)": ("appeared", 3)}
    assert d.paths[0].key.endswith("hist (app.py)")  # largest |delta| first
    assert d.counts == {"grown": 1, "shrunk": 1, "appeared": 1, "disappeared": 1}
    assert (d.before_total, d.after_total, d.delta_total) == (132, 50, -82)
    assert d.delta_total_pct == pytest.approx(-62.12, abs=0.01)
    funcs = {e.key: e for e in d.functions}
    assert funcs["hist (app.py)"].delta == -90 and funcs["main (app.py)"].change == "shrunk"
    assert "shrunk" in d.text and "-90 B" in d.text
    cpu = make([([f("main")], 3)], kind="cpu", unit="samples")
    with pytest.raises(InvalidName):
        views.diff(before, cpu)


def test_folded_and_speedscope_exports() -> None:
    p = make([([f("main"), f("a", 3)], 10.4), ([f("main"), f("b", 4)], 5)])
    assert views.folded(p).splitlines() == ["main (app.py:1);a (app.py:3) 10",
                                            "main (app.py:1);b (app.py:4) 5"]
    doc = views.speedscope(p)
    prof = doc["profiles"][0]
    assert prof["type"] == "sampled" and prof["unit"] == "bytes"
    assert sum(prof["weights"]) == pytest.approx(p.total) == prof["endValue"]
    names = [doc["shared"]["frames"][i]["name"] for i in prof["samples"][0]]
    assert names == ["main", "a"]
    assert json.loads(views.speedscope_json(p)) == doc


def test_store_roundtrip_picture_and_label_rules(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    p = make([([f("main"), f("a")], 10)], label="baseline")
    files = store.save(ws, p)
    folder = tmp_path / "results" / "t" / "local" / "profiles"
    assert set(files) == {"profile", "stacks", "folded", "speedscope", "flamegraph"}
    assert Path(files["stacks"]) == folder / "baseline-stacks.txt"
    assert Path(files["flamegraph"]).read_bytes()[:4] == b"\x89PNG"
    assert store.load(ws, "t", "local", "baseline") == p
    store.check_label_free(ws, "t", "local", "baseline", "memory")  # same kind: replaced
    with pytest.raises(AlreadyExists):
        store.check_label_free(ws, "t", "local", "baseline", "cpu")
    with pytest.raises(NotFound, match="baseline"):
        store.load(ws, "t", "local", "nope")
    with pytest.raises(InvalidName):
        store.file_of(ws, "t", "local", "../x", "stacks")


def test_pyspy_raw_parser(tmp_path: Path) -> None:
    raw = tmp_path / "r.txt"
    raw.write_text("<module> (/tree/s.py:8);outer (/tree/s.py:7);inner (/tree/s.py:3) 100\n"
                   "<module> (/tree/s.py:8);outer (/tree/s.py:7) 38\n 2\n")
    b = pyspy.parse(raw, "/tree")
    assert b.total == 140
    top = b.stacks[0]
    assert [b.frames[i].label for i in top.frames] == ["<module> (s.py:8)", "outer (s.py:7)",
                                                       "inner (s.py:3)"]
    assert b.frames[top.frames[0]].file == "s.py"


PERF_SCRIPT = """busy  9960/9960     2004008
\t            1170 work (/tree/busy)
\t            11b6 outer (/tree/busy)
\t            11eb main (/tree/busy)
\t           2724a __libc_start_call_main (/usr/lib/x86_64-linux-gnu/libc.so.6)

busy  9960/9960     2004008
\t            1175 [unknown] (/tree/busy)
\t            11eb main (/tree/busy)
\t           2724a __libc_start_call_main (/usr/lib/x86_64-linux-gnu/libc.so.6)

"""


def test_perf_script_parser_drops_frames_above_main() -> None:
    b = perf.parse_script(PERF_SCRIPT, "/tree")
    assert b.total == 2 and b.unsymbolized == 1
    names = {tuple(b.frames[i].name for i in s.frames) for s in b.stacks}
    assert names == {("main", "outer", "work"), ("main", "[unknown]")}
    assert b.frames[0].module == "busy"


# heaptrack_interpret output: 10 MiB allocated by `big` and freed, then 6 MiB by `small`
# and 1 MiB by `big` again: the peak is the first 10 MiB, all of it `big`'s.
HEAPTRACK = """v 10400 3
X ./prog
s a /tree/prog
s 4 main
s 6 prog.c
s 3 big
s 5 small
i 1000 1 2 3 10
t 1 0
i 1100 1 4 3 5
t 2 1
i 1200 1 5 3 8
t 3 1
i 1300 1
t 4 1
a a00000 2
a 600000 3
a 100000 2
a 10 4
+ 0
- 0
+ 1
+ 2
+ 3
"""


def test_heaptrack_replay_finds_the_peak_and_who_held_it(tmp_path: Path) -> None:
    path = tmp_path / "h.gz"
    with gzip.open(path, "wt") as out:
        out.write(HEAPTRACK)
    b, info = heaptrack.parse(path, "/tree")
    assert (info["peak_bytes"], info["allocations"]) == (10 * 1024 * 1024, 4)
    assert b.total == 10 * 1024 * 1024
    (stack,) = b.stacks
    assert [b.frames[i].label for i in stack.frames] == ["main (prog.c:16)", "big (prog.c:5)"]
    assert b.frames[stack.frames[0]].module == "prog"


def test_command_wrapping_keeps_the_port_placeholder() -> None:
    assert detect.is_python_command("python3 server.py --port {port}")
    assert detect.is_python_command("PYTHONHASHSEED=0 /usr/bin/python3.11 x.py")
    assert not detect.is_python_command("./server --port {port}")
    assert detect.is_python_command("env PYTHONMALLOC=malloc python3 x.py")
    wrapped = memray.wrap("A=1 /usr/bin/python3 -u server.py --port {port}", Path("/o/m.bin"),
                          {"PYTHONPATH": "/side"})
    cmd = parse_command(wrapped)
    assert cmd.argv == ["/usr/bin/python3", "-u", "-m", "memray", "run",
                        "--trace-python-allocators", "-q", "-f", "-o",
                        "/o/m.bin", "server.py", "--port", "{port}"]  # the command's python
    assert cmd.env == {"A": "1", "PYTHONPATH": "/side"}
    assert wrapped.endswith("--port {port}")  # not quoted: the backend substitutes it
    ht = parse_command(heaptrack.wrap("PYTHONMALLOC=malloc ./peak --n 3", Path("/o/raw")))
    assert ht.argv == ["./peak", "--n", "3"]  # the program itself, not env
    assert ht.env["DUMP_HEAPTRACK_OUTPUT"] == "/o/raw" and ht.env["PYTHONMALLOC"] == "malloc"


def test_missing_native_profiler_names_the_debian_package(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(detect.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ProfilerUnavailable, match=r"apt-get install -y heaptrack"):
        detect.require("heaptrack")
    with pytest.raises(ProfilerUnavailable, match=r"apt-get install -y linux-perf"):
        detect.require("perf")
    with pytest.raises(ProfilerUnavailable, match=r"apt-get install -y gdb"):
        detect.require("gdb")
    with pytest.raises(ProfilerUnavailable, match=r"apt-get install -y binutils"):
        detect.require("addr2line")


def test_jemalloc_use(tmp_path: Path) -> None:
    dyn, static, prefixed, plain = (tmp_path / n for n in ("d", "s", "r", "p"))
    dyn.write_bytes(b"\x7fELF...libjemalloc.so.2\x00")
    static.write_bytes(b"\x7fELF...<jemalloc>: Invalid conf pair\x00MALLOC_CONF\x00")
    prefixed.write_bytes(b"\x7fELF..._rjem_mallctl\x00_RJEM_MALLOC_CONF\x00")
    plain.write_bytes(b"\x7fELF...libc.so.6\x00")
    uses = [detect.jemalloc_use(f"./{p.name} --port {{port}}", tmp_path)
            for p in (dyn, static, prefixed, plain)]
    assert [u and (u.linkage, u.variable) for u in uses] == [
        ("dynamic", "MALLOC_CONF"), ("static", "MALLOC_CONF"),
        ("static", "_RJEM_MALLOC_CONF"), None]
    assert detect.jemalloc_use("./missing", tmp_path) is None
    preload = detect.jemalloc_use(
        "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ./p", tmp_path)
    assert preload is not None and preload.linkage == "preload"


def test_human_bytes() -> None:
    assert [human_bytes(v) for v in (512, 1536, 64 * 1024 * 1024)] == [
        "512 B", "1.5 KiB", "64.0 MiB"]
