#!/usr/bin/env python3
"""End-to-end smoke check of the autoopt test cluster with the official `kubernetes` client.

    scripts/k8s-cluster.sh up
    python scripts/k8s/smoke.py [--kubeconfig PATH] [--load TARBALL] [--image REF] [--no-oom]

Creates a namespace, a Deployment (busybox httpd, memory limit, readiness probe) and a Service,
waits for the pod to be Ready, execs `cat /proc/1/status` (and checks the exit code and the
memory cgroup limit), port-forwards to the pod, runs a pod that exceeds its memory limit and
expects status reason OOMKilled, then deletes everything.  Exits non-zero on the first failure.

Server 1.20 vs client >= 2x quirk handled here: delete_namespaced_service() gets a v1 Status back
(servers <= 1.21 answer a Service DELETE with a Status) which the client cannot deserialize as a
V1Service; the Service IS deleted.  See delete_service().
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.stream import portforward, stream

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(os.path.dirname(HERE), "k8s-cluster.sh")
DEFAULT_IMAGE = "localhost/autoopt/busybox:local"


def step(msg: str) -> None:
    print(f"[smoke {time.strftime('%X')}] {msg}", flush=True)


def wait(what: str, pred: Callable[[], Any], timeout: float = 120, every: float = 0.5) -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def delete_service(core: client.CoreV1Api, name: str, ns: str) -> None:
    """Delete a Service on a 1.20 server without tripping over the Status-vs-Service reply."""
    # _preload_content=False returns the raw urllib3 response: no deserialization, no error.
    resp = core.delete_namespaced_service(name, ns, _preload_content=False)
    resp.release_conn()


def exec_in_pod(core: client.CoreV1Api, pod: str, ns: str, cmd: list[str]) -> tuple[int, str, str]:
    """Run cmd in the pod's first container; return (exit code, stdout, stderr)."""
    ws = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        ns,
        command=cmd,
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    ws.run_forever(timeout=60)
    out, err = ws.read_stdout(), ws.read_stderr()
    rc = ws.returncode
    ws.close()
    return rc, out, err


def http_get_via_port_forward(core: client.CoreV1Api, pod: str, ns: str, port: int) -> bytes:
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod, ns, ports=str(port))
    try:
        sock = pf.socket(port)
        sock.setblocking(True)
        sock.settimeout(30)
        sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: smoke\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        sock.close()
        err = pf.error(port)
        if err:
            raise RuntimeError(f"port-forward error: {err}")
        return data
    finally:
        pf.close()


def pod_ready(p: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kubeconfig", default=None)
    ap.add_argument("--load", metavar="TARBALL", help="load-image this docker-archive first")
    ap.add_argument("--image", default=DEFAULT_IMAGE, help="a busybox image in the cluster")
    ap.add_argument("--no-oom", action="store_true", help="skip the OOMKilled check")
    a = ap.parse_args()

    kubeconfig = (
        a.kubeconfig
        or subprocess.check_output(["bash", CLUSTER_SH, "kubeconfig"], text=True).strip()
    )
    if a.load:
        step(f"load-image {a.load}")
        subprocess.run(["bash", CLUSTER_SH, "load-image", a.load], check=True)
    config.load_kube_config(config_file=kubeconfig)
    core, apps = client.CoreV1Api(), client.AppsV1Api()
    t0 = time.monotonic()
    step(f"server {client.VersionApi().get_code().git_version}, kubeconfig {kubeconfig}")

    ns = f"autoopt-smoke-{uuid.uuid4().hex[:6]}"
    name = "web"
    labels = {"app": name}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        # pods need the namespace's default ServiceAccount (made by the controller-manager)
        def has_default_sa() -> bool:
            sas = core.list_namespaced_service_account(ns).items
            return any(s.metadata.name == "default" for s in sas)

        wait("default serviceaccount", has_default_sa, 60)
        step(f"namespace {ns} ready")

        container = client.V1Container(
            name="web",
            image=a.image,
            image_pull_policy="Never",
            command=["httpd", "-f", "-p", "8080", "-h", "/www"],
            ports=[client.V1ContainerPort(container_port=8080)],
            resources=client.V1ResourceRequirements(
                requests={"cpu": "50m", "memory": "32Mi"}, limits={"cpu": "500m", "memory": "64Mi"}
            ),
            readiness_probe=client.V1Probe(
                tcp_socket=client.V1TCPSocketAction(port=8080), period_seconds=1
            ),
        )
        dep = client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    # busybox httpd as PID 1 ignores SIGTERM: keep the grace period short
                    spec=client.V1PodSpec(
                        termination_grace_period_seconds=1, containers=[container]
                    ),
                ),
            ),
        )
        apps.create_namespaced_deployment(ns, dep)
        core.create_namespaced_service(
            ns,
            client.V1Service(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1ServiceSpec(
                    selector=labels, ports=[client.V1ServicePort(port=80, target_port=8080)]
                ),
            ),
        )

        def ready_pod() -> client.V1Pod | None:
            pods = core.list_namespaced_pod(ns, label_selector=f"app={name}").items
            return next((p for p in pods if pod_ready(p)), None)

        t1 = time.monotonic()
        pod = wait("pod Ready", ready_pod, 120)
        pname = pod.metadata.name
        step(f"pod {pname} Ready in {time.monotonic() - t1:.1f}s, IP {pod.status.pod_ip}")
        d = apps.read_namespaced_deployment(name, ns)
        assert d.status.ready_replicas == 1, d.status

        rc, out, err = exec_in_pod(core, pname, ns, ["cat", "/proc/1/status"])
        assert rc == 0 and out.startswith("Name:\thttpd"), (rc, out[:200], err)
        step(f"exec cat /proc/1/status -> rc {rc}, {out.splitlines()[0]!r}")
        limit_file = "/sys/fs/cgroup/memory/memory.limit_in_bytes"  # cgroup v1
        rc, out, _ = exec_in_pod(core, pname, ns, ["cat", limit_file])
        assert rc == 0 and out.strip() == str(64 * 1024 * 1024), (rc, out)
        step(f"memory cgroup limit in the pod: {out.strip()} bytes")
        rc, _, _ = exec_in_pod(core, pname, ns, ["sh", "-c", "exit 3"])
        assert rc == 3, rc
        step("exec exit code propagated (3)")

        body = http_get_via_port_forward(core, pname, ns, 8080)
        assert body.startswith(b"HTTP/1.") and b"hello from autoopt" in body, body[:200]
        step(f"port-forward GET -> {body.splitlines()[0].decode()}")

        if not a.no_oom:
            oom = client.V1Pod(
                metadata=client.V1ObjectMeta(name="oom"),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    termination_grace_period_seconds=1,
                    containers=[
                        client.V1Container(
                            name="hog",
                            image=a.image,
                            image_pull_policy="Never",
                            # dd reads 256 MiB of /dev/zero into one buffer: over the 32 MiB limit
                            command=["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
                            resources=client.V1ResourceRequirements(limits={"memory": "32Mi"}),
                        )
                    ],
                ),
            )
            core.create_namespaced_pod(ns, oom)

            def terminated() -> client.V1ContainerStateTerminated | None:
                st = core.read_namespaced_pod_status("oom", ns).status
                cs = (st.container_statuses or [None])[0]
                return cs and cs.state and cs.state.terminated

            term = wait("oom pod to terminate", terminated, 120)
            phase = core.read_namespaced_pod_status("oom", ns).status.phase
            step(f"oom pod: phase {phase}, reason {term.reason}, exit code {term.exit_code}")
            assert term.reason == "OOMKilled" and term.exit_code == 137, term

        apps.delete_namespaced_deployment(name, ns, propagation_policy="Background")
        delete_service(core, name, ns)
        wait(
            "pods gone",
            lambda: not core.list_namespaced_pod(ns, label_selector=f"app={name}").items,
            60,
        )
        assert not core.list_namespaced_service(ns).items
        step("deployment, service and pods deleted")
    finally:
        core.delete_namespace(ns)

        def ns_gone() -> bool:
            try:
                core.read_namespace(ns)
            except client.ApiException as e:
                return e.status == 404
            return False

        wait(f"namespace {ns} deleted", ns_gone, 120)
        step(f"namespace {ns} deleted")
    step(f"SMOKE OK in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
