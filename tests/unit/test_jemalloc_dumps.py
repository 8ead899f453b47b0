"""jemalloc heap dumps: parsing, jeprof's unbiasing, keeping the heaviest, the conf string."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autoopt.tools.command import parse_command
from autoopt.tools.errors import ProfilerUnavailable
from autoopt.tools.profiling import jemalloc

MAPS = """MAPPED_LIBRARIES:
55d000000000-55d000001000 r--p 00000000 fe:00 1 /srv/app
55d000001000-55d000002000 r-xp 00001000 fe:00 1 /srv/app
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
"""


def dump_text(stacks: list[tuple[str, int, int]], period: int = 65536) -> str:
    objs = sum(o for _, o, _ in stacks)
    size = sum(b for _, _, b in stacks)
    out = [f"heap_v2/{period}", f"  t*: {objs}: {size} [0: 0]", f"  t0: {objs}: {size} [0: 0]"]
    for addrs, o, b in stacks:
        out += [f"@ {addrs}", f"  t*: {o}: {b} [0: 0]", f"  t0: {o}: {b} [0: 0]"]
    return "\n".join(out) + "\n\n" + MAPS


def test_unbias_matches_jeprof() -> None:
    # jeprof 5.3 --text on a heap_v2/524288 dump: 1 object, 82338 sampled bytes -> 566534
    assert jemalloc.unbias(1, 82338, 524288)[1] == pytest.approx(566534, abs=1)
    # an allocation far above the sampling period is always sampled: no scaling
    assert jemalloc.unbias(1, 64 << 20, 65536) == pytest.approx((1.0, float(64 << 20)))
    assert jemalloc.unbias(0, 0, 65536) == (0.0, 0.0)


def test_read_dump_stacks_and_file_backed_maps(tmp_path: Path) -> None:
    path = tmp_path / "p-jeprof.42.3.i1.heap"
    path.write_text(dump_text([("0x55d000001010 0x55d000001200", 1, 1 << 20),
                               ("0x55d000001020", 0, 0)]))
    assert jemalloc.name_of(path, "p-jeprof") == (42, 3, "interval")
    assert jemalloc.name_of(tmp_path / "other.42.3.i1.heap", "p-jeprof") is None
    d = jemalloc.read_dump(path, 42, 3, "interval")
    assert d.period == 65536 and len(d.stacks) == 1  # empty stacks dropped
    assert d.stacks[0][0] == (0x55D000001010, 0x55D000001200)
    assert d.total == pytest.approx(1 << 20, rel=1e-6)
    assert [m[3] for m in d.maps] == ["/srv/app", "/srv/app"]  # anonymous maps left out
    cut = tmp_path / "p-jeprof.42.4.i2.heap"
    cut.write_text(dump_text([("0x1", 1, 10)]).split("MAPPED")[0])
    with pytest.raises(ValueError, match="not a complete"):
        jemalloc.read_dump(cut, 42, 4, "interval")


def test_dumps_keep_the_heaviest_and_wait_for_the_newest(tmp_path: Path) -> None:
    sizes = [1 << 20, 9 << 20, 3 << 20, 5 << 20]
    for seq, size in enumerate(sizes):
        (tmp_path / f"p-jeprof.7.{seq}.i{seq}.heap").write_text(
            dump_text([("0x55d000001010", 1, size)]))
    dumps = jemalloc.Dumps(tmp_path, "p-jeprof")
    dumps.scan()
    # the newest (seq 3) may still be being written: not read yet
    assert dumps.seen == 3 and dumps.heaviest is not None and dumps.heaviest.seq == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p-jeprof.7.1.i1.heap", "p-jeprof.7.3.i3.heap"]
    (tmp_path / "p-jeprof.7.4.f.heap").write_text("heap_v2/65536\n  t*: 0: ")  # cut off
    dumps.scan(final=True)
    assert dumps.seen == 5 and dumps.heaviest.seq == 1
    assert [p.name for p in tmp_path.iterdir()] == ["p-jeprof.7.1.i1.heap"]
    assert dumps.pids == {7}


def test_wrap_merges_the_targets_own_conf_and_refuses_bad_prefixes() -> None:
    cmd = jemalloc.wrap("MALLOC_CONF=background_thread:true FOO=1 ./srv --port {port}",
                        Path("/r/p/x-jeprof"), "MALLOC_CONF")
    parsed = parse_command(cmd)
    assert parsed.argv == ["./srv", "--port", "{port}"] and parsed.env["FOO"] == "1"
    conf = parsed.env["MALLOC_CONF"]
    assert conf.startswith("background_thread:true,prof:true,")
    assert conf.endswith(",prof_prefix:/r/p/x-jeprof")
    preloaded = parse_command(jemalloc.wrap("LD_PRELOAD=/x/other.so ./srv", Path("/r/x"),
                                            "MALLOC_CONF", Path("/lib/libjemalloc.so.2")))
    assert preloaded.env["LD_PRELOAD"] == "/lib/libjemalloc.so.2:/x/other.so"
    with pytest.raises(ProfilerUnavailable, match="prof_prefix"):
        jemalloc.wrap("./srv", Path("/r/a,b/x"), "MALLOC_CONF")


def test_recorded_shell_picks_the_heaviest_unbiased_dump(tmp_path: Path) -> None:
    """The profile.sh step chooses as the server does: by unbiased bytes, not raw ones."""
    one_big = dump_text([("0x55d000001010", 1, 120_000)])  # raw heavier
    ten_small = dump_text([("0x55d000001010", 10, 100_000)])  # unbiased heavier
    first, second = tmp_path / "p-jeprof.9.0.i0.heap", tmp_path / "p-jeprof.9.1.i1.heap"
    first.write_text(one_big)
    second.write_text(ten_small)
    dumps = jemalloc.Dumps(tmp_path, "p-jeprof")
    dumps.scan(final=True)
    assert dumps.heaviest is not None and dumps.heaviest.path == second
    first.write_text(one_big)  # the scan deleted it; the shell gets both to choose from
    out = tmp_path / "folded"
    shell = jemalloc.heaviest_shell(tmp_path / "p-jeprof", '"$TREE/app"', out)
    fake = 'jeprof() { echo "$2 $3"; }\n'  # prints what it was asked to read
    subprocess.run(["bash", "-c", f"set -euo pipefail\nTREE=/srv\n{fake}{shell}"], check=True)
    assert out.read_text().split() == ["/srv/app", str(second)]
