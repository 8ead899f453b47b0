"""The Kubernetes backend: each build is an image, each deployment a Deployment (+ Services).

Images are built by the Docker backend on the local engine (the same Dockerfile, the same
build steps) and then delivered to the cluster: AUTOOPT_K8S_IMAGE_DELIVERY is
`containerd-import` (docker save + `scripts/k8s-cluster.sh load-image`, the project's test
cluster; the default), `kind` (`kind load docker-image`), `registry` (docker push to
AUTOOPT_K8S_REGISTRY) or `present` (the nodes already have it). discard() removes the image
from the local engine only: a copy imported into the cluster's containerd stays there.

Configuration (read when the backend is made): AUTOOPT_K8S_CONTEXT names the kubeconfig
context, and nothing happens without it (the server never falls back to the current
context); AUTOOPT_KUBECONFIG (else KUBECONFIG, else ~/.kube/config); AUTOOPT_K8S_NAMESPACE
(default `autoopt-<short hash of the workspace path>`, created when missing);
AUTOOPT_K8S_READY_TIMEOUT (the least time a pod gets to become Ready: 60 s, or target.md's
health_timeout when longer).

Per deployment the target's k8s.yaml is adapted (see k8s_manifest.py): objects named
`<target>-<deployment id>`, labelled `autoopt.managed=true`, `autoopt.deployment=<id>`,
`autoopt.instance=<host>-<server pid>`, ... The service is reached through a port-forward
(a listening socket on 127.0.0.1 whose connections each open a port-forward stream through
the API server): no kube-proxy, DNS or node port needed. Memory is read from the pod's
PID 1 through exec (`cat /proc/1/status`: VmHWM, VmRSS) after resetting VmHWM with
`echo 5 > /proc/1/clear_refs`; CPU from /proc/1/stat; restarts and OOM kills from the pod's
status. Teardown deletes everything labelled with the deployment's id (pods with grace 0)
and waits until it is gone.

The official client (`kubernetes`) is imported lazily: the server must start fast. Version
skew handled here: against a server <= 1.21 the client's delete_namespaced_service() deletes
the Service and then fails to read the Status it gets back, so deletes never parse replies.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from autoopt.tools.backends import k8s_manifest, k8s_pods
from autoopt.tools.backends.base import Build, Deployment, Progress, WorkloadResult
from autoopt.tools.backends.driver import HEALTH_WAIT_SH, drive, new_deployment, probe
from autoopt.tools.backends.k8s_pods import Forwarder, short_error
from autoopt.tools.errors import (
    AutooptError,
    BackendUnavailable,
    BuildFailed,
    DeployFailed,
    WorkloadFailed,
)
from autoopt.tools.journal import Step
from autoopt.tools.process import base_env, process_started, run
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workspace import Workspace

log = logging.getLogger("autoopt")
T = TypeVar("T")

DELIVERIES = ("containerd-import", "kind", "registry", "present")
DEFAULT_DELIVERY = "containerd-import"
CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "k8s-cluster.sh"
MANAGED = k8s_manifest.MANAGED
DEP_LABEL = k8s_manifest.DEPLOYMENT_LABEL
INSTANCE_LABEL = "autoopt.instance"
PING_TIMEOUT_S = 3.0
API_TIMEOUT_S = 30.0
REASON_TTL_S = 5.0
DEFAULT_READY_S = 60.0
DELETE_TIMEOUT_S = 60.0
EXEC_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 600.0
POLL_S = 0.1
WATCH_S = 1  # the longest wait for a pod change before listing again
SETTLE_S = 0.05  # between the lists of a teardown
TEST_CLUSTER_HINT = (
    "for the project's test cluster: scripts/k8s-cluster.sh up, then "
    "AUTOOPT_KUBECONFIG=$(scripts/k8s-cluster.sh kubeconfig) AUTOOPT_K8S_CONTEXT=autoopt-test"
)
STATUS_AWK = (
    'awk \'/^VmHWM/ {printf "peak_rss_mb=%.3f\\n", $2/1024} '
    '/^VmRSS/ {printf "rss_mb=%.3f\\n", $2/1024}\''
)
RESET_COMMAND = "echo 5 > /proc/1/clear_refs"


def _kubectl(args: str) -> str:
    return f'kubectl --context "$CONTEXT" -n "$NAMESPACE" {args}'


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking client call in a worker thread (not abandoned on cancel: it finishes)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def default_namespace(workspace: Workspace) -> str:
    digest = hashlib.sha256(str(Path(workspace.root).resolve()).encode()).hexdigest()[:8]
    return f"autoopt-{digest}"


@dataclass(frozen=True)
class Settings:
    """Where and how the backend works, from the environment."""

    context: str | None
    kubeconfig: str | None
    namespace: str
    delivery: str
    registry: str | None
    kind_cluster: str
    cluster_script: Path
    ready_timeout_s: float

    @classmethod
    def from_env(cls, workspace: Workspace) -> Settings:
        env = os.environ
        try:
            ready = float(env.get("AUTOOPT_K8S_READY_TIMEOUT") or DEFAULT_READY_S)
        except ValueError:
            ready = DEFAULT_READY_S
        return cls(
            context=env.get("AUTOOPT_K8S_CONTEXT") or None,
            kubeconfig=env.get("AUTOOPT_KUBECONFIG") or env.get("KUBECONFIG") or None,
            namespace=env.get("AUTOOPT_K8S_NAMESPACE") or default_namespace(workspace),
            delivery=(env.get("AUTOOPT_K8S_IMAGE_DELIVERY") or DEFAULT_DELIVERY).lower(),
            registry=(env.get("AUTOOPT_K8S_REGISTRY") or "").rstrip("/") or None,
            kind_cluster=env.get("AUTOOPT_K8S_KIND_CLUSTER") or "kind",
            cluster_script=Path(env.get("AUTOOPT_K8S_CLUSTER_SCRIPT") or CLUSTER_SCRIPT),
            ready_timeout_s=ready,
        )

    def problem(self) -> str | None:
        """A configuration error, before any cluster is asked."""
        if not self.context:
            return (
                "AUTOOPT_K8S_CONTEXT is not set: name the kubeconfig context the server may use "
                "(it never falls back to the kubeconfig's current-context); " + TEST_CLUSTER_HINT
            )
        if self.kubeconfig:
            missing = [p for p in self.kubeconfig.split(os.pathsep) if p and not Path(p).is_file()]
            if missing:
                return f"kubeconfig {', '.join(missing)} not found (AUTOOPT_KUBECONFIG)"
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.namespace):
            return (
                f"namespace {self.namespace!r} is not a valid namespace name "
                "(AUTOOPT_K8S_NAMESPACE: lowercase letters, digits and '-')"
            )
        if self.delivery not in DELIVERIES:
            return (
                f"AUTOOPT_K8S_IMAGE_DELIVERY={self.delivery!r} is not one of "
                f"{', '.join(DELIVERIES)}"
            )
        if self.delivery == "registry" and not self.registry:
            return "AUTOOPT_K8S_IMAGE_DELIVERY=registry needs AUTOOPT_K8S_REGISTRY (host[:port])"
        if self.delivery == "containerd-import":
            if not self.cluster_script.is_file():
                return (
                    f"image delivery containerd-import needs {self.cluster_script} "
                    "(AUTOOPT_K8S_CLUSTER_SCRIPT); or set AUTOOPT_K8S_IMAGE_DELIVERY"
                )
            if not shutil.which("ctr"):
                return "image delivery containerd-import needs ctr (containerd) on PATH"
        if self.delivery == "kind" and not shutil.which("kind"):
            return "image delivery kind needs the kind command on PATH"
        return None

    def context_shell(self) -> str:
        parts = [f"export KUBECONFIG={shlex.quote(self.kubeconfig)}"] if self.kubeconfig else []
        parts += [f"CONTEXT={shlex.quote(self.context or '')}", f"NAMESPACE={self.namespace}"]
        return "; ".join(parts)


class KubernetesBackend:
    """Builds with the Docker backend, delivers the image, runs one Deployment per run."""

    name = "kubernetes"

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.settings = Settings.from_env(workspace)
        self.hostname = k8s_manifest.label_value(socket.gethostname(), 40)
        self.instance = f"{self.hostname}-{os.getpid()}"
        started = process_started(os.getpid())
        self.started = str(int(started)) if started else ""
        self._api_client: Any = None
        self._stream_client: Any = None
        self._probe_client: Any = None
        self._stream_lock = threading.Lock()  # the client's stream() patches its ApiClient
        self._client_lock = threading.Lock()
        self._docker_backend: Any = None
        self._reason: tuple[float, str | None] | None = None
        self._namespace_ready = False
        self._forwarders: dict[str, Forwarder] = {}
        self._marks: dict[str, tuple[float | None, int | None]] = {}
        self._versions: dict[str, str] = {}  # selector -> resourceVersion of its last list
        self._containers: dict[str, str] = {}
        try:
            if self.unavailable_reason() is None:
                removed = self.forget_orphans()
                if removed:
                    log.warning(
                        "kubernetes: removed %d leftover(s) of earlier servers: %s",
                        len(removed),
                        ", ".join(removed),
                    )
        except Exception as exc:  # never fail construction over a cleanup
            log.warning("kubernetes: could not clean up leftovers of earlier servers: %s", exc)

    # -- cluster -------------------------------------------------------------------
    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def _where(self) -> str:
        s = self.settings
        return f"context {s.context} ({s.kubeconfig or '~/.kube/config'})"

    def _new_client(self, retries: int | None = None) -> Any:
        """An ApiClient for the configured context (never the current-context); the
        kubeconfig is only read (refreshed credentials are not written back)."""
        from kubernetes import client, config

        s = self.settings
        if s.context is None:
            raise BackendUnavailable(str(s.problem()))
        try:
            cfg = type.__call__(client.Configuration)
            config.load_kube_config(
                config_file=s.kubeconfig,
                context=s.context,
                client_configuration=cfg,
                persist_config=False,
            )
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot load {self._where()}: {short_error(exc)}; " + TEST_CLUSTER_HINT
            ) from exc
        if retries is not None:
            cfg.retries = retries
        return client.ApiClient(configuration=cfg)

    def _api(self) -> Any:
        with self._client_lock:
            if self._api_client is None:
                self._api_client = self._new_client()
        return self._api_client

    def _probe_api(self) -> Any:
        """For unavailable_reason(): no retries, so a silent server costs one short timeout."""
        with self._client_lock:
            if self._probe_client is None:
                self._probe_client = self._new_client(retries=0)
        return self._probe_client

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api())

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self._api())

    def _stream_core(self) -> Any:
        """A CoreV1Api for exec and port-forward only (stream() swaps its transport)."""
        from kubernetes import client

        with self._client_lock:
            if self._stream_client is None:
                self._stream_client = self._new_client()
        return client.CoreV1Api(self._stream_client)

    def _docker(self) -> Any:
        if self._docker_backend is None:
            from autoopt.tools.backends.docker import DockerBackend

            self._docker_backend = DockerBackend(self.workspace)
        return self._docker_backend

    def unavailable_reason(self) -> str | None:
        now = time.monotonic()
        if self._reason is not None and now - self._reason[0] < REASON_TTL_S:
            return self._reason[1]
        try:
            reason = self._check()
        except Exception as exc:
            reason = f"checking the cluster failed: {type(exc).__name__}: {short_error(exc)}"
        self._reason = (time.monotonic(), reason)
        return reason

    def _check(self) -> str | None:
        problem = self.settings.problem()
        if problem:
            return problem
        try:
            api = self._probe_api()
        except BackendUnavailable as exc:
            return str(exc)
        from kubernetes import client

        try:
            version = client.VersionApi(api).get_code(_request_timeout=PING_TIMEOUT_S)
        except Exception as exc:
            return (
                f"the API server of {self._where()} at {api.configuration.host} did not answer: "
                f"{short_error(exc)}; " + TEST_CLUSTER_HINT
            )
        reason = self._check_namespace(api)
        if reason:
            return reason
        docker = self._docker().unavailable_reason()
        if docker:
            return f"images are built with the local Docker engine, which is unavailable: {docker}"
        log.debug("kubernetes: %s, server %s", self._where(), version.git_version)
        return None

    def _check_namespace(self, api: Any) -> str | None:
        from kubernetes import client

        ns = self.namespace
        core = client.CoreV1Api(api)
        try:
            found = core.read_namespace(ns, _request_timeout=PING_TIMEOUT_S)
        except Exception as exc:
            if _status(exc) == 404:
                if not self._allowed(api, "create", "namespaces", namespace=None):
                    return (
                        f"namespace {ns} does not exist and {self._where()} may not create "
                        "namespaces; create it, or set AUTOOPT_K8S_NAMESPACE to one that exists"
                    )
                return None
            if _status(exc) == 403:
                return (
                    f"{self._where()} may not read namespace {ns}: {short_error(exc)}; "
                    "set AUTOOPT_K8S_NAMESPACE to a namespace it may use"
                )
            return f"reading namespace {ns} failed: {short_error(exc)}"
        if (getattr(found.status, "phase", None) or "") == "Terminating":
            return f"namespace {ns} is being deleted; wait, or set AUTOOPT_K8S_NAMESPACE"
        denied = [
            f"{verb} {resource}"
            for verb, group, resource in (
                ("create", "apps", "deployments"),
                ("create", "", "services"),
                ("delete", "", "pods"),
                ("create", "", "pods/exec"),
                ("create", "", "pods/portforward"),
            )
            if not self._allowed(api, verb, resource, namespace=ns, group=group)
        ]
        if denied:
            return f"{self._where()} may not {', '.join(denied)} in namespace {ns}"
        return None

    def _allowed(
        self, api: Any, verb: str, resource: str, *, namespace: str | None, group: str = ""
    ) -> bool:
        """A SelfSubjectAccessReview; True when the answer is yes or cannot be had."""
        from kubernetes import client

        sub = ""
        if "/" in resource:
            resource, sub = resource.split("/", 1)
        attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
        if sub:
            attrs["subresource"] = sub
        if namespace:
            attrs["namespace"] = namespace
        body = {"spec": {"resourceAttributes": attrs}}
        try:
            review = client.AuthorizationV1Api(api).create_self_subject_access_review(
                body, _request_timeout=PING_TIMEOUT_S
            )
        except Exception:
            return True
        return bool(getattr(review.status, "allowed", True))

    def _ensure_namespace(self) -> None:
        """Create the namespace when missing; wait for its default ServiceAccount (pods are
        refused without it) and, on servers < 1.24 (which mount the account's token secret),
        for a while for that secret."""
        if self._namespace_ready:
            return
        core = self._core()
        ns = self.namespace
        try:
            core.read_namespace(ns, _request_timeout=API_TIMEOUT_S)
        except Exception as exc:
            if _status(exc) != 404:
                raise DeployFailed(f"reading namespace {ns} failed: {short_error(exc)}") from exc
            body = {
                "metadata": {
                    "name": ns,
                    "labels": {"app.kubernetes.io/managed-by": "autoopt"},
                    "annotations": {"autoopt.workspace": str(self.workspace.root)},
                }
            }
            try:
                core.create_namespace(body, _request_timeout=API_TIMEOUT_S)
                log.info("kubernetes: created namespace %s", ns)
            except Exception as create_exc:
                if _status(create_exc) != 409:
                    raise DeployFailed(
                        f"creating namespace {ns} failed: {short_error(create_exc)}"
                    ) from create_exc
        deadline = time.monotonic() + 60
        token_deadline = time.monotonic() + (10 if self._server_minor() < 24 else 0)
        while True:
            try:
                account = core.read_namespaced_service_account(
                    "default", ns, _request_timeout=API_TIMEOUT_S
                )
                if account.secrets or time.monotonic() > token_deadline:
                    break
            except Exception as exc:
                if _status(exc) != 404:
                    raise DeployFailed(
                        f"reading the default ServiceAccount of {ns} failed: {short_error(exc)}"
                    ) from exc
            if time.monotonic() > deadline:
                raise DeployFailed(
                    f"namespace {ns} has no default ServiceAccount after 60 s: is the "
                    "cluster's controller-manager running?"
                )
            time.sleep(POLL_S)
        self._namespace_ready = True

    def _server_minor(self) -> int:
        """The API server's minor version (99 when it cannot be told)."""
        from kubernetes import client

        try:
            version = client.VersionApi(self._api()).get_code(_request_timeout=API_TIMEOUT_S)
            return int(re.sub(r"\D", "", version.minor) or 99)
        except Exception:
            return 99

    def _labels(self, target: str, build_id: str, deployment: str | None = None) -> dict[str, str]:
        labels = {
            MANAGED: "true",
            "autoopt.target": k8s_manifest.label_value(target),
            "autoopt.build": k8s_manifest.label_value(build_id),
            INSTANCE_LABEL: k8s_manifest.label_value(self.instance),
            "autoopt.instance_started": self.started,
        }
        if deployment:
            labels[DEP_LABEL] = k8s_manifest.label_value(deployment)
        return labels

    # -- build ---------------------------------------------------------------------
    def _image_ref(self, build: Build) -> str:
        image = build.image or f"autoopt/{build.target}:{build.id}"
        if self.settings.delivery == "registry":
            return f"{self.settings.registry}/{image}"
        return image

    def _image_shell(self, target: str) -> str:
        """The arm's image as the scripts name it ($TREE ends in /a or /b)."""
        prefix = f"{self.settings.registry}/" if self.settings.delivery == "registry" else ""
        return f'IMAGE="{prefix}autoopt/{target}:repro-$(basename "$TREE")"'

    async def build(
        self, spec: TargetSpec, build: Build, progress: Progress | None = None
    ) -> Build:
        build = await self._docker().build(spec, build, progress)
        try:
            await self._deliver(spec, build, progress)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.discard(build)
            raise
        return build

    async def _deliver(self, spec: TargetSpec, build: Build, progress: Progress | None) -> None:
        s = self.settings
        image = build.image or f"autoopt/{spec.name}:{build.id}"
        if progress:
            await progress(f"delivering {image} to the cluster ({s.delivery})")
        t0 = time.monotonic()
        logs = Path(build.tree).parent / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if s.delivery == "present":
            build.journal.add(
                Step(
                    phase="build",
                    shell=": image already on the nodes (AUTOOPT_K8S_IMAGE_DELIVERY=present)",
                    note="image delivery: present",
                )
            )
            return
        if s.delivery == "registry":
            step = build.journal.add(
                Step(
                    phase="build",
                    shell=(
                        f'docker tag "$IMAGE" "{s.registry}/$IMAGE"\n'
                        f'docker push "{s.registry}/$IMAGE"'
                    ),
                    note=f"the server pushed {s.registry}/{image} (Docker API)",
                )
            )
            await _call(self._push, image, f"{s.registry}/{image}", logs / "push.log")
            step.elapsed_s, step.exit_code = round(time.monotonic() - t0, 3), 0
            return
        if s.delivery == "kind":
            argv = ["kind", "load", "docker-image", image, "--name", s.kind_cluster]
            shell = f'kind load docker-image "$IMAGE" --name {shlex.quote(s.kind_cluster)}'
            await self._run_delivery(build, argv, shell, logs, "kind-load", t0)
            return
        tar = logs / "image.tar"
        tar_sh = '"$HERE/work/image-$(basename "$TREE").tar"'
        build.journal.add(
            Step(
                phase="build",
                shell=f'docker save "$IMAGE" -o {tar_sh}',
                note="the server saved the image through the Docker API",
            )
        )
        try:
            await _call(self._save, image, tar)
            argv = ["bash", str(s.cluster_script), "load-image", str(tar)]
            shell = f"bash {shlex.quote(str(s.cluster_script))} load-image {tar_sh}\nrm -f {tar_sh}"
            await self._run_delivery(build, argv, shell, logs, "load-image", t0)
        finally:
            tar.unlink(missing_ok=True)

    async def _run_delivery(
        self, build: Build, argv: list[str], shell: str, logs: Path, name: str, t0: float
    ) -> None:
        child, done, timed_out = await run(
            argv, cwd=logs, env=base_env(), logs=logs, name=name, timeout=DELIVERY_TIMEOUT_S
        )
        build.journal.add(
            Step(
                phase="build",
                shell=shell,
                argv=argv,
                elapsed_s=round(time.monotonic() - t0, 3),
                exit_code=done.code,
                note=f"deliver the image to the cluster ({self.settings.delivery})",
            )
        )
        if timed_out or done.code != 0:
            why = (
                f"timed out after {DELIVERY_TIMEOUT_S:.0f} s" if timed_out else f"exit {done.code}"
            )
            raise BuildFailed(
                f"delivering {build.image} to the cluster failed ({why}): {shlex.join(argv)}\n"
                f"Log tail:\n{child.tail(20)}"
            )

    def _save(self, image: str, path: Path) -> None:
        import docker

        client = docker.from_env(timeout=int(DELIVERY_TIMEOUT_S))
        try:
            with open(path, "wb") as out:
                for chunk in client.images.get(image).save(named=image):
                    out.write(chunk)
        except Exception as exc:
            raise BuildFailed(f"docker save {image} failed: {short_error(exc)}") from exc
        finally:
            client.close()

    def _push(self, image: str, ref: str, log_path: Path) -> None:
        import docker

        client = docker.from_env(timeout=int(DELIVERY_TIMEOUT_S))
        repository, _, tag = ref.rpartition(":")
        try:
            client.images.get(image).tag(repository, tag)
            with open(log_path, "w", encoding="utf-8") as out:
                for line in client.images.push(repository, tag, stream=True, decode=True):
                    out.write(f"{line}\n")
                    if line.get("error"):
                        raise BuildFailed(f"docker push {ref} failed: {line['error']}")
        except AutooptError:
            raise
        except Exception as exc:
            raise BuildFailed(f"docker push {ref} failed: {short_error(exc)}") from exc
        finally:
            client.close()

    async def discard(self, build: Build) -> None:
        """The local engine's image (and its registry tag); a copy imported into the
        cluster's containerd, or pushed to a registry, is left there."""
        docker = self._docker()
        await docker.discard(build)
        if self.settings.delivery == "registry" and build.image:
            await docker.discard(build.model_copy(update={"image": self._image_ref(build)}))

    # -- deploy --------------------------------------------------------------------
    async def deploy(self, spec: TargetSpec, build: Build) -> Deployment:
        if spec.kind == "batch":
            raise DeployFailed(
                f"target {spec.name} is a batch program; the kubernetes backend runs services "
                "(use the local or docker backend for batch targets)"
            )
        s = self.settings
        deployment = new_deployment(spec, build, self.name, namespace=self.namespace)
        dep_id = deployment.id
        image = self._image_ref(build)
        rendered = k8s_manifest.render(
            spec,
            k8s_manifest.manifest_path(self.workspace, spec),
            dep_id=dep_id,
            image=image,
            pull_policy="IfNotPresent" if s.delivery == "registry" else "Never",
            labels=self._labels(spec.name, build.id, dep_id),
        )
        self._containers[dep_id] = rendered.main
        selector = f"{DEP_LABEL}={dep_id}"
        timeout = max(spec.local.health_timeout_s, s.ready_timeout_s)
        self._journal_deploy(deployment, spec, rendered, selector, timeout)
        t0 = time.monotonic()
        try:
            await _call(self._ensure_namespace)
            await _call(self._create, rendered)
            pod = await self._wait_ready(spec, rendered, selector, timeout)
            deployment.container = pod
            forwarder = await _call(self._forward, pod, rendered.port, dep_id)
            self._forwarders[dep_id] = forwarder
            deployment.port = forwarder.port
            deployment.endpoint = f"http://127.0.0.1:{forwarder.port}"
            await self._wait_healthy(spec, deployment, forwarder, rendered, selector, t0, timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await self._remove(deployment)
                except AutooptError as exc:  # keep the deploy's own error; say this one too
                    log.warning("kubernetes: cleaning up failed deployment %s: %s", dep_id, exc)
            raise
        self._journal_elapsed(deployment, time.monotonic() - t0)
        return deployment

    def _journal_deploy(
        self,
        deployment: Deployment,
        spec: TargetSpec,
        rendered: k8s_manifest.Rendered,
        selector: str,
        timeout: float,
    ) -> None:
        s = self.settings
        journal = deployment.journal
        journal.add(
            Step(
                phase="deploy",
                shell=s.context_shell(),
                note="the cluster, context and namespace the server used",
            )
        )
        journal.add(
            Step(
                phase="deploy",
                shell=(
                    'kubectl --context "$CONTEXT" get namespace "$NAMESPACE" >/dev/null 2>&1 || '
                    'kubectl --context "$CONTEXT" create namespace "$NAMESPACE"'
                ),
                note="one namespace per workspace",
            )
        )
        journal.add(
            Step(phase="deploy", shell=self._image_shell(spec.name), note="this arm's image")
        )
        text = k8s_manifest.manifest_text(rendered)
        body = (
            text.replace("\\", "\\\\")
            .replace("$", "\\$")
            .replace("`", "\\`")
            .replace(k8s_manifest.IMAGE_PLACEHOLDER, "${IMAGE}")
        )
        delimiter = "EOF"
        while delimiter in text.splitlines():
            delimiter += "_"
        source = rendered.manifest.name if rendered.manifest else "k8s.yaml"
        journal.add(
            Step(
                phase="deploy",
                shell=f"{_kubectl('apply -f -')} <<{delimiter}\n{body.rstrip()}\n{delimiter}",
                note=(
                    f"{source} adapted to this deployment (names, autoopt.* labels, image, "
                    "resources); the server created the same objects through the API"
                ),
            )
        )
        wait = f"--timeout={int(timeout)}s"
        journal.add(
            Step(
                phase="deploy",
                shell=(
                    f"{_kubectl(f'rollout status deployment/{rendered.name} {wait}')}\n"
                    f"{_kubectl(f'wait --for=condition=Ready pod -l {selector} {wait}')}\n"
                    + "POD=$("
                    + _kubectl(f"get pod -l {selector} -o jsonpath='{{.items[0].metadata.name}}'")
                    + ")"
                ),
                note=(
                    "wait until the pod is Ready (the server waited until it was on a node, "
                    "then for the health check below)"
                ),
            )
        )
        journal.add(
            Step(
                phase="deploy",
                shell=(
                    _kubectl(f'port-forward "pod/$POD" "$PORT:{rendered.port}"')
                    + ' > "$LOGS/port-forward.log" 2>&1 &\nPF_PID=$!'
                ),
                note=f"reach the pod's port {rendered.port} at $ENDPOINT (no kube-proxy needed)",
            )
        )
        health = spec.local.health or "/"
        journal.add(
            Step(
                phase="deploy",
                shell=HEALTH_WAIT_SH.format(url=f"$ENDPOINT{health}"),
                note="wait for the health check through the port-forward",
            )
        )

    @staticmethod
    def _journal_elapsed(deployment: Deployment, elapsed: float) -> None:
        for step in deployment.journal.steps:
            if step.shell.startswith(_kubectl("apply")):
                step.elapsed_s = round(elapsed, 3)

    def _create(self, rendered: k8s_manifest.Rendered) -> None:
        apps, core = self._apps(), self._core()
        name = rendered.name
        try:
            apps.create_namespaced_deployment(
                self.namespace, rendered.deployment, _request_timeout=API_TIMEOUT_S
            )
            for service in rendered.services:
                name = service["metadata"]["name"]
                raw = core.create_namespaced_service(
                    self.namespace,
                    service,
                    _request_timeout=API_TIMEOUT_S,
                    _preload_content=False,
                )
                raw.release_conn()
        except Exception as exc:
            self._namespace_ready = False  # deleted behind our back? check it again next time
            raise DeployFailed(
                f"creating {name} in namespace {self.namespace} failed: {short_error(exc, 800)}"
            ) from exc

    def _pods(self, selector: str) -> list[Any]:
        pods = self._core().list_namespaced_pod(
            self.namespace, label_selector=selector, _request_timeout=API_TIMEOUT_S
        )
        self._versions[selector] = str(pods.metadata.resource_version or "")
        return [p for p in pods.items if p.metadata.deletion_timestamp is None]

    def _watch_once(self, selector: str, seconds: int) -> None:
        """Until a pod matching `selector` changes after the last list of them (a watch from
        its resourceVersion: nothing in between is missed), or `seconds` passed."""
        from kubernetes import watch

        stream = watch.Watch().stream(
            self._core().list_namespaced_pod,
            self.namespace,
            label_selector=selector,
            resource_version=self._versions.get(selector) or None,
            timeout_seconds=seconds,
            _request_timeout=seconds + API_TIMEOUT_S,
        )
        try:
            next(stream, None)
        finally:
            stream.close()  # closes the response

    async def _pod_change(self, selector: str, deadline: float) -> None:
        """Wait for the deployment's pods to change (1 s at most: the caller lists again)."""
        seconds = max(1, min(WATCH_S, int(deadline - time.monotonic())))
        try:  # abandoned on cancel: the watch ends by itself within `seconds`
            await anyio.to_thread.run_sync(
                functools.partial(self._watch_once, selector, seconds), abandon_on_cancel=True
            )
        except Exception as exc:  # no watch here (too old a version, ...): poll
            log.debug("kubernetes: watching pods %s failed: %s", selector, short_error(exc))
            await anyio.sleep(POLL_S)

    async def _wait_ready(
        self, spec: TargetSpec, rendered: k8s_manifest.Rendered, selector: str, timeout: float
    ) -> str:
        """The name of the deployment's pod once it is on a node: the health check through the
        port-forward then says when it serves (see _wait_healthy), as soon as it listens,
        not when the kubelet next reports the container running (its relist runs every
        second). With a startupProbe, once the probe passed. DeployFailed (with its events,
        container statuses and log tail) when it fails or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            pods = await self._live_pods(rendered, selector)
            for pod in pods:
                if k8s_pods.ready(pod) or k8s_pods.started(pod, rendered.main) or (
                    pod.spec.node_name and not k8s_pods.has_startup_probe(pod, rendered.main)
                ):
                    return str(pod.metadata.name)
                problem = k8s_pods.pod_problem(pod)
                if problem:
                    raise DeployFailed(await _call(self._failure, rendered, pod, problem, spec))
            if time.monotonic() > deadline:
                pod = pods[0] if pods else None
                why = self._not_ready(timeout)
                if pod is None:
                    why = f"no pod was created within {timeout:.0f} s"
                raise DeployFailed(await _call(self._failure, rendered, pod, why, spec))
            await self._pod_change(selector, deadline)

    async def _live_pods(self, rendered: k8s_manifest.Rendered, selector: str) -> list[Any]:
        try:
            return await _call(self._pods, selector)
        except Exception as exc:
            raise DeployFailed(
                f"listing the pods of {rendered.name} failed: {short_error(exc)}"
            ) from exc

    def _not_ready(self, timeout: float) -> str:
        return (
            f"not Ready within {timeout:.0f} s (health_timeout in target.md, at least "
            f"AUTOOPT_K8S_READY_TIMEOUT={self.settings.ready_timeout_s:.0f} s)"
        )

    def _failure(
        self, rendered: k8s_manifest.Rendered, pod: Any, problem: str, spec: TargetSpec
    ) -> str:
        ns = self.namespace
        name = pod.metadata.name if pod is not None else rendered.name
        lines = [f"the pod of {spec.name} ({name}, namespace {ns}) did not become Ready: {problem}"]
        if "ErrImageNeverPull" in problem or "ErrImagePull" in problem:
            lines.append(
                f"(the image is not on the node: AUTOOPT_K8S_IMAGE_DELIVERY is "
                f"{self.settings.delivery})"
            )
        if pod is not None:
            lines.append("Container statuses:")
            lines += [f"  {line}" for line in k8s_pods.container_lines(pod)] or ["  (none yet)"]
        lines.append("Events:")
        lines += [f"  {line}" for line in self._events(rendered.name)] or ["  (none)"]
        if pod is not None:
            tail = self._log_tail(pod, rendered.main)
            if tail:
                lines.append(f"Log tail ({rendered.main}):")
                lines.append(tail)
        return "\n".join(lines)

    def _events(self, prefix: str) -> list[str]:
        """Events of the deployment, its ReplicaSets and pods (their names start alike)."""
        try:
            events = (
                self._core()
                .list_namespaced_event(self.namespace, _request_timeout=API_TIMEOUT_S)
                .items
            )
        except Exception as exc:
            return [f"(events unavailable: {short_error(exc)})"]
        ours = [e for e in events if (e.involved_object.name or "").startswith(prefix)]

        def when(event: Any) -> tuple[float, int]:  # by first occurrence: reads as a story
            stamp = event.first_timestamp or event.event_time or event.last_timestamp
            version = str(event.metadata.resource_version or "0")
            return (stamp.timestamp() if stamp else 0.0, int(version) if version.isdigit() else 0)

        out = []
        for event in sorted(ours, key=when)[-25:]:
            count = f" (x{event.count})" if (event.count or 1) > 1 else ""
            message = " ".join((event.message or "").split())
            out.append(
                f"{event.type} {event.reason} {event.involved_object.kind.lower()}/"
                f"{event.involved_object.name}: {message}{count}"
            )
        return out

    def _log_tail(self, pod: Any, container: str, lines: int = 30) -> str:
        status = next((c for c in pod.status.container_statuses or [] if c.name == container), None)
        previous = bool(status and status.restart_count and status.state.running is None)
        for prev in (previous, not previous) if previous else (False,):
            try:
                text = self._core().read_namespaced_pod_log(
                    pod.metadata.name,
                    self.namespace,
                    container=container,
                    tail_lines=lines,
                    previous=prev,
                    _request_timeout=API_TIMEOUT_S,
                )
            except Exception:
                continue
            if text:
                return str(text).rstrip()
        return ""

    def _forward(self, pod: str, port: int, dep_id: str) -> Forwarder:
        from kubernetes.stream import portforward

        def connect() -> Any:
            core = self._stream_core()
            with self._stream_lock:
                return portforward(
                    core.connect_get_namespaced_pod_portforward,
                    pod,
                    self.namespace,
                    ports=str(port),
                )

        return Forwarder(connect, port, dep_id)

    async def _wait_healthy(
        self,
        spec: TargetSpec,
        deployment: Deployment,
        forwarder: Forwarder,
        rendered: k8s_manifest.Rendered,
        selector: str,
        t0: float,
        timeout: float,
    ) -> None:
        """Until the health check answers 2xx through the port-forward (as on the local and
        docker backends: the pod's Ready condition, which its readinessProbe's delays hold
        back, is not waited for); the pod is watched meanwhile for a crash."""
        url = f"{deployment.endpoint}{spec.local.health or '/'}"
        deadline = t0 + timeout
        ready_at: float | None = None
        last = ""
        while True:
            try:
                if await anyio.to_thread.run_sync(probe, url):
                    forwarder.errors.clear()  # those of the probes before it listened
                    return
                last = "not a 2xx answer"
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            pods = await self._live_pods(rendered, selector)
            pod = next((p for p in pods if p.metadata.name == deployment.container), None)
            problem = k8s_pods.pod_problem(pod) if pod is not None else "the pod is gone"
            if problem:
                raise DeployFailed(await _call(self._failure, rendered, pod, problem, spec))
            now = time.monotonic()
            if k8s_pods.ready(pod):
                ready_at = ready_at or now
            elif now > deadline:
                why = f"{self._not_ready(timeout)}; health check {url}: {last}"
                raise DeployFailed(await _call(self._failure, rendered, pod, why, spec))
            if ready_at is not None and now > max(deadline, ready_at + 15.0):
                errors = "; ".join(forwarder.errors) or "none"
                raise DeployFailed(
                    f"the pod {deployment.container} is Ready but {url} did not answer "
                    f"through the port-forward within {now - ready_at:.0f} s; last error: "
                    f"{last}; port-forward errors: {errors}"
                )
            await anyio.sleep(POLL_S)

    # -- measure -------------------------------------------------------------------
    def _exec(
        self, pod: str, container: str | None, argv: list[str], timeout: float = EXEC_TIMEOUT_S
    ) -> tuple[int | None, str, str]:
        """(exit code, stdout, stderr) of a command in the pod; the code is None when the
        command could not be run (no such file, ...)."""
        from kubernetes.stream import stream

        core = self._stream_core()
        kwargs: dict[str, Any] = {"container": container} if container else {}
        with self._stream_lock:
            ws = stream(
                core.connect_get_namespaced_pod_exec,
                pod,
                self.namespace,
                command=argv,
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
                **kwargs,
            )
        try:
            ws.run_forever(timeout=timeout)
            out, err = ws.read_stdout() or "", ws.read_stderr() or ""
            code, message = k8s_pods.exec_status(ws.read_channel(3) if not ws.is_open() else "")
        finally:
            ws.close()
        return code, str(out), str(err) or message

    def _exec_flag(self, deployment: Deployment) -> str:
        container = self._containers.get(deployment.id)
        return f" -c {shlex.quote(container)}" if container else ""

    async def reset_peak(self, deployment: Deployment) -> bool:
        pod = deployment.container
        if pod is None:
            return False
        container = self._containers.get(deployment.id)
        try:
            code, out, err = await _call(
                self._exec, pod, container, ["sh", "-c", f"cat /proc/1/stat; {RESET_COMMAND}"]
            )
        except Exception as exc:
            code, out, err = None, "", short_error(exc)
        if code is None and not out:  # no sh in the image: at least the CPU mark
            with contextlib.suppress(Exception):
                _, out, _ = await _call(self._exec, pod, container, ["cat", "/proc/1/stat"])
        self._marks[deployment.id] = k8s_pods.stat_mark(out)
        ok = code == 0
        exec_sh = _kubectl(f'exec "$POD"{self._exec_flag(deployment)} --')
        if ok:
            deployment.journal.add(
                Step(
                    phase="deploy",
                    shell=f"{exec_sh} sh -c '{RESET_COMMAND}'",
                    note="reset VmHWM so the peak belongs to the workload (the server ran the "
                    "same command)",
                )
            )
        else:
            why = " ".join((err or f"exit code {code}").split())[:200]
            deployment.journal.add(
                Step(
                    phase="deploy",
                    shell=f": {shlex.quote(f'VmHWM not reset: {why}')}",
                    note=(
                        f"the server could not run {exec_sh} sh -c '{RESET_COMMAND}' "
                        "(not permitted, or no sh in the image): the peak includes the start"
                    ),
                )
            )
            log.warning("kubernetes: could not reset VmHWM in pod %s: %s", pod, why)
        return ok

    async def run_workload(
        self,
        spec: TargetSpec,
        deployment: Deployment,
        argv: list[str],
        shell: str,
        *,
        name: str,
        timeout: float = 600.0,
        env: dict[str, str] | None = None,
    ) -> WorkloadResult:
        result = await drive(
            deployment,
            argv,
            shell,
            name=name,
            timeout=timeout,
            env=env,
            note="the driver runs on this machine, against $ENDPOINT (the port-forward)",
        )
        forwarder = self._forwarders.get(deployment.id)
        if result.exit_code != 0 and forwarder is not None and forwarder.errors:
            result.log_tail += "\nport-forward errors: " + "; ".join(forwarder.errors)
        return result

    async def collect(
        self, spec: TargetSpec, deployment: Deployment, result: WorkloadResult
    ) -> dict[str, object]:
        journal = deployment.journal
        journal.add(Step(phase="collect", shell=self.settings.context_shell()))
        exec_sh = _kubectl(f'exec "$POD"{self._exec_flag(deployment)} --')
        journal.add(
            Step(
                phase="collect",
                shell=f"{exec_sh} cat /proc/1/status | {STATUS_AWK}",
                note="peak RSS of the pod's PID 1 (the server ran the same command)",
            )
        )
        journal.add(
            Step(
                phase="collect",
                shell=_kubectl(
                    'get pod "$POD" -o jsonpath=\'{range .status.containerStatuses[*]}'
                    'restarts={.restartCount}{"\\n"}'
                    'last_terminated={.lastState.terminated.reason}{"\\n"}{end}\''
                ),
                note="restarted? OOM-killed (last_terminated=OOMKilled)?",
            )
        )
        if deployment.container is None:
            return {"metrics": {}, "died": True, "restarts": 0, "oom_killed": False}
        try:
            return await _call(self._collect, deployment, result.duration_s)
        except AutooptError:
            raise
        except Exception as exc:
            raise WorkloadFailed(
                f"reading pod {deployment.container} failed: {short_error(exc)}"
            ) from exc

    def _read_pod(self, name: str) -> Any:
        try:
            return self._core().read_namespaced_pod(
                name, self.namespace, _request_timeout=API_TIMEOUT_S
            )
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise

    def _collect(self, deployment: Deployment, duration_s: float) -> dict[str, object]:
        pod_name = str(deployment.container)
        container = self._containers.get(deployment.id)
        pod = self._read_pod(pod_name)
        status = k8s_pods.container_status(pod, container)
        metrics: dict[str, float] = {}
        smaps: dict[str, float] = {}
        alive = k8s_pods.running_unrestarted(status)
        unread = ""  # why the memory could not be read although the pod runs
        if alive:
            try:
                code, out, err = self._exec(
                    pod_name,
                    container,
                    ["cat", "/proc/1/status", "/proc/1/stat", "/proc/1/smaps_rollup"],
                )
            except Exception as exc:
                code, out, err = None, "", short_error(exc)
            fields, stat, smaps = k8s_pods.split_proc(out)
            mark_cpu, mark_start = self._marks.get(deployment.id, (None, None))
            cpu, start = k8s_pods.stat_mark(stat)
            if "VmHWM" not in fields:
                unread = " ".join((err or f"exit code {code}").split())[:300]
            elif mark_start is not None and start is not None and start != mark_start:
                alive = False  # PID 1 is not the process the workload started against
            else:
                metrics["peak_rss_mb"] = round(fields["VmHWM"] / 1024, 3)
                metrics["rss_mb"] = round(fields.get("VmRSS", 0.0) / 1024, 3)
                if cpu is not None and mark_cpu is not None:
                    used = max(0.0, cpu - mark_cpu)
                    metrics["cpu_s"] = round(used, 3)
                    metrics["cpu_pct"] = round(100 * used / max(duration_s, 1e-9), 2)
        if not alive or unread:  # the kubelet may not have reported an exit yet: let it settle
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and pod is not None:
                if status is None or status.restart_count or status.state.terminated is not None:
                    break
                time.sleep(POLL_S)
                pod = self._read_pod(pod_name)
                status = k8s_pods.container_status(pod, container)
            alive = alive and k8s_pods.running_unrestarted(status)
        restarts = int(status.restart_count or 0) if status is not None else 0
        oom = k8s_pods.oom_killed(status)
        if not alive:
            return {"metrics": {}, "died": True, "restarts": restarts, "oom_killed": oom}
        if unread:
            log.warning("kubernetes: could not read /proc/1/status in pod %s: %s", pod_name, unread)
        return {
            "metrics": metrics,
            "smaps": smaps,
            "died": False,
            "restarts": restarts,
            "oom_killed": oom,
        }

    # -- clean up ------------------------------------------------------------------
    async def teardown(self, deployment: Deployment) -> None:
        await self._remove(deployment, keep_log=True)
        journal = deployment.journal
        journal.add(Step(phase="teardown", shell=self.settings.context_shell()))
        journal.add(
            Step(
                phase="teardown",
                shell='[ -z "${PF_PID:-}" ] || kill "$PF_PID" 2>/dev/null || true',
                note="stop the port-forward",
            )
        )
        journal.add(
            Step(
                phase="teardown",
                shell=_kubectl(
                    f"delete deployment,replicaset,pod,service -l {DEP_LABEL}={deployment.id} "
                    "--grace-period=0 --force --ignore-not-found --wait=true"
                ),
                note="everything the deployment created, by label; pods at once (grace 0)",
            )
        )

    async def _remove(self, deployment: Deployment, *, keep_log: bool = False) -> None:
        """Stop the port-forward, delete the deployment's objects, wait until they are gone."""
        forwarder = self._forwarders.pop(deployment.id, None)
        self._marks.pop(deployment.id, None)
        self._versions.pop(f"{DEP_LABEL}={deployment.id}", None)
        container = self._containers.pop(deployment.id, None)
        if forwarder is not None:
            await _call(forwarder.stop)
        if deployment.kind == "batch":
            return
        if keep_log and deployment.container and deployment.log_dir:
            with contextlib.suppress(Exception):
                text = await _call(self._pod_log, deployment.container, container)
                if text:
                    Path(deployment.log_dir, "service.log").write_text(text)
        namespace = deployment.namespace or self.namespace
        try:
            await _call(self._delete_labelled, namespace, f"{DEP_LABEL}={deployment.id}")
        except AutooptError:
            raise
        except Exception as exc:
            raise DeployFailed(
                f"deleting the objects of {deployment.id} in namespace {namespace} failed: "
                f"{short_error(exc)}"
            ) from exc

    def _pod_log(self, pod: str, container: str | None) -> str:
        kwargs = {"container": container} if container else {}
        return str(
            self._core().read_namespaced_pod_log(
                pod, self.namespace, tail_lines=2000, _request_timeout=API_TIMEOUT_S, **kwargs
            )
            or ""
        )

    def _delete_labelled(self, namespace: str, selector: str) -> list[str]:
        """Delete the Deployments and ReplicaSets, then the pods (grace 0) and Services,
        matching `selector` (the calls of each step at once), again until two lists in a row
        find none (a ReplicaSet may still have been making a pod); what was deleted."""
        deleted: list[str] = []
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        quiet = 0
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="autoopt-k8s-delete") as pool:
            while True:
                found = self._labelled(namespace, selector, pool)
                if not found:
                    quiet += 1
                    if quiet >= 2:
                        return deleted
                    time.sleep(SETTLE_S)
                    continue
                quiet = 0
                if time.monotonic() > deadline:
                    raise DeployFailed(
                        f"objects labelled {selector} in namespace {namespace} are still there "
                        f"after {DELETE_TIMEOUT_S:.0f} s: {', '.join(found)}"
                    )
                for kinds in (("deployment", "replicaset"), ("pod", "service")):  # owners first
                    items = [i for i in found if i.partition("/")[0] in kinds]
                    done = pool.map(functools.partial(self._delete_one, namespace), items)
                    for item, gone in zip(items, done, strict=True):
                        if gone and item not in deleted:
                            deleted.append(item)
                time.sleep(SETTLE_S)

    def _delete_one(self, namespace: str, item: str) -> bool:
        """Delete `kind/name`; False when it was already gone."""
        apps, core = self._apps(), self._core()
        kind, _, name = item.partition("/")
        delete = {
            "deployment": functools.partial(
                apps.delete_namespaced_deployment, propagation_policy="Background"
            ),
            "replicaset": functools.partial(
                apps.delete_namespaced_replica_set, propagation_policy="Background"
            ),
            "pod": functools.partial(core.delete_namespaced_pod, grace_period_seconds=0),
            "service": core.delete_namespaced_service,  # 1.20 answers with a Status
        }[kind]
        try:
            delete(
                name, namespace, _request_timeout=API_TIMEOUT_S, _preload_content=False
            ).release_conn()
        except Exception as exc:
            if _status(exc) != 404:
                raise
            return False
        return True

    def _labelled(self, namespace: str, selector: str, pool: ThreadPoolExecutor) -> list[str]:
        """`kind/name` of the Deployments, ReplicaSets, pods and Services matching `selector`
        (listed at once; pods that are already being deleted with grace 0 are gone in a
        moment: listed)."""
        apps, core = self._apps(), self._core()
        kw = {"label_selector": selector, "_request_timeout": API_TIMEOUT_S}
        lists = {
            "deployment": apps.list_namespaced_deployment,
            "replicaset": apps.list_namespaced_replica_set,
            "pod": core.list_namespaced_pod,
            "service": core.list_namespaced_service,
        }
        futures = {kind: pool.submit(fn, namespace, **kw) for kind, fn in lists.items()}
        return [f"{k}/{o.metadata.name}" for k, f in futures.items() for o in f.result().items]

    def _orphaned(self, labels: dict[str, str]) -> bool:
        """True when the server that made it (same host, by pid) is gone."""
        import psutil

        host, _, pid_text = (labels.get(INSTANCE_LABEL) or "").rpartition("-")
        if host != self.hostname or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():
            return False
        if not psutil.pid_exists(pid):
            return True
        started = labels.get("autoopt.instance_started") or ""
        now = process_started(pid)
        return bool(started.isdigit() and now is not None and abs(int(now) - int(started)) > 1)

    def forget_orphans(self) -> list[str]:
        """Delete what servers that are gone left in the namespace (by autoopt.deployment)."""
        if self.settings.problem():
            return []
        apps, core = self._apps(), self._core()
        ns = self.namespace
        kw = {"label_selector": f"{MANAGED}=true", "_request_timeout": API_TIMEOUT_S}
        objects: list[Any] = []
        try:
            objects += apps.list_namespaced_deployment(ns, **kw).items
            objects += apps.list_namespaced_replica_set(ns, **kw).items
            objects += core.list_namespaced_pod(ns, **kw).items
            objects += core.list_namespaced_service(ns, **kw).items
        except Exception as exc:
            if _status(exc) == 404:
                return []
            raise
        orphans = sorted(
            {
                (o.metadata.labels or {}).get(DEP_LABEL, "")
                for o in objects
                if self._orphaned(o.metadata.labels or {})
            }
        )
        removed: list[str] = []
        for dep_id in orphans:
            if not dep_id:
                continue
            for item in self._delete_labelled(ns, f"{DEP_LABEL}={dep_id}"):
                removed.append(f"{item} ({dep_id}, namespace {ns})")
        return removed
