"""profile_memory on programs that run on jemalloc, through an in-process MCP client: C
programs compiled by the test against Debian's libjemalloc (static and dynamic), a native
HTTP service on jemalloc, a program that crashes after its peak. jemalloc's own heap
profiler runs in the real process; jeprof (libjemalloc-dev) cross-checks the bytes.

Skipped only when gcc or libjemalloc-dev is missing and CI is unset; in CI they fail instead.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view, processes_under
from tests.integration.test_profiling import PEAK_C, PEAK_TARGET_MD, call

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
LIBDIR = Path("/usr/lib") / f"{os.uname().machine}-linux-gnu"
STATIC = LIBDIR / "libjemalloc.a"
STATIC_BUILD = f"gcc -g -O0 -o peak peak.c {STATIC} -lpthread -ldl -lm -lstdc++"
DYNAMIC_BUILD = "gcc -g -O0 -o peak peak.c -ljemalloc"


@pytest.fixture(autouse=True)
def needs_jemalloc() -> None:
    problem = None
    if shutil.which("gcc") is None:
        problem = "gcc is missing"
    elif not STATIC.is_file() or shutil.which("jeprof") is None:
        problem = "libjemalloc-dev is missing (apt-get install libjemalloc-dev)"
    if problem and os.environ.get("CI"):
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


def jemalloc_target(workspace: Workspace, name: str, build: str, workload: str = "./peak") -> Path:
    folder = workspace.targets_dir / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "peak.c").write_text(PEAK_C)
    text = PEAK_TARGET_MD.format(name=name, workload=workload)
    (folder / "target.md").write_text(text.replace("gcc -g -O0 -o peak peak.c", build))
    return folder


async def profile(client: Client, **args: object) -> dict:
    """profile_memory through MCP; the whole profile behind its answer (it must succeed)."""
    result = await call_done(client, "profile_memory", args)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    return await full_view(client, result)


def by_key(r: dict) -> dict[str, dict]:
    return {e["key"]: e for e in r["top_self"]}


def heap_files(workspace: Workspace, target: str) -> list[Path]:
    return sorted((workspace.results_dir / target / "local" / "profiles").glob("*.heap"))


def jeprof_stacks(program: Path, dump: Path) -> list[tuple[str, float]]:
    """jeprof's own reading of a dump: (folded stack, bytes), from its --collapsed output."""
    out = subprocess.run(["jeprof", "--collapsed", str(program), str(dump)], check=True,
                         capture_output=True, text=True).stdout
    return [(stack, float(value)) for stack, _, value in
            (line.rpartition(" ") for line in out.splitlines())]


async def test_static_jemalloc_peak_names_the_function_and_its_bytes(
        client: Client, workspace: Workspace, tmp_path: Path) -> None:
    jemalloc_target(workspace, "jestatic", STATIC_BUILD)
    r = await profile(client, target="jestatic", label="je")
    assert r["tool"] == "jemalloc" and r["complete"], r["notes"]
    assert any("runs on jemalloc (static)" in n for n in r["notes"])
    keys = by_key(r)
    assert keys["make_buffer (peak.c)"]["self_value"] == pytest.approx(64 * MIB, rel=0.05)
    assert keys["small_buffer (peak.c)"]["self_value"] == pytest.approx(8 * MIB, rel=0.05)
    assert r["top_self"][0]["key"] == "make_buffer (peak.c)"
    assert r["total"] == pytest.approx(72 * MIB, rel=0.05)
    top = " ".join(r["top_paths"][0]["frames"])
    assert top.startswith("main (peak.c:") and "make_buffer (peak.c:" in top
    assert not any("je_" in f or "prof_" in f for p in r["top_paths"] for f in p["frames"])
    assert r["memory"]["vm_hwm_mb"] > 64
    shells = [s["shell"] for s in r["journal"]]
    assert any("MALLOC_CONF=prof:true" in s and "./peak" in s for s in shells)
    read = next(s for s in shells if 'jeprof --collapsed "$TREE/peak"' in s)
    # one dump is kept (the heaviest); jeprof reads the same bytes from it
    kept = heap_files(workspace, "jestatic")
    assert len(kept) == 1 and str(kept[0]) in r["files"].values()
    copy = tmp_path / "peak"
    subprocess.run(STATIC_BUILD.replace("-o peak peak.c", f"-o {copy} peak.c").split(),
                   cwd=workspace.targets_dir / "jestatic" / "src", check=True)
    # the dump maps the build tree's binary, which is gone: point it at the identical copy
    built = re.search(r"\s(/\S+/peak)\n", kept[0].read_text()).group(1)
    moved = tmp_path / "moved.heap"
    moved.write_text(kept[0].read_text().replace(built, str(copy)))
    theirs = jeprof_stacks(copy, moved)
    assert sum(v for s, v in theirs if ";make_buffer<" in s) == pytest.approx(
        keys["make_buffer (peak.c)"]["self_value"], rel=0.001)
    assert sum(v for _, v in theirs) == pytest.approx(r["total"], rel=0.001)
    # the recorded step picks the same dump and has jeprof fold it (symbols aside: the dump
    # maps the build tree, which is gone)
    done = subprocess.run(["bash", "-c", f"set -euo pipefail; TREE={copy.parent}\n{read}"],
                          check=True, capture_output=True, text=True)
    assert f"Using local file {kept[0]}." in done.stderr
    folded = (kept[0].parent / "je-jeprof.folded").read_text()
    assert sorted(int(line.rpartition(" ")[2]) for line in folded.splitlines()) == [
        8 * MIB, 64 * MIB]
    assert not processes_under(workspace.root)


async def test_recorded_profile_sh_replays_the_jemalloc_profile(
        client: Client, workspace: Workspace, tmp_path: Path) -> None:
    """record_experiment(profile=...) writes profile.sh; in a clean copy of the record it
    rebuilds, reruns the program under jemalloc and has jeprof fold the heaviest dump."""
    folder = jemalloc_target(workspace, "jerec", STATIC_BUILD)
    await profile(client, target="jerec", label="je")
    source = (folder / "src" / "peak.c").read_text()
    changed = source.replace("long sum = p[n / 2];", "long sum = p[n - 1];")
    patch = "".join(difflib.unified_diff(source.splitlines(True), changed.splitlines(True),
                                         "a/peak.c", "b/peak.c"))
    run = await call(client, "run_ab", target="jerec", patch=patch, runs=3, warmup=0)
    await call(client, "record_experiment", run_id=run["run_id"], exp_id="exp001",
               description="read the last byte", hypothesis="no memory change", profile="je")
    record = workspace.results_dir / "jerec" / "local" / "exp001"
    script = (record / "profile.sh").read_text()
    assert "MALLOC_CONF=prof:true" in script and "jeprof --collapsed" in script
    assert str(workspace.results_dir) not in script  # the profiler writes to $LOGS
    replay = tmp_path / "replay"
    shutil.copytree(record, replay)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run("./build.sh >/dev/null && ./profile.sh", shell=True, cwd=replay,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    folded = (replay / "work" / "logs" / "profile" / "je-jeprof.folded").read_text()
    by_line = {line.rpartition(" ")[0]: int(line.rpartition(" ")[2])
               for line in folded.splitlines()}
    big = [v for stack, v in by_line.items() if ";make_buffer<" in stack]
    assert big == [64 * MIB], folded  # symbolized this time: the replay's tree is there
    # and the A/B schedule of this batch target replays (teardown has no pid to stop)
    again = subprocess.run("./reproduce.sh", shell=True, cwd=replay, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    replayed = (replay / "work" / "replay.log").read_text().splitlines()
    assert len(replayed) == 6 and all(re.search(r"peak_rss_mb=\d", x) for x in replayed)


async def test_dynamic_jemalloc_auto_and_heaptrack_both_see_it(
        client: Client, workspace: Workspace) -> None:
    jemalloc_target(workspace, "jedyn", DYNAMIC_BUILD)
    r = await profile(client, target="jedyn", label="je")
    assert r["tool"] == "jemalloc" and r["overhead"] == "moderate"
    assert any("runs on jemalloc (dynamic)" in n for n in r["notes"])
    assert by_key(r)["make_buffer (peak.c)"]["self_value"] == pytest.approx(64 * MIB, rel=0.05)
    # jemalloc's own frames (libjemalloc.so.2) are cut from every stack
    assert not any("libjemalloc" in f for p in r["top_paths"] for f in p["frames"])
    if shutil.which("heaptrack_print"):
        ht = await profile(client, target="jedyn", label="ht", tool="heaptrack")
        assert ht["tool"] == "heaptrack"
        assert any("heaptrack's preload sees" in n for n in ht["notes"])
        assert by_key(ht)["make_buffer (peak.c)"]["self_value"] == pytest.approx(
            64 * MIB, rel=0.05)


async def test_jemalloc_program_that_crashes_keeps_its_dumps(
        client: Client, workspace: Workspace) -> None:
    jemalloc_target(workspace, "jecrash", STATIC_BUILD, workload="./peak crash")
    result = await call_done(client, "profile_memory", {"target": "jecrash", "label": "crash"})
    assert result.is_error
    assert "exited with code" in result.content[0].text and "INCOMPLETE" in result.content[0].text
    folder = workspace.results_dir / "jecrash" / "local" / "profiles"
    saved = json.loads((folder / "crash-profile.json").read_text())
    assert saved["complete"] is False and saved["tool"] == "jemalloc"
    # the dumps written before abort() survive it: the peak is still there, by stack
    assert saved["total"] == pytest.approx(72 * MIB, rel=0.05)
    assert "make_buffer (peak.c:" in (folder / "crash-stacks.txt").read_text().split("\n#2 ")[0]


async def test_jemalloc_preloaded_into_a_program_without_it(
        client: Client, workspace: Workspace) -> None:
    jemalloc_target(workspace, "plainc", "gcc -g -O0 -o peak peak.c")
    auto = await profile(client, target="plainc", label="auto")
    assert auto["tool"] == "heaptrack"  # auto does not change a program's allocator
    r = await profile(client, target="plainc", tool="jemalloc", label="je")
    assert r["tool"] == "jemalloc"
    assert any("was preloaded" in n and "libjemalloc.so.2" in n for n in r["notes"])
    keys = by_key(r)
    assert keys["make_buffer (peak.c)"]["self_value"] == pytest.approx(64 * MIB, rel=0.05)
    assert keys["small_buffer (peak.c)"]["self_value"] == pytest.approx(8 * MIB, rel=0.05)
    assert any("LD_PRELOAD=" in s["shell"] and "libjemalloc.so.2" in s["shell"]
               and "MALLOC_CONF=prof:true" in s["shell"] for s in r["journal"])
    assert not processes_under(workspace.root)


async def test_jemalloc_refused_for_a_python_program(client: Client, workspace: Workspace) -> None:
    result = await call_done(client, "profile_memory", {"target": "pyserver", "tool": "jemalloc"})
    assert result.is_error
    assert "does not run on jemalloc" in result.content[0].text
    assert "memray" in result.content[0].text
    assert not processes_under(workspace.root)


SERVER_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char *history[4096];
static int kept;

/* every /process keeps a 1 MiB record for good */
static void remember(void) {
    char *p = malloc(1u << 20);
    memset(p, 1, 1u << 20);
    history[kept++ % 4096] = p;
}

/* and uses an 8 MiB scratch buffer while it works */
static long make_scratch(void) {
    size_t n = 8u << 20;
    char *p = malloc(n);
    memset(p, 2, n);
    long s = p[n - 1];
    free(p);
    return s;
}

/* small short-lived allocations: 2 MiB allocated per request, little held */
static long churn(void) {
    long s = 0;
    for (int i = 0; i < 2048; i++) {
        char *p = malloc(1024);
        p[0] = (char)i;
        s += p[0];
        free(p);
    }
    return s;
}

static void reply(int fd, const char *body) {
    char head[128];
    int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", strlen(body));
    write(fd, head, n);
    write(fd, body, strlen(body));
}

int main(int argc, char **argv) {
    int port = argc > 2 ? atoi(argv[2]) : 8080;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) return 1;
    for (;;) {
        int c = accept(s, NULL, NULL);
        char req[4096] = {0};
        read(c, req, sizeof req - 1);
        if (strncmp(req, "GET /process", 12) == 0) {
            remember();
            long v = make_scratch() + churn();
            reply(c, v ? "done\n" : "zero\n");
        } else {
            reply(c, "ok\n");
        }
        close(c);
    }
}
"""

def script_target_md(name: str, source: str, local: str) -> str:
    """target.md of a target whose workload is targets/<name>/workload.sh."""
    head = PEAK_TARGET_MD.format(name=name, workload="").split("## Workload")[0]
    return head + f"""## Workload
description: targets/{name}/workload.sh
script: targets/{name}/workload.sh

## Scope
editable:
  - {source}

## Local
{local}
"""


SERVICE_LOCAL = """kind: service
build: gcc -g -O0 -o server server.c -ljemalloc
run: ./server --port {port}
health: /health
health_timeout: 15"""

SERVICE_WORKLOAD = """#!/usr/bin/env bash
exec python3 - "$1" <<'EOF'
import sys
import urllib.request

for _ in range(20):
    urllib.request.urlopen(sys.argv[1] + "/process", timeout=30).read()
print("requests=20")
EOF
"""


async def test_native_service_on_jemalloc_keeps_the_heaviest_dump(
        client: Client, workspace: Workspace) -> None:
    folder = workspace.targets_dir / "jeserver"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "server.c").write_text(SERVER_C)
    (folder / "target.md").write_text(script_target_md("jeserver", "server.c", SERVICE_LOCAL))
    (folder / "workload.sh").write_text(SERVICE_WORKLOAD)
    r = await profile(client, target="jeserver", label="service")
    assert r["tool"] == "jemalloc" and r["complete"], r["notes"]
    keys = by_key(r)
    # the heaviest dump is taken in the last request: its scratch buffer and all 20 records
    assert keys["make_scratch (server.c)"]["self_value"] == pytest.approx(8 * MIB, rel=0.05)
    assert keys["remember (server.c)"]["self_value"] == pytest.approx(20 * MIB, rel=0.05)
    assert r["memory"]["peak_reset"] and r["memory"]["vm_hwm_mb"] > 28
    note = next(n for n in r["notes"] if n.startswith("jemalloc: the heaviest of"))
    seen = int(re.search(r"heaviest of (\d+) heap dumps", note).group(1))
    assert seen >= 20, note  # ~220 MiB allocated at one dump per 4 MiB
    assert len(heap_files(workspace, "jeserver")) == 1  # the rest were deleted as superseded
    assert not processes_under(workspace.root)


@pytest.mark.parametrize("build, dumped", [(STATIC_BUILD, True),
                                           ("gcc -g -O0 -o peak peak.c", False)])
async def test_jemalloc_through_a_workload_script(
        client: Client, workspace: Workspace, build: str, dumped: bool) -> None:
    """A script's programs inherit jemalloc's configuration; none on jemalloc -> an error
    that says no dump came, with the /proc reading kept."""
    folder = workspace.targets_dir / "jescript"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "peak.c").write_text(PEAK_C)
    (folder / "target.md").write_text(
        script_target_md("jescript", "peak.c", f"kind: batch\nbuild: {build}"))
    (folder / "workload.sh").write_text('#!/usr/bin/env bash\n./peak\n./peak\n')
    result = await call_done(client, "profile_memory", {"target": "jescript", "tool": "jemalloc",
                                                       "label": "script"})
    saved = json.loads((workspace.results_dir / "jescript" / "local" / "profiles" /
                        "script-profile.json").read_text())
    assert any("exported to every program it starts" in n for n in saved["notes"])
    if dumped:  # the recorded jeprof step asks for the binary instead of guessing it
        assert any('jeprof --collapsed "${PROGRAM:?' in s["shell"] for s in saved["steps"])
    if dumped:
        assert not result.is_error, result.content[0].text
        assert saved["total"] == pytest.approx(72 * MIB, rel=0.05)
        assert any("1 other process(es) dumped heaps too" in n for n in saved["notes"])
    else:
        assert result.is_error and "jemalloc wrote no heap dump" in result.content[0].text
        assert saved["complete"] is False and saved["memory"]["vm_hwm_mb"] > 64
    assert not processes_under(workspace.root)
