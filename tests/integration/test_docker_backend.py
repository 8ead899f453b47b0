"""The Docker backend against the real engine (scripts/setup-docker.sh prepares it).

Skipped only when no engine answers and CI is unset; in CI (CI=true) they fail instead.
Every test checks that it left no container or image labelled by this test process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.tools.backends.docker import DockerBackend, base_image
from autoopt.tools.engine import Engine
from autoopt.tools.errors import BuildFailed, DeployFailed
from autoopt.tools.workload import workload_argv, workload_script
from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[2]
INSTANCE = f"{socket.gethostname()}-{os.getpid()}"

TINY_SERVER = """\
import http.server, os, sys
HOLD = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/alloc/"):
            HOLD.append(bytearray(int(self.path.split("/")[2]) << 20))
            for block in HOLD:  # touch every page: resident, not just reserved
                block[::4096] = b"x" * len(block[::4096])
        body = b"ok\\n"
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        sys.stderr.write("request %s\\n" % self.path)
port = int(os.environ.get("PORT", "8080"))
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"""

TINY_WORKLOAD = """\
#!/usr/bin/env bash
# usage: workload.sh ENDPOINT   -- makes the service hold ALLOC_MB more memory
set -u
if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=30)" \\
    "$1/alloc/${ALLOC_MB:-40}"; then
  echo "alloc_ok=1"
else
  echo "alloc_ok=0"
fi
"""

TINY_BATCH = """\
import sys
block = bytearray(int(sys.argv[1]) << 20)
block[::4096] = b"x" * len(block[::4096])
print("items=%d" % len(block))
"""

# Every layer of the tests' own images carries this label, so that any step image a build
# leaves behind (the legacy builder keeps them as cache) can be found: see leftovers().
TEST_LABEL = f"LABEL autoopt.test={INSTANCE}"

DOCKERFILE = f"""\
ARG BASE_IMAGE=autoopt/python-base:bookworm
FROM ${{BASE_IMAGE}}
{TEST_LABEL}
WORKDIR /app
COPY . /app
EXPOSE 8080
CMD ["python3", "/app/server.py"]
"""

BROKEN_DOCKERFILE = f"""\
ARG BASE_IMAGE=autoopt/python-base:bookworm
FROM ${{BASE_IMAGE}}
{TEST_LABEL}
COPY . /app
RUN echo "autoopt-broken-marker: this step fails on purpose" && exit 7
"""


def target_md(
    name: str,
    *,
    kind: str = "service",
    memory: str | None = None,
    workload: str = "script: targets/{name}/workload.sh",
    dockerfile: str = "Dockerfile",
    metric: str = "alloc_ok",
    direction: str = "higher",
) -> str:
    docker = f"\n## Docker\nmemory: {memory}\n" if memory else ""
    local = (
        "kind: service\nrun: python3 server.py\nhealth: /health\nhealth_timeout: 30"
        if kind == "service"
        else "kind: batch\nworkload: python3 /app/batch.py 40"
    )
    service = "\n## Service\nport: 8080\n" if kind == "service" else ""
    return (
        textwrap.dedent(f"""\
        # {name}: a tiny target of the Docker backend's tests

        ## Source
        repo: local
        path: targets/{name}/src

        ## Build
        dockerfile: targets/{name}/{dockerfile}
        build_timeout: 120

        ## Primary Metric
        name: {metric}
        direction: {direction}

        ## Workload
        {workload.format(name=name)}

        ## Scope
        editable:
          - server.py

        ## Local
        """)
        + local
        + "\n"
        + service
        + docker
    )


def add_target(ws: Workspace, name: str, *, dockerfile: str = DOCKERFILE, **kwargs: object) -> None:
    folder = ws.targets_dir / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "server.py").write_text(TINY_SERVER)
    (folder / "src" / "batch.py").write_text(TINY_BATCH)
    (folder / "Dockerfile").write_text(dockerfile)
    workload = folder / "workload.sh"
    workload.write_text(TINY_WORKLOAD)
    workload.chmod(0o755)
    (folder / "target.md").write_text(target_md(name, **kwargs))  # type: ignore[arg-type]


# -- the engine, and what the tests leave behind ---------------------------------------
def _engine_problem() -> str | None:
    import docker

    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:
        return f"no Docker engine reachable ({exc}); run scripts/setup-docker.sh"
    client.close()
    return None


@pytest.fixture(scope="module")
def engine_ready() -> None:
    problem = _engine_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI is set, so the Docker tests must run: {problem}")
    if problem:
        pytest.skip(problem)
    import docker

    client = docker.from_env()
    try:
        client.images.get(base_image())
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {base_image()} missing; run scripts/setup-docker.sh")
    finally:
        client.close()


def running_containers() -> list[str]:
    """Running containers this test process labelled autoopt.managed."""
    import docker

    client = docker.from_env()
    try:
        selector = {"label": ["autoopt.managed=true", f"autoopt.instance={INSTANCE}"]}
        return [c.name for c in client.containers.list(filters=selector)]
    finally:
        client.close()


def leftovers() -> list[str]:
    """Containers and images this test process labelled autoopt.managed (the base isn't)."""
    import docker

    client = docker.from_env()
    try:
        selector = {"label": ["autoopt.managed=true", f"autoopt.instance={INSTANCE}"]}
        found = [
            f"container {c.name} ({c.status})"
            for c in client.containers.list(all=True, filters=selector)
        ]
        images = client.images.list(filters=selector)
        found += [f"image {i.tags or i.short_id}" for i in images]
        seen = {i.id for i in images}
        layers = client.images.list(all=True, filters={"label": f"autoopt.test={INSTANCE}"})
        found += [f"layer {i.short_id} of a test image" for i in layers if i.id not in seen]
        return found
    finally:
        client.close()


def containers_left() -> list[str]:
    return [x for x in leftovers() if x.startswith("container ")]


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_ready: None) -> Iterator[Workspace]:
    """A copy of the repository's targets and program.md; checks for leftovers after."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(
        REPO / "targets", root / "targets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.copy2(REPO / "program.md", root / "program.md")
    monkeypatch.delenv("AUTOOPT_STATE_DIR", raising=False)
    monkeypatch.setenv("AUTOOPT_WORKSPACE", str(root))
    yield Workspace(root)
    assert leftovers() == [], "the Docker backend left containers or images behind"


def _text(result: object) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


# -- (1) a whole A/B run through the MCP server -----------------------------------------
async def _run_ab(client: Client, patch: str, runs: int) -> dict:
    result = await call_done(
        client,
        "run_ab",
        {
            "target": "pyserver",
            "backend": "docker",
            "runs": runs,
            "patch": patch,
            "seed": 7,
        },
    )
    assert not result.is_error, _text(result)
    return await full_view(client, result)


def _only_latency_noise(view: dict) -> bool:
    """The primary metric passed and only the latency guardrail was not shown to hold."""
    decision = view["report"]["decision"]
    primary = decision.get("primary") or {}
    unsettled = [g for g in decision.get("guardrails", []) if not g.get("passed")]
    return (
        bool(primary)
        and view["failed"] == {"A": 0, "B": 0}
        and [g["guardrail"]["metric"] for g in unsettled] == ["latency_p99_ms"]
    )


async def test_run_ab_pyserver_history_cap_keeps(ws: Workspace) -> None:
    patch_file = REPO / "examples" / "patches" / "pyserver-history-cap.patch"
    if not (ws.targets_dir / "pyserver" / "target.md").is_file() or not patch_file.is_file():
        pytest.fail(
            "targets/pyserver/target.md or examples/patches/pyserver-history-cap.patch "
            "is missing from the repository"
        )
    server = create_server(ws)
    t0 = time.monotonic()
    async with Client(server) as client:
        view = await _run_ab(client, patch_file.read_text(), runs=3)
        if view["verdict"] != "KEEP" and _only_latency_noise(view):
            # p99 of ~200 requests is the 2nd-slowest request: on a busy 2-core host one
            # slow run leaves n=3 unable to bound the latency guardrail. Say so, run 5.
            print(
                f"runs=3 was {view['verdict']} on latency noise alone ({view['reason']}); "
                "again with runs=5"
            )
            view = await _run_ab(client, patch_file.read_text(), runs=5)
    elapsed = time.monotonic() - t0
    assert view["verdict"] == "KEEP", json.dumps(view, indent=1)[:4000]
    assert view["backend"] == "docker" and view["status"] == "done"
    run = server.engine.get_run(view["run_id"])  # type: ignore[attr-defined]
    assert all(s.ok for s in run.samples), [s.error for s in run.samples]
    for s in run.samples:
        assert s.metrics["peak_rss_mb"] > 5, s.metrics
        assert s.metrics["cgroup_max_usage_mb"] > 0, s.metrics
        assert s.metrics["oom_killed"] == 0 and not s.died
        assert "cpu_s" in s.metrics
    # each teardown but the last went on while the next run deployed (a fresh container)
    hidden = ["teardown_hidden_s" in s.timings for s in run.samples]
    assert hidden == [True] * (len(hidden) - 1) + [False], hidden
    shells = "\n".join(step.shell for step in run.journal.steps)
    assert 'docker build -f "$HERE/Dockerfile"' in shells
    assert "CONTAINER=$(docker run -d -p 127.0.0.1::8080" in shells
    assert "docker exec \"$CONTAINER\" sh -c 'echo 5 > /proc/1/clear_refs'" in shells
    assert 'docker exec "$CONTAINER" cat /proc/1/status' in shells
    assert 'docker rm -f "$CONTAINER"' in shells
    print(f"run_ab pyserver/docker runs={view['runs']}: {elapsed:.1f} s, {view['reason']}")
    await _record_and_replay(server, view, ws)


async def _record_and_replay(server: object, view: dict, ws: Workspace) -> None:
    """Record the docker run, then replay its scripts in a clean shell, with no server."""
    async with Client(server) as client:  # type: ignore[arg-type]
        rec = await client.call_tool(
            "record_experiment",
            {
                "run_id": view["run_id"],
                "exp_id": "exp-docker",
                "description": "cap history",
                "hypothesis": "deep copies in HISTORY dominate the peak",
            },
        )
    assert not rec.is_error, _text(rec)
    folder = ws.root / rec.structured_content["directory"]
    assert (folder / "Dockerfile").is_file()
    replay = ws.root.parent / "replay"
    shutil.copytree(folder, replay)
    env = {"PATH": os.environ["PATH"], "HOME": str(ws.root.parent)}
    try:
        out = subprocess.run(
            "./build.sh >/dev/null && ./deploy.sh >/dev/null && ./workload.sh >/dev/null && "
            "./collect.sh && ./teardown.sh >/dev/null",
            shell=True,
            cwd=replay,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        peaks = [
            float(x.split("=")[1]) for x in out.stdout.splitlines() if x.startswith("peak_rss_mb=")
        ]
        assert len(peaks) == 2
        for arm, peak in zip(("A", "B"), peaks, strict=True):
            recorded = sorted(v for v in view["values"][arm] if v is not None)
            median = recorded[len(recorded) // 2]
            assert abs(peak / median - 1) < 0.10, (arm, peak, recorded)  # stated tolerance
        assert "docker rm -f" in (replay / "teardown.sh").read_text()
    finally:
        for arm in ("a", "b"):  # the replay's own images belong to the person replaying
            subprocess.run(
                ["docker", "rmi", "-f", f"autoopt/pyserver:repro-{arm}"], capture_output=True
            )


# -- (2) a broken Dockerfile ------------------------------------------------------------
async def test_broken_dockerfile_is_a_build_error_with_the_log_tail(ws: Workspace) -> None:
    add_target(ws, "tiny-broken", dockerfile=BROKEN_DOCKERFILE)
    async with Client(create_server(ws)) as client:
        result = await call_done(client, "build", {"target": "tiny-broken", "backend": "docker"})
    text = _text(result)
    assert result.is_error, text
    assert "docker build of tiny-broken failed" in text
    assert "Log tail" in text and "autoopt-broken-marker" in text
    assert "non-zero code: 7" in text
    assert leftovers() == [], "the failed build's step images were left behind"


async def test_missing_from_image_says_what_to_do(ws: Workspace) -> None:
    dockerfile = "FROM autoopt/does-not-exist:never\nCOPY . /app\n"
    add_target(ws, "tiny-nofrom", dockerfile=dockerfile)
    engine = Engine(ws)
    with pytest.raises(BuildFailed) as caught:
        await engine.build("tiny-nofrom", backend="docker")
    message = str(caught.value)
    assert "offline base" in message and "Log tail" in message, message


async def test_missing_base_image_is_reported_before_anything_runs(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoopt.tools.errors import BackendUnavailable

    monkeypatch.setenv("AUTOOPT_BASE_IMAGE", "autoopt/no-such-base:never")
    add_target(ws, "tiny-nobase")
    reason = DockerBackend(ws).unavailable_reason()
    assert reason == "base image autoopt/no-such-base:never missing; run scripts/setup-docker.sh"
    with pytest.raises(BackendUnavailable, match="no-such-base:never missing"):
        await Engine(ws).build("tiny-nobase", backend="docker")


# -- (3) OOM, and the measurements of a healthy service ---------------------------------
async def _one_run(engine: Engine, target: str) -> tuple[dict[str, object], object]:
    """deploy -> reset peak -> workload -> collect -> teardown, as ABRunner.one does."""
    spec = engine.spec(target)
    backend = engine.backend("docker")
    build = await engine.build(target, backend="docker")
    deployment = None
    try:
        deployment = await backend.deploy(spec, build)
        if spec.kind == "service":
            assert deployment.container and deployment.pid and deployment.endpoint
            assert await backend.reset_peak(deployment)
        script = workload_script(engine.workspace, spec, None)
        cmd, shell = workload_argv(spec, script, deployment, engine.workspace.target_dir(spec.name))
        result = await backend.run_workload(
            spec, deployment, cmd.argv, shell, name="run000-A", env=cmd.env
        )
        collected = await backend.collect(spec, deployment, result)
        return collected, result
    finally:
        try:
            if deployment is not None:
                await backend.teardown(deployment)
                await backend.teardown(deployment)  # idempotent
                if spec.kind == "service":
                    shells = [s.shell for s in deployment.journal.steps]
                    assert 'docker rm -f "$CONTAINER" >/dev/null 2>&1 || true' in shells
        finally:
            await backend.discard(build)
            await backend.discard(build)  # idempotent
            engine.source(spec).remove_worktree(Path(build.tree))


async def test_tiny_memory_limit_is_reported_oom_killed(ws: Workspace) -> None:
    add_target(ws, "tiny-oom", memory="24m")
    collected, result = await _one_run(Engine(ws), "tiny-oom")
    assert collected["oom_killed"] is True, collected
    assert collected["died"] is True, collected
    assert result.metrics.get("alloc_ok") == 0  # the request died with the container


async def test_service_peak_belongs_to_the_workload(ws: Workspace) -> None:
    add_target(ws, "tiny-ok", memory="256m")
    collected, result = await _one_run(Engine(ws), "tiny-ok")
    metrics = collected["metrics"]
    assert result.metrics["alloc_ok"] == 1, result.log_tail
    assert collected["died"] is False and collected["oom_killed"] is False
    # the workload made the service hold 40 MB more: the peak is that plus the interpreter
    assert 45 < metrics["peak_rss_mb"] < 80, metrics
    assert metrics["rss_mb"] <= metrics["peak_rss_mb"] + 0.1
    assert metrics["cgroup_max_usage_mb"] >= 40, metrics
    assert metrics["cpu_s"] >= 0
    assert collected["smaps"], "smaps_rollup of the host pid"


async def test_batch_target_runs_in_a_fresh_container(ws: Workspace) -> None:
    add_target(
        ws,
        "tiny-batch",
        kind="batch",
        memory="256m",
        workload="duration: 5s",
        metric="peak_rss_mb",
        direction="lower",
    )
    collected, result = await _one_run(Engine(ws), "tiny-batch")
    assert result.exit_code == 0, result.log_tail
    assert result.metrics["items"] == 40 << 20
    assert 40 < collected["metrics"]["peak_rss_mb"] < 70, collected
    assert collected["died"] is False and collected["oom_killed"] is False


async def test_without_host_view_measures_through_docker_exec(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote engine: no /proc or cgroup of the container here, so docker exec is used."""
    from autoopt.tools.backends import docker as backend_module

    monkeypatch.setattr(backend_module._Cgroup, "of", classmethod(lambda cls, pid, cid: None))
    add_target(ws, "tiny-remote", memory="256m")
    collected, result = await _one_run(Engine(ws), "tiny-remote")
    metrics = collected["metrics"]
    assert result.metrics["alloc_ok"] == 1, result.log_tail
    assert 45 < metrics["peak_rss_mb"] < 80, metrics  # the reset went through docker exec too
    assert "cgroup_max_usage_mb" not in metrics and collected["died"] is False


async def test_unhealthy_service_fails_deploy_and_cancel_removes_the_container(
    ws: Workspace,
) -> None:
    import anyio

    add_target(ws, "tiny-sick", memory="256m")
    md = ws.targets_dir / "tiny-sick" / "target.md"
    md.write_text(
        md.read_text()
        .replace("health: /health", "health: /missing")
        .replace("health_timeout: 30", "health_timeout: 2")
    )
    engine = Engine(ws)
    spec = engine.spec("tiny-sick")
    backend = engine.backend("docker")
    build = await engine.build("tiny-sick", backend="docker")
    try:
        with pytest.raises(DeployFailed) as caught:
            await backend.deploy(spec, build)
        message = str(caught.value)
        assert "did not answer" in message and "health_timeout" in message, message
        assert "request /missing" in message, "the container's log tail"
        assert containers_left() == []
        spec.local.health_timeout_s = 60
        with anyio.move_on_after(1.5) as scope:
            await backend.deploy(spec, build)
        assert scope.cancelled_caught
        assert containers_left() == [], "a cancelled deploy left its container"
    finally:
        await backend.discard(build)
        engine.source(spec).remove_worktree(Path(build.tree))


async def test_cancelled_run_ab_leaves_nothing_behind(ws: Workspace) -> None:
    """Cancel while building, and while a container runs: no container, no image is left."""
    import anyio

    add_target(ws, "tiny-cancel", memory="256m")
    engine = Engine(ws)
    with anyio.move_on_after(0.4) as scope:
        await engine.run_ab("tiny-cancel", runs=3, warmup=0, backend="docker", seed=1)
    assert scope.cancelled_caught, "run_ab finished within 0.4 s: cancel it earlier"
    assert leftovers() == [], "cancelled while building"
    assert engine.deployments == {}

    finished = anyio.Event()

    async def ab() -> None:
        await engine.run_ab("tiny-cancel", runs=3, warmup=0, backend="docker", seed=1)
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ab)
        with anyio.fail_after(120):
            while not running_containers() and not finished.is_set():
                await anyio.sleep(0.05)
        assert not finished.is_set(), "run_ab finished before a container was seen running"
        tg.cancel_scope.cancel()  # a run's container is up: cancel now
    assert leftovers() == [], "cancelled while a container ran"
    assert engine.deployments == {}


# -- cleaning up after a server that is gone --------------------------------------------
async def test_forget_orphans_removes_what_a_dead_server_left(ws: Workspace) -> None:
    import docker

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    labels = {
        "autoopt.managed": "true",
        "autoopt.target": "tiny",
        "autoopt.build": "b-x",
        "autoopt.instance": f"{socket.gethostname()}-{dead.pid}",
    }
    foreign = dict(labels, **{"autoopt.instance": f"some-other-host-{dead.pid}"})
    client = docker.from_env()
    orphan = client.containers.create(base_image(), ["sleep", "60"], labels=labels)
    other = client.containers.create(base_image(), ["sleep", "60"], labels=foreign)
    try:
        backend = DockerBackend(ws)  # cleans up on construction
        names = {c.name for c in client.containers.list(all=True)}
        assert orphan.name not in names, "the orphan of a dead server was not removed"
        assert other.name in names, "a container of another host must be left alone"
        assert backend.forget_orphans() == []
    finally:
        for c in (orphan, other):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        client.close()


# -- (4) no engine ------------------------------------------------------------------------
async def test_unreachable_engine_is_reported_and_list_targets_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(
        REPO / "targets", root / "targets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.copy2(REPO / "program.md", root / "program.md")
    monkeypatch.delenv("AUTOOPT_STATE_DIR", raising=False)
    socket_path = tmp_path / "no-such-dir" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    ws = Workspace(root)
    t0 = time.monotonic()
    reason = DockerBackend(ws).unavailable_reason()
    assert time.monotonic() - t0 < 10
    assert reason and f"no Docker engine reachable at unix://{socket_path}" in reason, reason
    assert "scripts/setup-docker.sh" in reason
    async with Client(create_server(ws)) as client:
        result = await client.call_tool("list_targets", {})
    assert not result.is_error, _text(result)
    targets = {t["name"]: t for t in result.structured_content["targets"]}
    assert targets["pyserver"]["valid"], targets["pyserver"]
    docker_ready = targets["pyserver"]["readiness"]["docker"]
    assert "no Docker engine reachable" in docker_ready
    assert targets["pyserver"]["readiness"]["local"] == "ready"


async def test_profile_cpu_attaches_to_a_docker_deployment(ws: Workspace) -> None:
    """py-spy runs on the host and attaches to the container's process by its host pid."""
    async with Client(create_server(ws)) as client:
        build = await call_done(client, "build", {"target": "pyserver", "backend": "docker"})
        assert not build.is_error, _text(build)
        dep = await client.call_tool("deploy", {"build_id": build.structured_content["build_id"]})
        assert not dep.is_error, _text(dep)
        dep_id = dep.structured_content["deployment_id"]
        try:
            prof = await call_done(
                client,
                "profile_cpu",
                {
                    "target": "pyserver",
                    "deployment_id": dep_id,
                    "workload": "workload-ingest.sh",
                    "label": "docker-cpu",
                },
            )
            assert not prof.is_error, _text(prof)
            view = await full_view(client, prof)
            assert view["tool"] == "py-spy"
            assert any("host pid" in note for note in view["notes"])
            assert any("_store_contains" in line for line in view["top"][:5]), view["top"][:5]
            mem = await call_done(
                client,
                "profile_memory", {"target": "pyserver", "deployment_id": dep_id, "tool": "memray"}
            )
            assert mem.is_error and "memray" in _text(mem)
        finally:
            removed = await client.call_tool(
                "teardown", {"build_id": build.structured_content["build_id"]}
            )
            assert removed.structured_content["deployments"] == [dep_id], _text(removed)
    assert containers_left() == []


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="duet needs 2 CPUs")
async def test_duet_pins_each_arms_container_to_its_own_cpus(ws: Workspace) -> None:
    """order='duet' on docker: both containers of a pair run at once, on disjoint cpusets."""
    add_target(ws, "tiny-duet", kind="batch", memory="256m", workload="duration: 5s",
               metric="peak_rss_mb", direction="lower")
    (ws.targets_dir / "tiny-duet" / "src" / "batch.py").write_text(
        "import os, time\nstart = time.time()\ntime.sleep(1)\n"
        "print('cpu_mask=%d' % sum(1 << c for c in os.sched_getaffinity(0)))\n"
        "print('t_start=%.3f' % start)\nprint('t_end=%.3f' % time.time())\n"
    )
    run = await Engine(ws).run_ab(
        "tiny-duet", runs=3, warmup=0, backend="docker", seed=4, order="duet"
    )
    assert len(run.samples) == 6 and all(s.ok for s in run.samples), run.samples
    for a, b in zip(run.samples[::2], run.samples[1::2], strict=True):
        ma, mb = a.metrics, b.metrics
        assert int(ma["cpu_mask"]) & int(mb["cpu_mask"]) == 0, (ma, mb)
        assert ma["t_start"] < mb["t_end"] and mb["t_start"] < ma["t_end"], (ma, mb)
    assert any("--cpuset-cpus" in step.shell for step in run.journal.steps)
