"""A run's teardown goes on while the next run deploys, on real processes: a service that
takes 1 s to stop on SIGTERM, and a log its servers and workloads append to. No workload
ever runs beside another run's service, and a teardown hides behind the next deploy only
when that deploy is in another tree: the other build's, or the copy of a small local tree
that runs of the same build alternate with; a tree too large to copy is never shared."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from autoopt.tools import abrun
from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, processes_under
from tests.integration.test_leftovers import add_target

pytestmark = pytest.mark.anyio

SERVE_PY = """import http.server, os, signal, sys, time
log = sys.argv[1]
def note(what):
    with open(log, "a") as f:
        f.write(f"{what} {os.getpid()} {os.getcwd()}\\n")
def stop(*_):
    time.sleep(1.0)  # a slow, graceful stop
    note("exit")
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
note("start")
server.serve_forever()
"""
HIT_PY = """import sys, urllib.request
with open(sys.argv[1], "a") as f:
    f.write("workload\\n")
urllib.request.urlopen(sys.argv[2]).read()
print("hits=1")
"""


@pytest.mark.parametrize("copy", [True, False], ids=["tree-copied", "tree-too-large"])
async def test_teardown_overlaps_the_next_deploy_in_another_tree_only(
    client: Client, workspace: Workspace, monkeypatch: pytest.MonkeyPatch, copy: bool
) -> None:
    if not copy:
        monkeypatch.setattr(abrun, "TWIN_MAX_FILES", 0)
    folder = add_target(workspace, "slowstop", (
        "kind: service\nrun: python3 {target_dir}/serve.py {target_dir}/events.log\n"
        "health: /\nworkload: python3 {target_dir}/hit.py {target_dir}/events.log {endpoint}"
    ), {"serve.py": SERVE_PY, "hit.py": HIT_PY})
    result = await call_done(
        client, "run_ab", {"target": "slowstop", "runs": 4, "warmup": 0, "seed": 3}
    )
    assert not result.is_error, result.content[0].text
    view = result.structured_content
    assert view["failed"] == {"A": 0, "B": 0}, view
    run = json.loads((workspace.state_dir / "runs" / view["run_id"] / "run.json").read_text())
    samples = run["samples"]
    assert len(samples) == 8 and run["builds"]["A"] != run["builds"]["B"]
    assert all("teardown_s" in s["timings"] for s in samples), "every teardown is timed"

    events = (folder / "events.log").read_text().split("\n")[:-1]
    live: set[str] = set()
    starts: list[str] = []
    tree: dict[str, str] = {}
    exits: dict[str, int] = {}
    for i, event in enumerate(events):
        what, _, rest = event.partition(" ")
        pid, _, cwd = rest.partition(" ")
        if what == "start":
            live.add(pid)
            starts.append(pid)
            tree[pid] = cwd
        elif what == "exit":
            live.discard(pid)
            exits[pid] = i
        else:  # a workload: its own service is the only one up
            assert len(live) == 1, f"a workload beside another run's service: {events}"
    assert len(starts) == 8 and set(exits) == set(starts), events
    overlaps, same_build = [], 0
    for i in range(7):
        hidden = "teardown_hidden_s" in samples[i]["timings"]
        other = samples[i]["build_id"] != samples[i + 1]["build_id"]
        same_build += not other
        elsewhere = tree[starts[i + 1]] != tree[starts[i]]
        started_next = events.index(f"start {starts[i + 1]} {tree[starts[i + 1]]}")
        overlapped = started_next < exits[starts[i]]  # the next started before this one ended
        assert hidden == (other or copy), (i, samples[i]["timings"])
        assert elsewhere or not overlapped, f"run {i + 1} started in the tree of run {i} too soon"
        assert elsewhere == (other or copy), (i, tree[starts[i]], tree[starts[i + 1]])
        overlaps += [overlapped] if hidden else []
    assert same_build, "the schedule has runs of one build in a row"
    assert overlaps and any(overlaps), f"no teardown went on during the next deploy: {events}"
    assert "teardown_hidden_s" not in samples[-1]["timings"]
    assert len(set(tree.values())) == (4 if copy else 2)  # two trees per build, or one
    assert processes_under(workspace.root) == []
