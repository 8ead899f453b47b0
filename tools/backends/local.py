"""The local backend: the target as processes on this machine, each in its own group."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import anyio

from autoopt.tools import contain, procfs
from autoopt.tools.backends.base import Build, Deployment, Progress, WorkloadResult
from autoopt.tools.backends.driver import (
    HEALTH_WAIT_SH,
    drive,
    health_pause,
    new_deployment,
    probe,
)
from autoopt.tools.command import Command
from autoopt.tools.errors import BuildFailed, DeployFailed
from autoopt.tools.journal import Step
from autoopt.tools.process import (
    Child,
    base_env,
    kill_group,
    process_started,
    run,
    spawn,
    sweep,
)
from autoopt.tools.profiling.detect import join_command
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workload import host_python, program
from autoopt.tools.workspace import Workspace

COLLECT_SH = (
    'awk \'/^VmHWM/ {printf "peak_rss_mb=%.3f\\n", $2/1024} '
    '/^VmRSS/ {printf "rss_mb=%.3f\\n", $2/1024}\' "/proc/$PID/status"'
)
HEALTH_CMD_SH = (
    "for _ in $(seq 300); do {cmd} >/dev/null 2>&1 && break; sleep 0.1; done"
)
TEARDOWN_SH = (
    'kill -TERM -- "-$PID" 2>/dev/null || true\n'
    'for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done\n'
    'kill -KILL -- "-$PID" 2>/dev/null || true'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBackend:
    """Builds in the worktree, runs the service as a child process group."""

    name = "local"

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._children: dict[str, Child] = {}
        self._cpu_mark: dict[str, float] = {}

    def unavailable_reason(self) -> str | None:
        return None

    async def build(
        self, spec: TargetSpec, build: Build, progress: Progress | None = None
    ) -> Build:
        tree = Path(build.tree)
        if not spec.local.build:
            build.journal.add(Step(phase="build", shell=": no build step", note="none needed"))
            return build
        python = host_python(spec)
        values = {"python": python, "target_dir": str(self.workspace.target_dir(spec.name))}
        cmd = program(spec.local.build, values, python=python, cwd=tree)
        argv = cmd.argv
        if progress:
            await progress(f"building {spec.name} at {build.commit[:12]}: {spec.local.build}")
        logs = build.folder / "logs"
        child, done, timed_out = await run(
            argv,
            cwd=tree,
            env=base_env(cmd.env),
            logs=logs,
            name="build",
            timeout=spec.build.timeout_s,
        )
        build.duration_s = round(done.elapsed_s, 3)
        build.log_tail = child.tail(40)
        build.journal.add(
            Step(
                phase="build",
                shell=f'(cd "$TREE" && {cmd.text()})'.replace(
                    values["target_dir"], '"$WORKLOAD_DIR"'),  # the record's copy
                argv=argv,
                env=cmd.env,
                cwd=str(tree),
                elapsed_s=done.elapsed_s,
                exit_code=done.code,
            )
        )
        if timed_out:
            raise BuildFailed(
                f"build of {spec.name} timed out after {spec.build.timeout_s:.0f} s "
                f"(build_timeout in target.md). Log tail:\n{build.log_tail}"
            )
        if done.code != 0:
            raise BuildFailed(
                f"build of {spec.name} failed (exit {done.code}): {spec.local.build}\n"
                f"Log tail:\n{build.log_tail}"
            )
        return build

    async def deploy(self, spec: TargetSpec, build: Build) -> Deployment:
        deployment = new_deployment(spec, build, self.name)
        dep_id, logs = deployment.id, Path(deployment.log_dir)
        if spec.kind == "batch":
            deployment.journal.add(
                Step(
                    phase="deploy",
                    shell=": batch target: nothing to start",
                    note="the workload command is the measured process",
                )
            )
            return deployment
        if not spec.local.run:
            raise DeployFailed(f"target {spec.name} is a service but '## Local' has no 'run:'")
        port = free_port()
        python = host_python(spec)
        target_dir = str(self.workspace.target_dir(spec.name))
        values = {"port": str(port), "python": python, "target_dir": target_dir}
        cmd = program(spec.local.run, values, python=python, cwd=Path(build.tree))
        argv = cmd.argv
        env = {"PORT": str(port), **_fresh_tmp(logs), **cmd.env}
        child = spawn(
            argv,
            cwd=Path(build.tree),
            env=base_env(env),
            logs=logs,
            name="service",
            scope=contain.new_scope(dep_id),
        )
        self._children[dep_id] = child
        deployment.scope = child.scope
        deployment.port = port
        deployment.endpoint = f"http://127.0.0.1:{port}"
        deployment.pid = child.pid
        deployment.pid_start = process_started(child.pid)
        shown = program(
            spec.local.run, {**values, "port": "@PORT@"}, python=python, cwd=Path(build.tree)
        )
        prefix = Command(env=shown.env, argv=[]).text()
        shell_run = (
            f"{prefix}exec setsid {join_command(shown.argv)}".replace("@PORT@", '"$PORT"')
            .replace(target_dir, '"$WORKLOAD_DIR"')  # the record's copy
        )
        deployment.journal.add(
            Step(
                phase="deploy",
                shell=f'(cd "$TREE" && {shell_run}) > "$LOGS/service.log" 2>&1 &\nPID=$!',
                argv=argv,
                cwd=build.tree,
                env=env,
            )
        )
        health: str | list[str] = f"{deployment.endpoint}{spec.local.health or '/'}"
        wait_sh = HEALTH_WAIT_SH.format(url=f"$ENDPOINT{spec.local.health or '/'}")
        if spec.local.health_cmd:
            check = program(spec.local.health_cmd, values, python=python, cwd=Path(build.tree))
            health = check.argv
            shown = program(
                spec.local.health_cmd, {**values, "port": "@PORT@"}, python=python,
                cwd=Path(build.tree),
            )
            wait_sh = HEALTH_CMD_SH.format(
                cmd=join_command(shown.argv).replace("@PORT@", '"$PORT"')
            )
        deployment.journal.add(
            Step(phase="deploy", shell=wait_sh, note="wait for the health check")
        )
        try:
            await self._wait_healthy(child, health, spec.local.health_timeout_s)
        except BaseException:
            await child.stop()
            self._children.pop(dep_id, None)
            raise
        return deployment

    async def _wait_healthy(self, child: Child, url: str | list[str], timeout: float) -> None:
        """Until `url` answers 2xx, or the command `url` (an argv) exits 0."""
        started = time.monotonic()
        deadline = started + timeout
        last = ""
        while time.monotonic() < deadline:
            exited = child.poll()
            if exited is not None:
                raise DeployFailed(
                    f"the service exited (code {exited.code}) before its health check passed. "
                    f"Log tail:\n{child.tail(30)}"
                )
            try:
                if isinstance(url, list):
                    ok = await anyio.to_thread.run_sync(_command_ok, url)
                else:
                    ok = await anyio.to_thread.run_sync(probe, url)
                if ok:
                    return
            except OSError as exc:
                last = str(exc)
            await anyio.sleep(health_pause(started))
        raise DeployFailed(
            f"the service did not answer {_shown(url)} within {timeout:.0f} s (health_timeout in "
            f"target.md); last error: {last or 'none'}. Log tail:\n{child.tail(30)}"
        )

    async def reset_peak(self, deployment: Deployment) -> bool:
        if deployment.pid is None:
            return False
        self._cpu_mark[deployment.id] = _cpu_or_zero(deployment.pid)
        ok = procfs.reset_peak(deployment.pid)
        if ok:
            deployment.journal.add(
                Step(
                    phase="deploy",
                    shell='echo 5 > "/proc/$PID/clear_refs"',
                    note="reset VmHWM so the peak belongs to the workload",
                )
            )
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
        batch = spec.kind == "batch"
        if batch:  # a temp folder of its own: nothing cached there outlives the run
            env = {**_fresh_tmp(Path(deployment.log_dir)), **(env or {})}
        result = await drive(
            deployment,
            argv,
            f'(cd "$TREE" && {shell})' if batch else shell,
            name=name,
            timeout=timeout,
            env=env,
            cwd=Path(deployment.tree) if batch and deployment.tree else None,
        )
        if batch:
            result.peak_rss_mb = result.metrics.pop("peak_rss_mb", None)
            result.cpu_s = result.metrics.pop("cpu_s", None)
        return result

    async def collect(
        self, spec: TargetSpec, deployment: Deployment, result: WorkloadResult
    ) -> dict[str, object]:
        if spec.kind == "batch":
            deployment.journal.add(
                Step(
                    phase="collect",
                    shell="grep -E '^(peak_rss_mb|cpu_s)=' \"$LOGS/workload.out\"",
                    note="peak RSS of the batch process, from wait4 (ru_maxrss)",
                )
            )
            metrics = {"peak_rss_mb": result.peak_rss_mb} if result.peak_rss_mb is not None else {}
            if result.cpu_s is not None:
                metrics["cpu_s"] = result.cpu_s
                metrics["cpu_pct"] = round(100 * result.cpu_s / max(result.duration_s, 1e-9), 2)
            return {"metrics": metrics, "died": result.exit_code != 0, "restarts": 0}
        assert deployment.pid is not None
        child = self._children.get(deployment.id)
        died = child is not None and child.poll() is not None
        deployment.journal.add(
            Step(phase="collect", shell=COLLECT_SH, note="peak RSS of the service process")
        )
        if died:
            return {"metrics": {}, "died": True, "restarts": 0}
        reading = procfs.read_memory(deployment.pid)
        if spec.local.measure_children:
            reading.peak_rss_mb = round(
                reading.peak_rss_mb + sum(r.peak_rss_mb for r in _children_memory(deployment.pid)),
                3,
            )
        cpu = _cpu_or_zero(deployment.pid) - self._cpu_mark.get(deployment.id, 0.0)
        return {
            "metrics": {
                "peak_rss_mb": reading.peak_rss_mb,
                "rss_mb": reading.rss_mb,
                "cpu_s": round(cpu, 3),
                "cpu_pct": round(100 * cpu / max(result.duration_s, 1e-9), 2),
            },
            "smaps": reading.smaps,
            "died": False,
            "restarts": 0,
        }

    async def teardown(self, deployment: Deployment) -> None:
        child = self._children.pop(deployment.id, None)
        if child is not None:
            await child.stop()
        elif deployment.pid is not None and process_started(deployment.pid) == deployment.pid_start:
            import signal

            kill_group(deployment.pid, signal.SIGTERM)
            await anyio.sleep(0.5)
            kill_group(deployment.pid, signal.SIGKILL)
        if deployment.scope:  # what it started outside its group (another server's, too)
            await sweep(deployment.scope)
        batch = deployment.pid is None and child is None
        shell = ": batch target: nothing to stop" if batch else TEARDOWN_SH
        deployment.journal.add(Step(phase="teardown", shell=shell))

    async def discard(self, build: Build) -> None:
        return None

    def forget_orphans(self) -> list[str]:
        return []


def _command_ok(argv: list[str]) -> bool:
    """One health command: True when it exits 0 within 5 s (blocking)."""
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, timeout=5, env=base_env({}))
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _shown(check: str | list[str]) -> str:
    return join_command(check) if isinstance(check, list) else check


def _fresh_tmp(logs: Path) -> dict[str, str]:
    """TMPDIR and XDG_CACHE_HOME in the deployment's own folder (removed with it)."""
    tmp = logs / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {"TMPDIR": str(tmp), "XDG_CACHE_HOME": str(tmp)}


def _cpu_or_zero(pid: int) -> float:
    try:
        return procfs.cpu_seconds(pid)
    except OSError:
        return 0.0


def _children_memory(pid: int) -> list[procfs.MemoryReading]:
    """Readings of every live descendant (for targets whose workers are child processes)."""
    import psutil

    readings = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            readings.append(procfs.read_memory(child.pid, with_smaps=False))
        except OSError:
            continue
    return readings
