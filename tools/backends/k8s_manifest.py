"""A target's k8s.yaml, adapted to one deployment of one build (pure: no cluster needed).

The file holds one Deployment and any number of Services. Per deployment the objects are
renamed `<target>-<deployment id>`, labelled `autoopt.*` (the selectors select exactly
`autoopt.deployment=<id>`), forced to one replica, and the target's container gets the
build's image (pull policy Never unless a registry delivers it) and, when target.md's
`## Kubernetes` says so, its memory and CPU (requests = limits). A readiness probe on
`## Local` health is added when the container has none. The namespace comes from the
backend's configuration: a `metadata.namespace` in the file is dropped.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoopt.tools.errors import DeployFailed
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workspace import Workspace, inside

MANAGED = "autoopt.managed"
DEPLOYMENT_LABEL = "autoopt.deployment"
IMAGE_PLACEHOLDER = "__AUTOOPT_IMAGE__"
SUPPORTED_KINDS = ("Deployment", "Service")


@dataclass
class Rendered:
    """The objects to create, and what the backend needs to know about them."""

    deployment: dict[str, Any]
    services: list[dict[str, Any]]
    name: str
    containers: list[str] = field(default_factory=list)  # those that run the build's image
    port: int = 0
    manifest: Path | None = None

    @property
    def main(self) -> str:
        return self.containers[0]

    def objects(self) -> list[dict[str, Any]]:
        return [self.deployment, *self.services]


def manifest_path(workspace: Workspace, spec: TargetSpec) -> Path:
    """target.md's `## Kubernetes` manifest, else targets/<name>/k8s.yaml."""
    if spec.kubernetes.manifest:
        path = inside(workspace.root, spec.kubernetes.manifest)
        where = f"manifest: {spec.kubernetes.manifest} ('## Kubernetes' in target.md)"
    else:
        path = workspace.targets_dir / spec.name / "k8s.yaml"
        where = f"targets/{spec.name}/k8s.yaml (no 'manifest:' in '## Kubernetes')"
    if not path.is_file():
        raise DeployFailed(
            f"target {spec.name}: no Kubernetes manifest at {where}; add one with a Deployment "
            "(and a Service), or name it with 'manifest: <path>' under '## Kubernetes'"
        )
    return path


def label_value(text: str, limit: int = 63) -> str:
    """A valid label value: [A-Za-z0-9._-], at most 63, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:limit]
    return value.strip("-._") or "x"


def object_name(target: str, dep_id: str) -> str:
    """`<target>-<deployment id>` as a DNS-1035 label (Service names need one)."""
    base = re.sub(r"[^a-z0-9-]+", "-", target.lower()).strip("-") or "target"
    if not base[0].isalpha():
        base = f"t-{base}"
    suffix = re.sub(r"[^a-z0-9-]+", "-", dep_id.lower())
    base = base[: 63 - len(suffix) - 1].rstrip("-")
    return f"{base}-{suffix}"


def load_documents(path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise DeployFailed(f"cannot read the Kubernetes manifest {path}: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise DeployFailed(f"{path}: every document must be a Kubernetes object with a kind")
        if doc["kind"] not in SUPPORTED_KINDS:
            raise DeployFailed(
                f"{path}: kind {doc['kind']} is not supported by the kubernetes backend "
                f"(one Deployment, and Services); remove it or build it into the image"
            )
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        raise DeployFailed(
            f"{path}: needs exactly one Deployment (it has {len(deployments)}); the backend "
            "measures the peak RSS of that Deployment's single pod"
        )
    return docs


def render(
    spec: TargetSpec,
    path: Path,
    *,
    dep_id: str,
    image: str,
    pull_policy: str,
    labels: dict[str, str],
) -> Rendered:
    """The manifest's objects for one deployment (see the module docstring)."""
    docs = copy.deepcopy(load_documents(path))
    name = object_name(spec.name, dep_id)
    selector = {DEPLOYMENT_LABEL: labels[DEPLOYMENT_LABEL]}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    services = [d for d in docs if d["kind"] == "Service"]
    _meta(deployment, name, labels)
    body = deployment.setdefault("spec", {})
    body["replicas"] = 1
    body["selector"] = {"matchLabels": dict(selector)}
    template = body.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    template_meta.pop("name", None)
    template_meta.pop("namespace", None)
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
    pod = template.setdefault("spec", {})
    containers = pod.get("containers") or []
    if not containers:
        raise DeployFailed(f"{path}: the Deployment's pod template has no containers")
    chosen = _target_containers(spec.name, containers, path)
    for container in chosen:
        container["image"] = image
        container["imagePullPolicy"] = pull_policy
        resources = container.setdefault("resources", {})
        for key, value in (("memory", spec.kubernetes.memory), ("cpu", spec.kubernetes.cpu)):
            if value:
                resources.setdefault("requests", {})[key] = value
                resources.setdefault("limits", {})[key] = value
    main = chosen[0]
    port = spec.service_port or _first_port(main) or _service_target_port(services)
    if not port:
        raise DeployFailed(
            f"target {spec.name}: no port to forward to; add 'port: <n>' to '## Service' in "
            f"target.md (or a containerPort to the container in {path.name})"
        )
    if spec.local.health and not main.get("readinessProbe"):
        main["readinessProbe"] = {
            "httpGet": {"path": spec.local.health, "port": port},
            "periodSeconds": 1,
            "failureThreshold": 3,
        }
    for index, service in enumerate(services):
        _meta(service, name if index == 0 else f"{name[:59]}-s{index}", labels)
        svc = service.setdefault("spec", {})
        svc["selector"] = dict(selector)
        if svc.get("clusterIP") not in (None, "None"):
            svc.pop("clusterIP")  # a fixed address would collide with the other arm's
        svc.pop("clusterIPs", None)
        for entry in svc.get("ports") or []:
            entry.pop("nodePort", None)
    return Rendered(
        deployment=deployment,
        services=services,
        name=name,
        containers=[c["name"] for c in chosen],
        port=int(port),
        manifest=path,
    )


def _meta(obj: dict[str, Any], name: str, labels: dict[str, str]) -> None:
    obj.pop("status", None)
    meta = obj.setdefault("metadata", {})
    for key in ("namespace", "uid", "resourceVersion", "creationTimestamp", "generateName"):
        meta.pop(key, None)
    meta["name"] = name
    meta["labels"] = {**(meta.get("labels") or {}), **labels}


def _target_containers(
    target: str, containers: list[dict[str, Any]], path: Path
) -> list[dict[str, Any]]:
    """The container(s) that run the target: the only one, or those whose image is
    autoopt/<target>[:tag]."""
    if len(containers) == 1:
        return containers
    ours = [
        c
        for c in containers
        if str(c.get("image", "")).rsplit(":", 1)[0].split("@")[0].endswith(f"autoopt/{target}")
    ]
    if not ours:
        raise DeployFailed(
            f"{path}: the pod has {len(containers)} containers and none has the image "
            f"autoopt/{target}; give the target's container that image name"
        )
    return ours


def _first_port(container: dict[str, Any]) -> int | None:
    for entry in container.get("ports") or []:
        if str(entry.get("protocol", "TCP")).upper() == "TCP" and entry.get("containerPort"):
            return int(entry["containerPort"])
    return None


def _service_target_port(services: list[dict[str, Any]]) -> int | None:
    for service in services:
        for entry in (service.get("spec") or {}).get("ports") or []:
            target = entry.get("targetPort", entry.get("port"))
            if isinstance(target, int):
                return target
    return None


def manifest_text(rendered: Rendered) -> str:
    """The objects as YAML, the build's image written as IMAGE_PLACEHOLDER (for the journal)."""
    import yaml

    docs = copy.deepcopy(rendered.objects())
    containers = docs[0]["spec"]["template"]["spec"]["containers"]
    for container in containers:
        if container.get("name") in rendered.containers:
            container["image"] = IMAGE_PLACEHOLDER
    return str(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))
