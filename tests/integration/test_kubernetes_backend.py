"""The Kubernetes backend against the project's real test cluster (Kubernetes 1.20.2).

    bash scripts/k8s-cluster.sh up        # the cluster (cached, ~20 s)
    bash scripts/setup-docker.sh          # the Docker engine that builds the images

Skipped only when the cluster (or the Docker engine) is not up and CI is unset; in CI
(CI=true) they fail instead. The fixture points the backend at the cluster with
AUTOOPT_KUBECONFIG=$(scripts/k8s-cluster.sh kubeconfig) and AUTOOPT_K8S_CONTEXT=autoopt-test
(set before the server is made), and checks afterwards that the workspace's namespace holds
no Deployment, ReplicaSet, pod or Service labelled autoopt.managed=true and that the local
engine holds no image labelled by this test process.

The recorded scripts are replayed by hand once (build.sh, then deploy/workload/collect/
teardown of arm a) with the kubectl the scripts' PATH finds: the cluster's own 1.20 one
(`scripts/k8s-cluster.sh env`) unless another is installed (here: Google Cloud SDK's 1.32).

Not exercised on this 1.20 cluster: `kind` and `registry` image delivery (no kind, no
registry here: only `containerd-import` runs); servers >= 1.22, which answer a Service
DELETE with the Service instead of a Status (the backend never parses delete replies, so
either is fine); servers >= 1.24, whose ServiceAccounts have no token secret (the backend
waits for one only on older servers); images without `cat`/`sh` (measured through an
ephemeral debug container on newer clusters: ephemeral containers are alpha in 1.20, so the
backend does not use them and such an image gives no peak_rss_mb).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from autoopt.server.app import create_server
from autoopt.tools.backends.kubernetes import KubernetesBackend, default_namespace
from autoopt.tools.engine import Engine
from autoopt.tools.errors import DeployFailed
from autoopt.tools.workload import workload_argv, workload_script
from autoopt.tools.workspace import Workspace
from tests.conftest import call_done, full_view

pytestmark = [pytest.mark.kubernetes, pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "k8s-cluster.sh"
CONTEXT = "autoopt-test"
STATE = os.environ.get("AUTOOPT_K8S_STATE") or "/var/lib/autoopt-k8s"
INSTANCE = f"{socket.gethostname()}-{os.getpid()}"
K8S_ENV = (
    "AUTOOPT_KUBECONFIG",
    "AUTOOPT_K8S_CONTEXT",
    "AUTOOPT_K8S_NAMESPACE",
    "AUTOOPT_K8S_IMAGE_DELIVERY",
    "AUTOOPT_K8S_REGISTRY",
    "AUTOOPT_K8S_READY_TIMEOUT",
)

TINY_SERVER = """\
import http.server, os, sys
print("tiny-k8s-marker: starting", flush=True)
if os.environ.get("TINY_EXIT"):
    print("tiny-k8s-marker: exiting on purpose", flush=True)
    sys.exit(int(os.environ["TINY_EXIT"]))
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
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

TINY_WORKLOAD = """\
#!/usr/bin/env bash
# usage: workload.sh ENDPOINT   -- makes the service hold ALLOC_MB more memory
set -u
if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=30)" \\
    "$1/alloc/${ALLOC_MB:-80}"; then
  echo "alloc_ok=1"
else
  echo "alloc_ok=0"
fi
"""

DOCKERFILE = f"""\
ARG BASE_IMAGE=autoopt/python-base:bookworm
FROM ${{BASE_IMAGE}}
LABEL autoopt.test={INSTANCE}
WORKDIR /app
COPY . /app
CMD ["python3", "/app/server.py"]
"""

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: server
          image: autoopt/{name}:latest
          command: ["python3", "/app/server.py"]
          env: {env}
          ports:
            - containerPort: 8080
"""


def target_md(name: str, memory: str) -> str:
    return textwrap.dedent(f"""\
        # {name}: a tiny target of the Kubernetes backend's tests

        ## Source
        repo: local
        path: targets/{name}/src

        ## Build
        dockerfile: targets/{name}/Dockerfile
        build_timeout: 120

        ## Primary Metric
        name: alloc_ok
        direction: higher

        ## Workload
        script: targets/{name}/workload.sh

        ## Scope
        editable:
          - server.py

        ## Service
        port: 8080

        ## Local
        kind: service
        run: python3 server.py
        health: /health
        health_timeout: 2

        ## Kubernetes
        manifest: targets/{name}/k8s.yaml
        memory: {memory}
        """)


def add_target(ws: Workspace, name: str, *, memory: str = "256Mi", env: str = "[]") -> Path:
    folder = ws.targets_dir / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "server.py").write_text(TINY_SERVER)
    (folder / "Dockerfile").write_text(DOCKERFILE)
    workload = folder / "workload.sh"
    workload.write_text(TINY_WORKLOAD)
    workload.chmod(0o755)
    (folder / "k8s.yaml").write_text(MANIFEST.format(name=name, env=env))
    (folder / "target.md").write_text(target_md(name, memory))
    return folder


# -- the cluster, and what the tests leave behind ---------------------------------------
def _cluster_problem() -> str | None:
    try:
        status = subprocess.run(
            ["bash", str(CLUSTER_SH), "status"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scripts/k8s-cluster.sh status failed: {exc}"
    if status.returncode != 0:
        said = (status.stdout + status.stderr).strip()
        return f"the test cluster is not up ({said}); run: bash scripts/k8s-cluster.sh up"
    import docker

    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker engine to build images ({exc}); run: bash scripts/setup-docker.sh"
    return None


@pytest.fixture(scope="module")
def kubeconfig() -> str:
    problem = _cluster_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI is set, so the Kubernetes tests must run: {problem}")
    if problem:
        pytest.skip(problem)
    out = subprocess.run(
        ["bash", str(CLUSTER_SH), "kubeconfig"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


class Cluster:
    """The test's view of the cluster (its own client, not the backend's)."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=kubeconfig, context=CONTEXT)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace

    def managed(self, selector: str = "autoopt.managed=true") -> list[str]:
        """What the server created in the namespace and is still there."""
        ns, kw = self.namespace, {"label_selector": selector}
        try:
            found = [
                f"deployment/{d.metadata.name}"
                for d in self.apps.list_namespaced_deployment(ns, **kw).items
            ]
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return []
            raise
        found += [
            f"replicaset/{r.metadata.name}"
            for r in self.apps.list_namespaced_replica_set(ns, **kw).items
        ]
        found += [f"pod/{p.metadata.name}" for p in self.core.list_namespaced_pod(ns, **kw).items]
        found += [
            f"service/{s.metadata.name}" for s in self.core.list_namespaced_service(ns, **kw).items
        ]
        return found

    def delete_namespace(self) -> None:
        with contextlib.suppress(Exception):
            self.core.delete_namespace(self.namespace, _preload_content=False).release_conn()


def images_left() -> list[str]:
    """Images on the local engine labelled by this test process (the base isn't)."""
    import docker

    client = docker.from_env()
    try:
        selector = {"label": ["autoopt.managed=true", f"autoopt.instance={INSTANCE}"]}
        return [f"image {i.tags or i.short_id}" for i in client.images.list(filters=selector)]
    finally:
        client.close()


@pytest.fixture
def cluster(
    workspace: Workspace, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """The backend pointed at the test cluster; the workspace's namespace checked and
    deleted afterwards."""
    for name in K8S_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTOOPT_KUBECONFIG", kubeconfig)
    monkeypatch.setenv("AUTOOPT_K8S_CONTEXT", CONTEXT)
    view = Cluster(kubeconfig, default_namespace(workspace))
    try:
        yield view
        assert view.managed() == [], "the kubernetes backend left objects in the namespace"
        assert images_left() == [], "the kubernetes backend left images on the local engine"
    finally:
        view.delete_namespace()


def _text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


# -- (1) a whole A/B run through the MCP server -----------------------------------------
async def test_run_ab_pyserver_history_cap_then_record(
    workspace: Workspace, cluster: Cluster
) -> None:
    patch = (REPO / "examples" / "patches" / "pyserver-history-cap.patch").read_text()
    server = create_server(workspace)
    t0 = time.monotonic()
    async with Client(server) as client:
        result = await call_done(
            client,
            "run_ab",
            {
                "target": "pyserver",
                "backend": "kubernetes",
                "runs": 3,
                "warmup": 0,
                "seed": 7,
                "patch": patch,
            },
        )
        assert not result.is_error, _text(result)
        view = await full_view(client, result)
        elapsed = time.monotonic() - t0
        print(
            f"run_ab pyserver/kubernetes runs=3: {elapsed:.1f} s, verdict {view['verdict']}: "
            f"{view['reason']}"
        )
        verdicts = ("KEEP", "DISCARD", "INCONCLUSIVE", "SAME")
        assert view["verdict"] in verdicts, json.dumps(view)[:3000]
        assert view["backend"] == "kubernetes" and view["status"] == "done"
        run = server.engine.get_run(view["run_id"])  # type: ignore[attr-defined]
        assert all(s.ok for s in run.samples), [s.error for s in run.samples]
        for s in run.samples:
            assert s.metrics["peak_rss_mb"] > 5, s.metrics
            assert s.metrics["rss_mb"] <= s.metrics["peak_rss_mb"] + 0.1, s.metrics
            assert s.metrics["cpu_s"] > 0 and "cpu_pct" in s.metrics, s.metrics
            assert s.metrics["oom_killed"] == 0 and s.restarts == 0 and not s.died
        # each teardown but the last went on while the next run deployed (a fresh pod)
        hidden = ["teardown_hidden_s" in s.timings for s in run.samples]
        assert hidden == [True] * (len(hidden) - 1) + [False], hidden
        shells = "\n".join(step.shell for step in run.journal.steps)
        assert "load-image" in shells and 'docker build -f "$HERE/Dockerfile"' in shells
        assert 'kubectl --context "$CONTEXT" -n "$NAMESPACE" apply -f - <<EOF' in shells
        assert "image: ${IMAGE}" in shells
        assert "exec \"$POD\" -c pyserver -- sh -c 'echo 5 > /proc/1/clear_refs'" in shells
        assert "wait --for=condition=Ready pod -l autoopt.deployment=dep-" in shells
        assert "PF_PID=$!" in shells
        assert f"CONTEXT={CONTEXT}" in shells

        recorded = await client.call_tool(
            "record_experiment",
            {
                "run_id": view["run_id"],
                "exp_id": "k8s001",
                "description": "cap HISTORY, shallow snapshots (kubernetes)",
                "hypothesis": "HISTORY keeps a deep copy of the store per /process call",
                "output_type": "pr",
            },
        )
        assert not recorded.is_error, _text(recorded)
        folder = workspace.root / recorded.structured_content["directory"]
    for script in ("deploy.sh", "collect.sh", "teardown.sh"):
        text = (folder / script).read_text()
        assert "kubectl" in text, f"{script} names no kubectl command:\n{text}"
    assert "apply -f - <<EOF" in (folder / "deploy.sh").read_text()
    assert "load-image" in (folder / "build.sh").read_text()
    assert cluster.managed() == []
    arm_a = [s.metrics["peak_rss_mb"] for s in run.samples if s.arm == "A"]
    await anyio.to_thread.run_sync(replay_arm_a, folder, sorted(arm_a)[len(arm_a) // 2])


def replay_arm_a(folder: Path, recorded_peak: float) -> None:
    """The recorded scripts, by hand: build.sh, then deploy/workload/collect/teardown of arm
    a; the cluster's kubectl (`scripts/k8s-cluster.sh env`) is on PATH."""
    env_lines = subprocess.run(
        ["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True
    ).stdout
    kubectl_bin = next(
        line.split("=", 1)[1].split(":")[0]
        for line in env_lines.splitlines()
        if line.startswith("export PATH=")
    )
    env = {**os.environ, "PATH": f"{kubectl_bin}:{os.environ['PATH']}"}
    outputs: dict[str, str] = {}
    try:
        for script, args in (
            ("build.sh", []),
            ("deploy.sh", ["a"]),
            ("workload.sh", ["a"]),
            ("collect.sh", ["a"]),
            ("teardown.sh", ["a"]),
        ):
            done = subprocess.run(
                ["bash", script, *args],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            outputs[script] = done.stdout
            assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    finally:
        subprocess.run(["bash", "teardown.sh", "a"], cwd=folder, env=env, capture_output=True)
        for arm in ("a", "b"):  # build.sh's images: the local engine's and the cluster's
            image = f"autoopt/pyserver:repro-{arm}"
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
            ctr = ["ctr", "--address", f"{STATE}/run/containerd.sock", "-n", "k8s.io"]
            subprocess.run([*ctr, "images", "rm", f"docker.io/{image}"], capture_output=True)
    replayed = float(outputs["collect.sh"].split("peak_rss_mb=")[1].split()[0])
    print(f"replayed arm a by hand: peak_rss_mb={replayed} (recorded median {recorded_peak})")
    assert abs(replayed - recorded_peak) < 0.25 * recorded_peak, outputs["collect.sh"]
    assert "requests=" in outputs["workload.sh"] and "restarts=0" in outputs["collect.sh"]


# -- (2) a pod that never becomes Ready -------------------------------------------------
async def test_pod_that_never_becomes_ready_is_an_error_with_its_events(
    workspace: Workspace, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ways: the command exits (noticed at once: CrashLoop), and the health path
    answers 404 (noticed at the timeout, AUTOOPT_K8S_READY_TIMEOUT lowered to 6 s)."""
    monkeypatch.setenv("AUTOOPT_K8S_READY_TIMEOUT", "6")
    folder = add_target(workspace, "tiny-sick", env='[{name: TINY_EXIT, value: "3"}]')
    engine = Engine(workspace)
    spec = engine.spec("tiny-sick")
    backend = engine.backend("kubernetes")
    build = await engine.build("tiny-sick", backend="kubernetes")
    try:
        t0 = time.monotonic()
        with pytest.raises(DeployFailed) as caught:
            await backend.deploy(spec, build)
        message = str(caught.value)
        print(f"exiting command noticed in {time.monotonic() - t0:.1f} s:\n{message}")
        assert "did not become Ready" in message and "exit code 3" in message, message
        assert "Container statuses:" in message and "Events:" in message, message
        assert "Scheduled" in message and "Started" in message, "the pod's events"
        assert "tiny-k8s-marker: exiting on purpose" in message, "the container's log tail"
        assert cluster.managed() == []

        (folder / "k8s.yaml").write_text(MANIFEST.format(name="tiny-sick", env="[]"))
        spec.local.health = "/missing"
        t0 = time.monotonic()
        with pytest.raises(DeployFailed) as caught:
            await backend.deploy(spec, build)
        message = str(caught.value)
        print(f"404 health noticed in {time.monotonic() - t0:.1f} s:\n{message}")
        assert "not Ready within 6 s" in message, message
        assert "Readiness probe failed" in message and "404" in message, message
        assert cluster.managed() == []
    finally:
        await backend.discard(build)
        engine.source(spec).remove_worktree(Path(build.tree))


# -- (3) a cancelled run_ab -------------------------------------------------------------
async def test_cancelled_run_ab_leaves_no_pod(workspace: Workspace, cluster: Cluster) -> None:
    """Cancelled 0.3 s after the first Deployment appears (the pod is starting) and 3 s
    after (the workload runs): the run is marked cancelled, nothing is left."""
    server = create_server(workspace)
    state = workspace.state_dir / "runs"
    async with Client(server) as client:
        for delay in (0.3, 3.0):
            seen = {p.parent.name for p in state.glob("*/run.json")}
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await client.call_tool(
                        "run_ab",
                        {"target": "pyserver", "backend": "kubernetes", "runs": 3, "warmup": 0},
                    )

                tg.start_soon(call)
                with anyio.fail_after(180):
                    while not await anyio.to_thread.run_sync(cluster.managed):
                        await anyio.sleep(0.1)
                await anyio.sleep(delay)
                tg.cancel_scope.cancel()
            with anyio.fail_after(60):  # marked cancelled once its teardown is done
                while True:
                    runs = [
                        json.loads(p.read_text())
                        for p in state.glob("*/run.json")
                        if p.parent.name not in seen
                    ]
                    if runs and runs[0]["status"] != "running":
                        break
                    await anyio.sleep(0.2)
            run = runs[0]
            print(f"cancelled {delay} s after the first deploy: {len(run['samples'])} sample(s)")
            assert run["status"] == "cancelled", run["status"]
            assert cluster.managed() == [], f"a run_ab cancelled after {delay} s left objects"
            assert server.engine.deployments == {}  # type: ignore[attr-defined]


# -- (4) no context configured ----------------------------------------------------------
async def test_without_a_context_kubernetes_is_unavailable_and_the_rest_works(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needs no cluster: even with a kubeconfig whose current-context works, the backend
    refuses to pick a context by itself."""
    for name in K8S_ENV:
        monkeypatch.delenv(name, raising=False)
    admin = Path(STATE, "kubeconfig", "admin.kubeconfig")
    if admin.is_file():
        monkeypatch.setenv("AUTOOPT_KUBECONFIG", str(admin))
        monkeypatch.setenv("KUBECONFIG", str(admin))
    async with Client(create_server(workspace)) as client:
        listed = await client.call_tool("list_targets", {})
        assert not listed.is_error, _text(listed)
        targets = {t["name"]: t for t in listed.structured_content["targets"]}
        readiness = targets["pyserver"]["readiness"]
        assert "AUTOOPT_K8S_CONTEXT" in readiness["kubernetes"], readiness
        assert readiness["local"] == "ready"
        refused = await call_done(
            client,
            "run_ab", {"target": "pyserver", "backend": "kubernetes", "runs": 3}
        )
        assert refused.is_error and "AUTOOPT_K8S_CONTEXT" in _text(refused), _text(refused)
        built = await call_done(client, "build", {"target": "pyserver", "backend": "local"})
        assert not built.is_error, _text(built)


# -- OOM, and orphans of a server that is gone ------------------------------------------
async def test_memory_limit_is_reported_oom_killed(workspace: Workspace, cluster: Cluster) -> None:
    """The workload makes the service hold 80 MB more under a 48Mi limit (## Kubernetes)."""
    add_target(workspace, "tiny-oom", memory="48Mi")
    engine = Engine(workspace)
    spec = engine.spec("tiny-oom")
    backend = engine.backend("kubernetes")
    build = await engine.build("tiny-oom", backend="kubernetes")
    deployment = None
    try:
        deployment = await backend.deploy(spec, build)
        assert await backend.reset_peak(deployment)
        script = workload_script(workspace, spec, None)
        cmd, shell = workload_argv(spec, script, deployment, workspace.target_dir(spec.name))
        result = await backend.run_workload(
            spec, deployment, cmd.argv, shell, name="run000-A", env=cmd.env
        )
        collected = await backend.collect(spec, deployment, result)
        assert result.metrics.get("alloc_ok") == 0, result.log_tail
        assert collected["oom_killed"] is True and collected["died"] is True, collected
    finally:
        if deployment is not None:
            await backend.teardown(deployment)
            await backend.teardown(deployment)  # idempotent
        await backend.discard(build)
        await backend.discard(build)  # idempotent
        engine.source(spec).remove_worktree(Path(build.tree))


async def test_forget_orphans_removes_what_a_dead_server_left(
    workspace: Workspace, cluster: Cluster
) -> None:
    """Objects labelled by a server process that is gone (same host) are deleted when a
    backend is made; those of a live process, or of another host, stay."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    backend = KubernetesBackend(workspace)
    assert backend.unavailable_reason() is None
    await anyio.to_thread.run_sync(backend._ensure_namespace)
    ns = backend.namespace

    def labelled(dep: str, instance: str) -> dict[str, str]:
        return {
            "autoopt.managed": "true",
            "autoopt.deployment": dep,
            "autoopt.instance": instance,
        }

    host = backend.hostname
    owners = {
        "dep-orphan": f"{host}-{dead.pid}",
        "dep-alive": f"{host}-{os.getpid()}",
        "dep-foreign": f"some-other-host-{dead.pid}",
    }
    for dep, instance in owners.items():
        cluster.core.create_namespaced_service(
            ns,
            {
                "metadata": {"name": f"svc-{dep}", "labels": labelled(dep, instance)},
                "spec": {"selector": {"x": "y"}, "ports": [{"port": 80}]},
            },
        )
    try:
        again = KubernetesBackend(workspace)  # cleans up when made
        left = cluster.managed()
        assert "service/svc-dep-orphan" not in left, left
        assert {"service/svc-dep-alive", "service/svc-dep-foreign"} <= set(left), left
        assert again.forget_orphans() == []
    finally:
        for dep in owners:
            await anyio.to_thread.run_sync(
                backend._delete_labelled, ns, f"autoopt.deployment={dep}"
            )
