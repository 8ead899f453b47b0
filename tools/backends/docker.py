"""The Docker backend: each build is an image, each deployment a fresh container.

Talks to the engine through the docker SDK (imported lazily: the server must start fast),
every blocking call in a worker thread. Images and containers carry the labels
`autoopt.managed=true`, `autoopt.target`, `autoopt.build`, `autoopt.instance` (and
`autoopt.deployment` on containers), so a later server can remove what a crashed one left.

Memory is read where the kernel keeps it: VmHWM/VmRSS of the container's PID 1 from
/proc/<host pid>/status (the same file as `docker exec <c> cat /proc/1/status`), and the
container's cgroup peak (v1 memory.max_usage_in_bytes, v2 memory.peak) as a cross-check.
Both are reset before the workload: clear_refs for VmHWM, `echo 0` for the v1 cgroup peak.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import os
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from autoopt.tools import pinning, procfs
from autoopt.tools.backends.base import Build, Deployment, Progress, WorkloadResult
from autoopt.tools.backends.driver import (
    HEALTH_WAIT_SH,
    drive,
    health_pause,
    new_deployment,
    probe,
)
from autoopt.tools.command import Command
from autoopt.tools.errors import (
    AutooptError,
    BackendUnavailable,
    BuildFailed,
    DeployFailed,
    WorkloadFailed,
)
from autoopt.tools.journal import Step
from autoopt.tools.process import process_started, tail_text
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workload import parse_metrics
from autoopt.tools.workspace import Workspace, inside

log = logging.getLogger("autoopt")
T = TypeVar("T")

DEFAULT_BASE_IMAGE = "autoopt/python-base:bookworm"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
MANAGED = "autoopt.managed"
PING_TIMEOUT_S = 3.0
REASON_TTL_S = 5.0
API_TIMEOUT_S = 120.0
POLL_S = 0.1
STATE_POLL_S = 0.25  # how often a deploy asks the engine whether the container exited
WORKLOAD_MOUNT = "/autoopt/workload"
SETUP_HINT = "run scripts/setup-docker.sh"

STATUS_AWK = (
    'awk \'/^VmHWM/ {printf "peak_rss_mb=%.3f\\n", $2/1024} '
    '/^VmRSS/ {printf "rss_mb=%.3f\\n", $2/1024}\''
)
COLLECT_SH = f'docker exec "$CONTAINER" cat /proc/1/status | {STATUS_AWK}'
RESET_SH = "docker exec \"$CONTAINER\" sh -c 'echo 5 > /proc/1/clear_refs'"
INSPECT_SH = (
    "docker inspect -f 'running={{.State.Running}} oom_killed={{.State.OOMKilled}} "
    'restarts={{.RestartCount}}\' "$CONTAINER"'
)
TEARDOWN_SH = 'docker rm -f "$CONTAINER" >/dev/null 2>&1 || true'


def base_image() -> str:
    """The offline base image every target's Dockerfile builds FROM."""
    return os.environ.get("AUTOOPT_BASE_IMAGE") or DEFAULT_BASE_IMAGE


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def image_shell(target: str) -> str:
    """The per-arm image tag of the generated scripts ($TREE ends in /a or /b)."""
    return f'IMAGE="autoopt/{target}:repro-$(basename "$TREE")"'


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(getattr(exc, "explanation", None) or exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_connection_error(exc: BaseException) -> bool:
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return True
    text = str(exc)
    return "Connection aborted" in text or "Connection refused" in text


def _translate(exc: BaseException, error: type[AutooptError], doing: str) -> AutooptError:
    """An SDK or transport exception as the autoopt error that says what to do."""
    import docker.errors
    import requests

    if isinstance(exc, AutooptError):
        return exc
    if _is_connection_error(exc):
        return BackendUnavailable(
            f"the Docker engine at {engine_address()} stopped answering while {doing}: "
            f"{_short(exc)}; {SETUP_HINT}"
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return error(f"the Docker engine did not answer in time while {doing}: {_short(exc)}")
    if isinstance(exc, docker.errors.ImageNotFound):
        return error(f"{doing}: image not found ({_short(exc)}); build it again (build, run_ab)")
    if isinstance(exc, docker.errors.APIError):
        return error(f"{doing} failed, the engine said: {_short(exc)}")
    return error(f"{doing} failed: {type(exc).__name__}: {_short(exc)}")


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking SDK call in a worker thread (not abandoned on cancel: it finishes)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _is_read_timeout(exc: BaseException) -> bool:
    import requests
    import urllib3.exceptions

    return isinstance(exc, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError)


class _BuildStream:
    """A legacy build's JSON stream, read to its end by a thread of its own that writes the
    build log. stop() half-closes the connection: the engine sees the client go, aborts the
    build (a running step is killed), reports it and ends the stream, so the log names every
    image the build made. Only when the engine does not answer is the connection dropped."""

    def __init__(self, stream: Any, log_path: Path) -> None:
        import queue
        import threading

        self.stream = stream
        frame = getattr(stream, "gi_frame", None)  # the SDK's generator holds the response
        self.response = frame.f_locals.get("response") if frame is not None else None
        self.log_path = log_path
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.done = threading.Event()
        self.error: str | None = None  # the build's own error message
        self.exc: BaseException | None = None  # reading the stream failed
        self.drained = False  # the engine ended the stream (nothing more can follow)
        self.stopped = False  # stop() was called
        threading.Thread(target=self._read, name="autoopt-docker-build", daemon=True).start()

    def _read(self) -> None:
        try:
            with open(self.log_path, "w", encoding="utf-8") as out:
                for chunk in self.stream:
                    text = str(chunk.get("stream") or "")
                    if chunk.get("error"):
                        self.error = str(chunk["error"])
                        text += f"ERROR: {self.error}\n"
                    if text:
                        out.write(text)
                        out.flush()
                        self.lines.put(text)
            self.drained = True
        except BaseException as exc:
            self.exc = exc
        finally:
            self.done.set()
            self.lines.put(None)

    async def next_line(self) -> str | None:
        """The next piece of output; None at the end of the stream."""
        import queue

        while True:
            try:
                return self.lines.get_nowait()
            except queue.Empty:
                await anyio.sleep(0.05)

    async def stop(self, grace: float = 15.0) -> None:
        import socket as sockets

        self.stopped = True
        try:
            self.response.raw._sock_shutdown(sockets.SHUT_WR)  # type: ignore[union-attr]
        except Exception:
            grace = 0.0  # no half-close here: drop the connection
        deadline = time.monotonic() + grace
        while not self.done.is_set() and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        if not self.done.is_set():
            if self.response is not None:
                with contextlib.suppress(Exception):
                    self.response.raw.shutdown()  # urllib3 >= 2.3: unblocks the reader
                with contextlib.suppress(Exception):
                    self.response.close()
            while not self.done.is_set() and time.monotonic() < deadline + 5:
                await anyio.sleep(0.05)


class _Cgroup:
    """The host paths of a container's cgroup (v1 controllers or the v2 unified tree)."""

    def __init__(self, memory: Path | None, cpu: Path | None, v2: bool) -> None:
        self.memory = memory
        self.cpu = cpu
        self.v2 = v2

    @classmethod
    def of(cls, pid: int, container_id: str) -> _Cgroup | None:
        """From /proc/<pid>/cgroup, if that pid is visible here and in this container."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        if not any(container_id in line for line in lines):
            return None  # a remote engine, or another pid namespace: not ours to read
        mounts = _cgroup_mounts()
        memory = cpu = None
        unified = None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            names = controllers.split(",") if controllers else []
            if not names:
                unified = path
            for name in names:
                root = mounts.get(name)
                if root is None:
                    continue
                if name == "memory":
                    memory = root / path.lstrip("/")
                elif name == "cpuacct":
                    cpu = root / path.lstrip("/")
        if memory is not None:
            return cls(memory, cpu, v2=False)
        root = mounts.get("")
        if unified is not None and root is not None:
            target = root / unified.lstrip("/")
            if (target / "memory.current").exists():  # the memory controller is on v2
                return cls(target, target, v2=True)
        return None

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError, TypeError):
            return int((self.memory / name).read_text().split()[0])  # type: ignore[operator]
        return None

    def reset_peak(self) -> bool:
        if self.v2 or self.memory is None:
            return False  # v2's memory.peak resets only per open file (kernel >= 6.12)
        try:
            (self.memory / "memory.max_usage_in_bytes").write_text("0")
        except OSError:
            return False
        return True

    def oom_kills(self) -> int | None:
        name = "memory.events" if self.v2 else "memory.oom_control"
        with contextlib.suppress(OSError, TypeError):
            for line in (self.memory / name).read_text().splitlines():  # type: ignore[operator]
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return None

    def cpu_seconds(self) -> float | None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            if self.v2:
                for line in (self.cpu / "cpu.stat").read_text().splitlines():  # type: ignore[operator]
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
                return None
            return int((self.cpu / "cpuacct.usage").read_text()) / 1e9  # type: ignore[operator]
        return None

    def shell_path(self, name: str, container_id: str) -> str:
        """The file as the scripts spell it: the container id replaced by $CONTAINER."""
        folder = str(self.memory).replace(container_id, "$CONTAINER")
        return f'"{folder}/{name}"'


def _cgroup_mounts() -> dict[str, Path]:
    """Controller -> mount point on this host ('' for the cgroup2 unified tree)."""
    out: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, extra = left.split(), right.split()
            if len(fields) < 5 or not extra:
                continue
            if extra[0] == "cgroup2":
                out.setdefault("", Path(fields[4]))
            elif extra[0] == "cgroup" and len(extra) >= 3:
                for option in extra[2].split(","):
                    if option in ("memory", "cpuacct", "cpu"):
                        out.setdefault(option, Path(fields[4]))
    return out


class DockerBackend:
    """Builds images with the legacy builder's API, runs each deployment as a container."""

    name = "docker"

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.hostname = socket.gethostname()
        self.instance = f"{self.hostname}-{os.getpid()}"
        started = process_started(os.getpid())
        self.started = str(int(started)) if started else ""
        self._client: Any = None
        self._reason: tuple[float, str | None] | None = None
        self._cgroups: dict[str, _Cgroup | None] = {}
        self._cpu_mark: dict[str, float] = {}
        self._batch: dict[str, dict[str, Any]] = {}
        try:
            if self.unavailable_reason() is None:
                removed = self.forget_orphans()
                if removed:
                    log.warning(
                        "docker: removed %d leftover(s) of earlier servers: %s",
                        len(removed),
                        ", ".join(removed),
                    )
        except Exception as exc:  # never fail construction over a cleanup
            log.warning("docker: could not clean up leftovers of earlier servers: %s", exc)

    # -- engine --------------------------------------------------------------------
    def _docker(self) -> Any:
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env(timeout=int(API_TIMEOUT_S))
            except Exception as exc:
                raise BackendUnavailable(
                    f"no Docker engine reachable at {engine_address()}: {_short(exc)}; {SETUP_HINT}"
                ) from exc
        return self._client

    def unavailable_reason(self) -> str | None:
        now = time.monotonic()
        if self._reason is not None and now - self._reason[0] < REASON_TTL_S:
            return self._reason[1]
        reason = self._check_engine()
        self._reason = (time.monotonic(), reason)
        return reason

    def _check_engine(self) -> str | None:
        import docker

        probe = None
        try:
            probe = docker.from_env(timeout=int(PING_TIMEOUT_S))
            probe.ping()
        except Exception as exc:
            return f"no Docker engine reachable at {engine_address()}: {_short(exc)}; {SETUP_HINT}"
        try:
            probe.images.get(base_image())
        except docker.errors.ImageNotFound:
            return f"base image {base_image()} missing; {SETUP_HINT}"
        except Exception as exc:
            return f"the Docker engine at {engine_address()} failed: {_short(exc)}; {SETUP_HINT}"
        finally:
            probe.close()
        return None

    def _labels(self, target: str, build_id: str, deployment: str | None = None) -> dict[str, str]:
        labels = {
            MANAGED: "true",
            "autoopt.target": target,
            "autoopt.build": build_id,
            "autoopt.instance": self.instance,
            "autoopt.instance_started": self.started,
        }
        if deployment:
            labels["autoopt.deployment"] = deployment
        return labels

    async def _image_exists(self, image: str, error: type[AutooptError], doing: str) -> None:
        import docker.errors

        try:
            await _call(self._docker().images.get, image)
        except docker.errors.ImageNotFound as exc:
            if image == base_image():
                raise BackendUnavailable(f"base image {image} missing; {SETUP_HINT}") from exc
            raise error(
                f"image {image} is missing (removed by a cleanup, or never built); "
                "build again (build, run_ab)"
            ) from exc
        except Exception as exc:
            raise _translate(exc, error, doing) from exc

    # -- build ---------------------------------------------------------------------
    async def build(
        self, spec: TargetSpec, build: Build, progress: Progress | None = None
    ) -> Build:
        if not spec.build.dockerfile:
            raise BuildFailed(
                f"target {spec.name} has no 'dockerfile:' in '## Build'; the docker "
                "backend builds an image from it (relative to the workspace)"
            )
        dockerfile = inside(self.workspace.root, spec.build.dockerfile)
        if not dockerfile.is_file():
            raise BuildFailed(
                f"target {spec.name}: Dockerfile {spec.build.dockerfile} not found "
                f"in {self.workspace.root}"
            )
        base = base_image()
        await self._image_exists(base, BuildFailed, "checking the base image")
        tag = f"autoopt/{spec.name}:{build.id}"
        buildargs = dict(spec.build.args)
        if spec.docker.base_image_arg:
            buildargs[spec.docker.base_image_arg] = base
        logs = Path(build.tree).parent / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / "build.log"
        args_sh = "".join(f" --build-arg {shlex.quote(f'{k}={v}')}" for k, v in buildargs.items())
        build.journal.add(
            Step(phase="build", shell=image_shell(spec.name), note="this arm's image tag")
        )
        step = build.journal.add(
            Step(
                phase="build",
                shell=f'docker build -f "$HERE/Dockerfile"{args_sh} -t "$IMAGE" "$TREE"',
                cwd=build.tree,
                note=f"the server built {tag} (Docker API, context $TREE)",
            )
        )
        if progress:
            await progress(f"docker build {tag} ({spec.name} at {build.commit[:12]})")
        client = self._docker()
        t0, started = time.monotonic(), time.time()
        timed_out = False
        started_reader: list[_BuildStream] = []  # set in the worker thread: a cancel can't lose it
        reader: _BuildStream | None = None

        def start_build() -> _BuildStream:
            stream = client.api.build(
                path=build.tree,
                dockerfile=str(dockerfile),
                tag=tag,
                buildargs=buildargs,
                labels=self._labels(spec.name, build.id),
                rm=True,
                forcerm=True,
                decode=True,
                timeout=int(spec.build.timeout_s) + 60,
            )
            started_reader.append(_BuildStream(stream, log_path))
            return started_reader[0]

        try:
            try:
                reader = await _call(start_build)
                with anyio.fail_after(max(0.0, spec.build.timeout_s - (time.monotonic() - t0))):
                    while (line := await reader.next_line()) is not None:
                        if progress and line.startswith("Step "):
                            await progress(f"docker build {spec.name}: {line.strip()[:160]}")
            except TimeoutError:
                timed_out = True
            except Exception as exc:
                raise _translate(exc, BuildFailed, f"docker build of {spec.name}") from exc
            finally:
                reader = started_reader[0] if started_reader else None
                if reader is not None and not reader.done.is_set():
                    with anyio.CancelScope(shield=True):
                        await reader.stop()  # the engine aborts the build, then says so
            assert reader is not None
            if reader.exc is not None and not reader.stopped:
                if not _is_read_timeout(reader.exc):
                    raise _translate(reader.exc, BuildFailed, f"docker build of {spec.name}")
                timed_out = True
            build.duration_s = round(time.monotonic() - t0, 3)
            build.log_tail = tail_text(log_path, 40)
            step.elapsed_s = build.duration_s
            if timed_out:
                raise BuildFailed(
                    f"docker build of {spec.name} timed out after {spec.build.timeout_s:.0f} s "
                    f"(build_timeout in target.md). Log tail:\n{build.log_tail}"
                )
            if reader.error is not None:
                step.exit_code = 1
                raise BuildFailed(
                    f"docker build of {spec.name} failed: {reader.error}"
                    f"{_pull_hint(reader.error)}\nLog tail:\n{build.log_tail}"
                )
            await self._image_exists(tag, BuildFailed, f"docker build of {spec.name}")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _call(
                    self._remove_failed_build,
                    build.id,
                    tag,
                    log_path,
                    aborted=reader is None or not reader.drained,
                    started=started,
                )
            raise
        step.exit_code = 0
        build.image = tag
        if progress:
            await progress(f"built {tag} in {build.duration_s:.1f} s")
        return build

    # -- deploy --------------------------------------------------------------------
    def _limits(self, spec: TargetSpec) -> tuple[dict[str, Any], str]:
        """SDK arguments and CLI flags for the memory and CPU limits."""
        from docker.errors import DockerException
        from docker.utils import parse_bytes

        kwargs: dict[str, Any] = {}
        flags = ""
        memory = spec.docker.memory or os.environ.get("AUTOOPT_DOCKER_MEMORY")
        if memory:
            try:
                parse_bytes(memory)
            except DockerException as exc:
                raise DeployFailed(
                    f"target {spec.name}: Docker memory {memory!r} is not a size; "
                    "write e.g. 256m or 1g"
                ) from exc
            kwargs.update(mem_limit=memory, memswap_limit=memory)  # no swap: a limit is a limit
            flags += f" --memory {shlex.quote(memory)} --memory-swap {shlex.quote(memory)}"
        if spec.docker.cpus:
            kwargs["nano_cpus"] = int(spec.docker.cpus * 1e9)
            flags += f" --cpus {spec.docker.cpus:g}"
        if (cpus := pinning.current()) is not None:  # a duet arm: its own CPUs
            kwargs["cpuset_cpus"] = pinning.cpuset_text(cpus)
            flags += f" --cpuset-cpus {kwargs['cpuset_cpus']}"
        return kwargs, flags

    async def deploy(self, spec: TargetSpec, build: Build) -> Deployment:
        deployment = new_deployment(spec, build, self.name)
        dep_id = deployment.id
        image = build.image or f"autoopt/{spec.name}:{build.id}"
        await self._image_exists(image, DeployFailed, f"deploying {spec.name}")
        deployment.journal.add(
            Step(
                phase="deploy",
                shell=image_shell(spec.name),
                note="this arm's image (tagged by build.sh)",
            )
        )
        if spec.kind == "batch":
            deployment.journal.add(
                Step(
                    phase="deploy",
                    shell=": batch target: nothing to start",
                    note="the workload runs in a fresh container",
                )
            )
            return deployment
        port = spec.service_port or await self._exposed_port(image)
        if port is None:
            raise DeployFailed(
                f"target {spec.name}: no service port; add 'port: <n>' to "
                "'## Service' in target.md (or EXPOSE it in the Dockerfile)"
            )
        limits, flags = self._limits(spec)
        client = self._docker()
        step = deployment.journal.add(
            Step(
                phase="deploy",
                shell=(
                    f"CONTAINER=$(docker run -d -p 127.0.0.1::{port} -e PORT={port}{flags} "
                    '"$IMAGE")'
                ),
                env={"PORT": str(port)},
                note=f"the server ran {image} (Docker API), labelled autoopt.*",
            )
        )
        deployment.journal.add(
            Step(
                phase="deploy",
                shell=(
                    f"PORT=$(docker port \"$CONTAINER\" {port}/tcp | head -1 | sed 's/.*://')\n"
                    'ENDPOINT="http://127.0.0.1:$PORT"'
                ),
                note="the host port Docker picked",
            )
        )
        health_path = spec.local.health or "/"
        deployment.journal.add(
            Step(
                phase="deploy",
                shell=HEALTH_WAIT_SH.format(url=f"$ENDPOINT{health_path}"),
                note="wait for the health check",
            )
        )
        container = None
        t0 = time.monotonic()
        try:
            try:
                container = await _call(
                    client.containers.create,
                    image,
                    detach=True,
                    name=f"autoopt-{spec.name}-{dep_id}",
                    ports={f"{port}/tcp": ("127.0.0.1", None)},
                    environment={"PORT": str(port)},
                    labels=self._labels(spec.name, build.id, dep_id),
                    **limits,
                )
                deployment.container = container.id
                await _call(container.start)
                await _call(container.reload)
            except Exception as exc:
                raise _translate(exc, DeployFailed, f"starting a container of {image}") from exc
            host_port = _host_port(container.attrs, port)
            if host_port is None:
                raise DeployFailed(
                    f"Docker published no host port for {port}/tcp of {image}; "
                    f"container state: {container.status}"
                )
            deployment.port = host_port
            deployment.endpoint = f"http://127.0.0.1:{host_port}"
            pid = int(container.attrs["State"].get("Pid") or 0)
            deployment.pid = pid or None
            deployment.pid_start = process_started(pid) if pid else None
            self._cgroups[dep_id] = _Cgroup.of(pid, container.id) if pid else None
            await self._wait_healthy(
                container, f"{deployment.endpoint}{health_path}", spec.local.health_timeout_s
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove_container(deployment)
            raise
        step.elapsed_s = round(time.monotonic() - t0, 3)
        return deployment

    async def _exposed_port(self, image: str) -> int | None:
        try:
            img = await _call(self._docker().images.get, image)
        except Exception:
            return None
        for key in (img.attrs.get("Config") or {}).get("ExposedPorts") or {}:
            number, _, proto = key.partition("/")
            if proto in ("", "tcp") and number.isdigit():
                return int(number)
        return None

    async def _wait_healthy(self, container: Any, url: str, timeout: float) -> None:
        started = time.monotonic()
        deadline, asked = started + timeout, started
        last = ""
        while True:
            try:
                if await anyio.to_thread.run_sync(probe, url):
                    return
            except (OSError, http.client.HTTPException) as exc:  # not listening yet, reset, ...
                last = f"{type(exc).__name__}: {exc}"
            now = time.monotonic()
            if now - asked < STATE_POLL_S and now <= deadline:
                await anyio.sleep(health_pause(started))
                continue
            asked = now
            try:  # not yet: has it exited?
                await _call(container.reload)
            except Exception as exc:
                raise _translate(exc, DeployFailed, "watching the container") from exc
            state = container.attrs.get("State") or {}
            if container.status not in ("created", "running"):
                oom = " (killed for memory: OOM)" if state.get("OOMKilled") else ""
                raise DeployFailed(
                    f"the container exited (code {state.get('ExitCode')}){oom} before its health "
                    f"check passed. Log tail:\n{await self._log_tail(container)}"
                )
            if time.monotonic() > deadline:
                raise DeployFailed(
                    f"the container did not answer {url} within {timeout:.0f} s (health_timeout "
                    f"in target.md); last error: {last or 'none'}. Log tail:\n"
                    f"{await self._log_tail(container)}"
                )
            await anyio.sleep(health_pause(started))

    async def _log_tail(self, container: Any, lines: int = 30) -> str:
        try:
            data = await _call(container.logs, stdout=True, stderr=True, tail=lines)
        except Exception as exc:
            return f"(container logs unavailable: {_short(exc)})"
        return bytes(data).decode("utf-8", "replace").rstrip()

    # -- measure -------------------------------------------------------------------
    async def reset_peak(self, deployment: Deployment) -> bool:
        if deployment.container is None or deployment.pid is None:
            return False
        cgroup = self._cgroups.get(deployment.id)
        if cgroup is not None:  # the host can see the container's process and cgroup
            cpu = cgroup.cpu_seconds()
            self._cpu_mark[deployment.id] = cpu if cpu is not None else 0.0
            ok = procfs.reset_peak(deployment.pid)
            how = f"the server wrote the same file on the host: /proc/{deployment.pid}/clear_refs"
        else:
            done = await self._exec(deployment, ["sh", "-c", "echo 5 > /proc/1/clear_refs"])
            ok = done is not None
            how = "the server ran the same command"
        if ok:
            deployment.journal.add(
                Step(
                    phase="deploy",
                    shell=RESET_SH,
                    note=f"reset VmHWM so the peak belongs to the workload ({how})",
                )
            )
        if cgroup is not None and cgroup.reset_peak():
            path = cgroup.shell_path("memory.max_usage_in_bytes", deployment.container)
            shell = f"[ ! -w {path} ] || echo 0 > {path}"
            deployment.journal.add(
                Step(
                    phase="deploy",
                    shell=shell,
                    note="reset the container's cgroup memory peak (root)",
                )
            )
        return ok

    async def _exec(self, deployment: Deployment, argv: list[str]) -> str | None:
        """stdout of `docker exec`; None when it failed."""
        try:
            container = await _call(self._docker().containers.get, deployment.container)
            code, output = await _call(container.exec_run, argv, stdout=True, stderr=False)
        except Exception:
            return None
        return bytes(output).decode("utf-8", "replace") if code == 0 else None

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
        if spec.kind == "batch":
            argv = Command(env=env or {}, argv=argv).env_argv()  # `env` sets them in there
            shell = f"env {shell}" if env else shell
            return await self._run_batch(spec, deployment, argv, shell, name=name, timeout=timeout)
        return await drive(
            deployment,
            argv,
            shell,
            name=name,
            timeout=timeout,
            env=env,
            note="the driver runs on the host, against $ENDPOINT",
        )

    def _mounted(self, argv: list[str], shell: str) -> tuple[list[str], str, dict[str, Any], str]:
        """Workload files of the target's folder, bind-mounted read-only into the container."""
        volumes: dict[str, Any] = {}
        out = list(argv)
        for i, arg in enumerate(argv):
            path = Path(arg)
            if not path.is_absolute() or not path.is_file():
                continue
            with contextlib.suppress(ValueError):
                path.resolve().relative_to(self.workspace.targets_dir.resolve())
                folder = str(path.parent)
                if volumes and folder not in volumes:
                    continue  # one workload folder per run
                volumes[folder] = {"bind": WORKLOAD_MOUNT, "mode": "ro"}
                out[i] = f"{WORKLOAD_MOUNT}/{path.name}"
        flag = ""
        if volumes:
            shell = shell.replace('"$WORKLOAD_DIR/', f'"{WORKLOAD_MOUNT}/')
            flag = f' -v "$WORKLOAD_DIR:{WORKLOAD_MOUNT}:ro"'
        return out, shell, volumes, flag

    async def _run_batch(
        self,
        spec: TargetSpec,
        deployment: Deployment,
        argv: list[str],
        shell: str,
        *,
        name: str,
        timeout: float,
    ) -> WorkloadResult:
        build_image = f"autoopt/{spec.name}:{deployment.build_id}"
        limits, flags = self._limits(spec)
        command, shell_in, volumes, mount_flag = self._mounted(argv, shell)
        logs = Path(deployment.log_dir)
        client = self._docker()
        t0 = time.monotonic()
        container = None
        timed_out = False
        step = deployment.journal.add(
            Step(
                phase="workload",
                shell=f'docker run --rm{flags}{mount_flag} "$IMAGE" {shell_in}',
                argv=command,
                note="the measured process runs in a fresh container of this arm",
            )
        )
        try:
            try:
                container = await _call(
                    client.containers.create,
                    build_image,
                    command=command,
                    detach=True,
                    name=f"autoopt-{spec.name}-{deployment.id}-{name}".lower(),
                    labels=self._labels(spec.name, deployment.build_id, deployment.id),
                    volumes=volumes,
                    **limits,
                )
                deployment.container = container.id
                await _call(container.start)
                while True:
                    await _call(container.reload)
                    if container.status not in ("created", "running"):
                        break
                    if time.monotonic() - t0 > timeout:
                        timed_out = True
                        break
                    await anyio.sleep(POLL_S)
                stdout = await _call(container.logs, stdout=True, stderr=False)
                stderr = await _call(container.logs, stdout=False, stderr=True)
            except Exception as exc:
                raise _translate(
                    exc, WorkloadFailed, f"running the workload of {spec.name}"
                ) from exc
            state = container.attrs.get("State") or {}
        finally:
            with anyio.CancelScope(shield=True):
                await self._remove_container(deployment)
                deployment.container = None
        elapsed = time.monotonic() - t0
        out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
        out_path.write_bytes(bytes(stdout))
        err_path.write_bytes(bytes(stderr))
        code = int(state.get("ExitCode") or 0)
        oom = bool(state.get("OOMKilled"))
        self._batch[deployment.id] = {"oom": oom, "code": code}
        step.elapsed_s, step.exit_code = round(elapsed, 3), code
        metrics = parse_metrics(tail_text(out_path, 200))
        tail = tail_text(err_path, 30) or tail_text(out_path, 30)
        if oom:
            tail = f"{tail}\n(the container was killed for memory: OOM)".strip()
        result = WorkloadResult(
            metrics=metrics,
            exit_code=code,
            duration_s=elapsed,
            log_tail=tail,
            stdout_file=str(out_path),
        )
        result.peak_rss_mb = metrics.pop("peak_rss_mb", None)
        result.cpu_s = metrics.pop("cpu_s", None)
        if timed_out:
            raise WorkloadFailed(
                f"the workload timed out after {timeout:.0f} s. Log tail:\n{result.log_tail}"
            )
        return result

    async def collect(
        self, spec: TargetSpec, deployment: Deployment, result: WorkloadResult
    ) -> dict[str, object]:
        if spec.kind == "batch":
            deployment.journal.add(
                Step(
                    phase="collect",
                    shell="grep -E '^(peak_rss_mb|cpu_s)=' \"$LOGS/workload.out\"",
                    note="peak RSS of the batch process: wait4 (ru_maxrss) inside the container",
                )
            )
            state = self._batch.pop(deployment.id, {})
            metrics: dict[str, float] = {}
            if result.peak_rss_mb is not None:
                metrics["peak_rss_mb"] = result.peak_rss_mb
            if result.cpu_s is not None:
                metrics["cpu_s"] = result.cpu_s
                metrics["cpu_pct"] = round(100 * result.cpu_s / max(result.duration_s, 1e-9), 2)
            return {
                "metrics": metrics,
                "died": result.exit_code != 0,
                "restarts": 0,
                "oom_killed": bool(state.get("oom")),
            }
        import docker.errors

        assert deployment.container is not None
        cgroup = self._cgroups.get(deployment.id)
        deployment.journal.add(
            Step(
                phase="collect",
                shell=COLLECT_SH,
                note=(
                    "peak RSS of the container's PID 1 (the server read the same file on the host: "
                    f"/proc/{deployment.pid}/status)"
                    if cgroup is not None
                    else "peak RSS of the container's PID 1 (the server ran the same command)"
                ),
            )
        )
        if cgroup is not None:
            path = cgroup.shell_path(
                "memory.peak" if cgroup.v2 else "memory.max_usage_in_bytes", deployment.container
            )
            deployment.journal.add(
                Step(
                    phase="collect",
                    shell=(
                        f"[ ! -r {path} ] || "
                        "awk '{printf \"cgroup_max_usage_mb=%.3f\\n\", $1/1048576}' " + path
                    ),
                    note="the container cgroup's memory peak (cross-check; includes page cache)",
                )
            )
        deployment.journal.add(
            Step(phase="collect", shell=INSPECT_SH, note="died / OOM-killed / restarted?")
        )
        try:
            container = await _call(self._docker().containers.get, deployment.container)
        except docker.errors.NotFound:
            return {"metrics": {}, "died": True, "restarts": 0, "oom_killed": False}
        except Exception as exc:
            raise _translate(exc, WorkloadFailed, "inspecting the container") from exc
        cgroup_ooms = cgroup.oom_kills() if cgroup is not None else None
        metrics: dict[str, float] = {}
        smaps: dict[str, float] = {}
        alive = bool((container.attrs.get("State") or {}).get("Running"))
        if alive and cgroup is not None:
            try:
                reading = procfs.read_memory(deployment.pid)  # type: ignore[arg-type]
            except OSError:
                alive = False
            else:
                metrics.update(peak_rss_mb=reading.peak_rss_mb, rss_mb=reading.rss_mb)
                smaps = reading.smaps
                peak = cgroup.peak_bytes()
                if peak is not None:
                    metrics["cgroup_max_usage_mb"] = round(peak / 1048576, 3)
                cpu = cgroup.cpu_seconds()
                if cpu is not None:
                    used = cpu - self._cpu_mark.get(deployment.id, 0.0)
                    metrics["cpu_s"] = round(used, 3)
                    metrics["cpu_pct"] = round(100 * used / max(result.duration_s, 1e-9), 2)
        elif alive:
            status = await self._exec(deployment, ["cat", "/proc/1/status"])
            if status is None:
                alive = False
            else:
                fields = procfs.parse_status(status)
                metrics.update(
                    peak_rss_mb=round(fields.get("VmHWM", 0.0) / 1024, 3),
                    rss_mb=round(fields.get("VmRSS", 0.0) / 1024, 3),
                )
        if not alive:  # the engine may not have noticed the exit yet: let it settle
            await self._settle(container)
        state = container.attrs.get("State") or {}
        restarts = int(container.attrs.get("RestartCount") or 0)
        oom = bool(state.get("OOMKilled")) or (cgroup_ooms or 0) > 0
        if not alive:
            return {"metrics": {}, "died": True, "restarts": restarts, "oom_killed": oom}
        return {
            "metrics": metrics,
            "smaps": smaps,
            "died": False,
            "restarts": restarts,
            "oom_killed": oom,
        }

    async def _settle(self, container: Any, timeout: float = 3.0) -> None:
        """Reload until the engine reports the container stopped (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Exception):
            while True:
                await _call(container.reload)
                if container.status not in ("created", "running"):
                    return
                if time.monotonic() > deadline:
                    return
                await anyio.sleep(POLL_S)

    # -- clean up ------------------------------------------------------------------
    async def teardown(self, deployment: Deployment) -> None:
        self._cpu_mark.pop(deployment.id, None)
        self._cgroups.pop(deployment.id, None)
        self._batch.pop(deployment.id, None)
        if deployment.kind == "batch":
            deployment.journal.add(
                Step(phase="teardown", shell=": nothing to stop (the workload ran with --rm)")
            )
            return
        await self._remove_container(deployment, keep_log=True)
        deployment.journal.add(Step(phase="teardown", shell=TEARDOWN_SH))

    async def _remove_container(self, deployment: Deployment, *, keep_log: bool = False) -> None:
        import docker.errors

        if deployment.container is None:
            return
        try:
            container = await _call(self._docker().containers.get, deployment.container)
            if keep_log and deployment.log_dir:
                with contextlib.suppress(Exception):
                    data = await _call(container.logs, stdout=True, stderr=True, tail=2000)
                    Path(deployment.log_dir, "service.log").write_bytes(bytes(data))
            await _call(container.remove, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "already in progress" in str(exc):
                return
            raise _translate(
                exc, DeployFailed, f"removing container {deployment.container[:12]}"
            ) from exc
        except AutooptError:
            raise
        except Exception as exc:
            raise _translate(
                exc, DeployFailed, f"removing container {deployment.container[:12]}"
            ) from exc

    async def _remove_image(self, image: str) -> None:
        import docker.errors

        try:
            await _call(self._docker().images.remove, image, force=True)
        except docker.errors.ImageNotFound:
            return
        except Exception as exc:
            log.warning("docker: could not remove image %s: %s", image, _short(exc))

    def _remove_failed_build(
        self, build_id: str, tag: str, log_path: Path, *, aborted: bool, started: float
    ) -> None:
        """Everything a failed, cancelled or timed-out build left: its tag, its labelled
        images, and the untagged images of its steps (the legacy builder keeps them as
        cache; nothing else refers to them). Images shared with other builds stay."""
        client = self._docker()
        if aborted:  # a dropped build finishes its current step (or even tags) a moment later
            time.sleep(1.0)
        with contextlib.suppress(Exception):
            client.images.remove(tag, force=True)
        with contextlib.suppress(Exception):
            labelled = client.images.list(all=True, filters={"label": f"autoopt.build={build_id}"})
            for image in sorted(labelled, key=lambda i: i.attrs.get("Created", ""), reverse=True):
                with contextlib.suppress(Exception):
                    client.images.remove(image.id, force=True)
        logged, running = _build_steps(tail_text(log_path, 10000, 1 << 22))
        ours: list[str] = []  # untagged step images, children first
        parents: dict[str, bool] = {}  # full id -> untagged (ours)
        for short in logged:
            with contextlib.suppress(Exception):
                image = client.images.get(short)
                parents[image.id] = not image.tags
                if not image.tags:
                    ours.insert(0, image.id)
        last = next(reversed(parents), None) if parents else None
        with contextlib.suppress(Exception):
            for image in client.images.list(all=True, filters={"dangling": True}):
                parent = image.attrs.get("Parent")
                if image.id in ours or parent not in parents:
                    continue
                child_of_ours = parents[parent]
                dropped_step = (  # the step that was running when we dropped the build
                    aborted
                    and parent == last
                    and running is not None
                    and _created_after(image.attrs.get("Created", ""), started)
                    and _same_instruction(running, image.attrs)
                )
                if child_of_ours or dropped_step:
                    ours.insert(0, image.id)
        if ours:
            self._remove_untagged(ours)

    def _remove_untagged(self, pending: list[str]) -> None:
        """Remove images, children first; retry while a container is still on its way out."""
        import docker.errors

        client = self._docker()
        for _ in range(20):
            busy = []
            for image_id in pending:
                try:
                    client.images.remove(image_id)  # refused while children use it
                except docker.errors.APIError as exc:
                    if "container" in str(exc):
                        busy.append(image_id)
                except Exception:
                    continue
            if not busy:
                return
            pending = busy
            time.sleep(0.25)

    async def discard(self, build: Build) -> None:
        if build.image:
            await self._remove_image(build.image)

    def _orphaned(self, labels: dict[str, str]) -> bool:
        """True when the server that made it (same host, by pid) is gone."""
        import psutil

        host, _, pid_text = (labels.get("autoopt.instance") or "").rpartition("-")
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
        import docker.errors

        client = self._docker()
        removed: list[str] = []
        selector = {"label": f"{MANAGED}=true"}
        for container in client.containers.list(all=True, filters=selector):
            if self._orphaned(container.labels or {}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                    removed.append(f"container {container.name}")
        for image in client.images.list(filters=selector):
            if self._orphaned(image.labels or {}):
                name = image.tags[0] if image.tags else image.short_id
                with contextlib.suppress(docker.errors.NotFound):
                    client.images.remove(image.id, force=True)
                    removed.append(f"image {name}")
        return removed


def _build_steps(log: str) -> tuple[list[str], str | None]:
    """The image ids a legacy build log names (in order), and the instruction of a step
    that started after the last of them (the one running when the log ends), if any."""
    import re

    ids: list[str] = []
    running: str | None = None
    for line in log.splitlines():
        step = re.match(r"^Step \d+/\d+ : (.*)$", line)
        image = re.match(r"^ ---> ([0-9a-f]{12,64})\s*$", line)
        if step:
            running = step[1].strip()
        elif image:
            ids.append(image[1])
            running = None
    return ids, running


def _created_after(created: str, started: float) -> bool:
    """Docker's RFC 3339 `Created` (nanoseconds) at or after `started` (2 s of slack)."""
    from datetime import datetime

    try:
        stamp = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return False
    return stamp >= started - 2.0


def _same_instruction(instruction: str, attrs: dict[str, Any]) -> bool:
    """Whether a legacy-builder image was committed by `instruction` (RUN runs a command;
    the others are recorded as `#(nop) <INSTRUCTION> ...`)."""
    config = attrs.get("ContainerConfig") or {}
    cmd = " ".join(config.get("Cmd") or [])
    keyword = instruction.split(maxsplit=1)[0].upper() if instruction else ""
    if keyword == "RUN":
        return "#(nop)" not in cmd
    return "#(nop)" in cmd and keyword in cmd


def _host_port(attrs: dict[str, Any], port: int) -> int | None:
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostPort", "").isdigit():
            return int(binding["HostPort"])
    return None


def _pull_hint(error: str) -> str:
    text = error.lower()
    if any(
        s in text
        for s in (
            "pull access denied",
            "no such host",
            "lookup ",
            "dial tcp",
            "manifest unknown",
            "repository does not exist",
        )
    ):
        return (
            f" -- the Dockerfile's FROM names an image this engine does not have, and no "
            f"registry can be reached; build FROM the offline base (ARG BASE_IMAGE, "
            f"{base_image()}) or {SETUP_HINT}"
        )
    return ""
