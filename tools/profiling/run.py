"""Profiling sessions: build (or reuse a deployment), run the workload under a profiler,
read /proc, tear down, parse, store. MCP-agnostic; the server maps tools onto these.

A service runs under the profiler by deploying a copy of its TargetSpec whose `run:` is
wrapped (memray, the tracemalloc runner, heaptrack's preload); a batch target's workload
command is wrapped the same way. Sampling profilers (py-spy, perf) attach to the
deployment's pid instead. Every command is journalled (phase "profile").
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

import anyio
from pydantic import BaseModel, Field

from autoopt.tools.backends.base import Build, Deployment, WorkloadResult
from autoopt.tools.command import Command, is_python_name, parse_command, resolve
from autoopt.tools.errors import (
    BackendUnavailable,
    InvalidName,
    ProfilerUnavailable,
    WorkloadFailed,
)
from autoopt.tools.interpreter import Interpreter, memray_env
from autoopt.tools.journal import Journal, Step, shell_join
from autoopt.tools.process import Child, base_env, run, spawn
from autoopt.tools.profiling import detect, jemalloc, memray, names, store, views
from autoopt.tools.profiling.detect import join_command
from autoopt.tools.profiling.model import (
    MemoryReadings,
    Overhead,
    Peak,
    Point,
    Profile,
    ProfileBuilder,
)
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workload import program, workload_argv, workload_script
from autoopt.tools.workspace import check_name

MemoryTool = Literal[
    "auto", "memray", "memray-arenas", "memray-native", "retention", "tracemalloc", "heaptrack",
    "jemalloc", "procfs",
]
CpuTool = Literal["auto", "py-spy", "perf"]
Note = Callable[[str], Awaitable[None]]
STOP_GRACE_S = 30.0


class ProfileRun(BaseModel):
    """What a profiling call produced: the stored profile's summary and its views."""

    profile: Profile = Field(description="the stored profile (stacks included)")
    files: dict[str, str] = Field(description="stacks, folded, speedscope, flamegraph, raw...")
    top_self: list[views.TopEntry]
    top_total: list[views.TopEntry]
    top_paths: list[views.PathEntry]
    scope: list[views.ScopeEntry] = Field(description="by the deepest editable frame")
    table: str = Field(description="the <label>-stacks.txt text")
    journal: Journal = Field(description="every command, phase 'profile'")


class _Session:
    """One profiling call: owns (or borrows) a build and a deployment."""

    def __init__(
        self,
        engine: Any,
        target: str,
        kind: str,
        *,
        deployment_id: str | None,
        label: str | None,
        backend: str,
        workload: str | None,
        progress: Note | None,
    ) -> None:
        self.engine = engine
        self.ws = engine.workspace
        if deployment_id is not None:
            self.deployment: Deployment | None = engine.get_deployment(
                check_name(deployment_id, "deployment id")
            )
            if self.deployment.target != target:
                raise InvalidName(
                    f"deployment {deployment_id} runs {self.deployment.target}, not {target}"
                )
            backend = self.deployment.backend
        else:
            self.deployment = None
        attachable = self.deployment is not None and self.deployment.pid is not None
        if backend != "local" and not attachable:
            raise BackendUnavailable(
                f"profiling starts targets under a profiler on the local backend only (asked: "
                f"{backend}). Either profile with backend='local' (same code, same workload), "
                f"or deploy on {backend} and pass deployment_id: py-spy and /proc then attach "
                "from the host to the container's process"
            )
        self.spec: TargetSpec = engine.spec(target)
        self.env = backend
        self.impl = engine.backend(backend)
        self.kind = kind
        self.label = check_name(
            label
            or f"{'mem' if kind == 'memory' else 'cpu'}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid4().hex[:4]}",
            "profile label",
        )
        store.check_label_free(self.ws, target, self.env, self.label, kind)
        self.folder = store.profiles_dir(self.ws, target, self.env)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.script = workload_script(self.ws, self.spec, workload)
        self.workload_name = self.script.name if self.script else self.spec.local.workload
        self.own = deployment_id is None
        self._dep_steps = len(self.deployment.journal.steps) if self.deployment else 0
        self.build: Build | None = None
        self.progress = progress
        self.journal = Journal()
        self.notes: list[str] = []
        if backend != "local" and self.deployment is not None:
            self.notes.append(
                f"attached from the host to the {backend} deployment's process (host pid "
                f"{self.deployment.pid}): the profiler ran on the host, not inside the container"
            )
        self.raw_files: list[str] = []
        self._jemalloc: detect.JemallocUse | Literal[False] | None = None
        self.preload: Path | None = None  # a jemalloc preloaded into a program without one
        self.memray_env: dict[str, str] = {}  # memray installed beside the target's python
        self.memray_mode: memray.Mode = "objects"
        self.mode: str | None = None  # how the bytes are attributed (the profile says it)
        self.granularity = 0.0
        self.peak: Peak | None = None
        self.growth: list[Point] = []

    # -- helpers ----------------------------------------------------------------------
    async def say(self, message: str) -> None:
        if self.progress:
            await self.progress(message)

    def raw(self, suffix: str) -> Path:
        path = self.folder / f"{self.label}-{suffix}"
        if path.exists():
            path.unlink()
        self.raw_files.append(str(path))
        return path

    @property
    def tree(self) -> str | None:
        if self.deployment is not None and self.deployment.tree:
            return self.deployment.tree
        return self.build.tree if self.build else None

    @property
    def python(self) -> Interpreter:
        """The target's one interpreter (target.md's `python:`, else python3 on PATH)."""
        from autoopt.tools.interpreter import find

        return find(self.spec.local.python)

    def _resolved(self, text: str) -> str:
        """A target.md command as it runs here: the interpreter explicit, {port} kept."""
        values = {"python": self.python.path, "target_dir": str(self.ws.target_dir(self.spec.name))}
        cwd = Path(self.tree) if self.tree else self.ws.target_dir(self.spec.name)
        return program(text, values, python=self.python.path, cwd=cwd).text()

    def _script_runner(self) -> list[str]:
        """How the batch workload script runs: by its #! line or extension, else bash."""
        assert self.script is not None
        runner = resolve([str(self.script)], self.python.path, self.script.parent)
        return runner if runner != [str(self.script)] else ["bash", str(self.script)]

    @property
    def program_command(self) -> str | None:
        """The command that starts the program itself, as it runs here: the service's run,
        the batch workload command, or a Python workload script with its interpreter. None
        when a workload script (shell or other) starts the programs."""
        if self.spec.kind == "service":
            assert self.spec.local.run is not None
            return self._resolved(self.spec.local.run)
        if self.script is None:
            assert self.spec.local.workload is not None
            return self._resolved(self.spec.local.workload)
        runner = self._script_runner()
        return join_command(runner) if is_python_name(runner[0]) else None

    @property
    def jemalloc(self) -> detect.JemallocUse | None:
        """How the built program gets jemalloc (read once the tree exists), else None."""
        if self._jemalloc is None and self.tree:
            command = self.program_command
            use = detect.jemalloc_use(command, Path(self.tree)) if command else None
            self._jemalloc = use or False
        return self._jemalloc or None

    def is_python(self) -> bool:
        command = self.program_command
        if command is not None:
            return detect.is_python_command(command)
        assert self.script is not None
        return "python" in self.script.read_text(errors="replace")

    @property
    def follows_tree(self) -> bool:
        """A batch workload script that starts the programs (not a Python program itself)."""
        return self.spec.kind == "batch" and self.program_command is None

    def batch_command(self) -> str:
        """The batch program's command line (a workload script by its #! line or extension)."""
        return self.program_command or join_command(self._script_runner())

    def wrapped_spec(self, wrap: Callable[[str], str] | None) -> TargetSpec:
        """The spec whose service command (or batch command) runs under the profiler."""
        if wrap is None:
            return self.spec
        if self.spec.kind == "service":
            assert self.program_command is not None
            local = self.spec.local.model_copy(update={"run": wrap(self.program_command)})
        else:
            local = self.spec.local.model_copy(update={"workload": wrap(self.batch_command())})
        return self.spec.model_copy(update={"local": local})

    def step(
        self,
        shell: str,
        *,
        argv: list[str] | None = None,
        note: str | None = None,
        elapsed_s: float | None = None,
        exit_code: int | None = None,
    ) -> None:
        target = self.deployment.journal if self.deployment is not None else self.journal
        target.add(
            Step(
                phase="profile",
                shell=shell,
                argv=argv or [],
                note=note,
                elapsed_s=elapsed_s,
                exit_code=exit_code,
            )
        )

    # -- lifecycle --------------------------------------------------------------------
    async def prepare(self, patch: str | None, base: str | None = None) -> None:
        """Build `base` (default: the frontier) + patch, unless a deployment was given or it
        is built."""
        if self.deployment is not None or self.build is not None:
            return
        await self.say(f"building {self.spec.name}")
        self.build = await self.engine.build(
            self.spec.name, patch=patch, base=base, backend=self.env, progress=self.progress
        )

    async def start(self, spec: TargetSpec, patch: str | None) -> Deployment:
        if self.deployment is not None:
            return self.deployment
        await self.prepare(patch)
        assert self.build is not None
        await self.say(f"deploying {self.spec.name} for profiling")
        self.deployment = await self.impl.deploy(spec, self.build)
        self.engine._track(self.deployment, True)
        return self.deployment

    async def workload(self, spec: TargetSpec) -> tuple[WorkloadResult | None, str | None]:
        """Run the workload; (result, error) — a failure is returned, not raised."""
        assert self.deployment is not None
        script = None if spec.kind == "batch" and spec is not self.spec else self.script
        target_dir = self.ws.target_dir(self.spec.name)
        cmd, shell = workload_argv(spec, script, self.deployment, target_dir)
        await self.say(f"running the workload ({self.workload_name})")
        try:
            result = await self.impl.run_workload(
                spec, self.deployment, cmd.argv, shell, name="workload", env=cmd.env
            )
        except WorkloadFailed as exc:
            return None, str(exc)
        return result, None

    async def collect(
        self, spec: TargetSpec, result: WorkloadResult | None, reset: bool
    ) -> tuple[MemoryReadings, bool]:
        """/proc readings (wait4 for a batch program) and whether the target died."""
        assert self.deployment is not None
        if result is None:
            result = WorkloadResult(exit_code=-1, duration_s=0.0)
        c = await self.impl.collect(spec, self.deployment, result)
        metrics = c.get("metrics") or {}
        died = bool(c.get("died"))
        if spec.kind == "batch":
            source = (
                "wait4 ru_maxrss of the profiled command (the profiler's own processes included)"
            )
            return MemoryReadings(vm_hwm_mb=metrics.get("peak_rss_mb"), source=source), died
        if died:
            return MemoryReadings(source="/proc: the service had exited; nothing to read"), died
        return MemoryReadings(
            vm_hwm_mb=metrics.get("peak_rss_mb"),
            vm_rss_mb=metrics.get("rss_mb"),
            smaps=c.get("smaps") or {},
            peak_reset=reset,
            source=f"/proc/{self.deployment.pid}/status and smaps_rollup "
            "(profiler overhead included)",
        ), died

    async def stop(self) -> None:
        """Tear down what this session started; keep a borrowed deployment."""
        with anyio.CancelScope(shield=True):
            if (
                self.own
                and self.deployment is not None
                and self.deployment.id in self.engine.deployments
            ):
                await self.engine.teardown(self.deployment.id)

    async def cleanup(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stop()
            if self.own and self.build is not None:  # a build-cache slot is kept, released
                await self.engine.discard_build(self.build.id, "its profile finished")

    def full_journal(self) -> Journal:
        """Build, deploy, profiler, workload, collect and teardown steps, as phase profile."""
        out = Journal()
        sources = [self.build.journal] if self.build and self.own else []
        if self.deployment is not None:
            sources.append(Journal(steps=self.deployment.journal.steps[self._dep_steps :]))
        sources.append(self.journal)
        for journal in sources:
            for s in journal.steps:
                if s.phase == "profile":
                    out.add(s)
                else:
                    note = f"[{s.phase}] {s.note}" if s.note else f"[{s.phase}]"
                    out.add(s.model_copy(update={"phase": "profile", "note": note}))
        return out

    async def finish(
        self,
        *,
        tool: str,
        measure: str,
        unit: Literal["bytes", "samples"],
        builder: ProfileBuilder,
        overhead: Overhead,
        overhead_note: str,
        memory: MemoryReadings | None,
        result: WorkloadResult | None,
        error: str | None,
        rate: float | None = None,
    ) -> ProfileRun:
        build = self.build or (
            self.engine.get_build(self.deployment.build_id) if self.deployment else None
        )
        journal = self.full_journal()
        names.qualify(builder.frames, self.tree, self.spec.is_editable,
                      [str(self.ws.target_dir(self.spec.name))])
        profile = Profile(
            kind=self.kind,
            label=self.label,
            target=self.spec.name,
            env=self.env,  # type: ignore[arg-type]
            revision=build.commit if build else None,
            base=build.base if build else None,
            patch_sha256=build.patch_sha256 if build else None,
            workload=self.workload_name,
            program=self.batch_command() if self.spec.kind == "batch" else self.program_command,
            interpreter=self.python.describe() if self.is_python() else None,
            tool=tool,
            measure=measure,
            unit=unit,
            total=builder.total,
            frames=builder.frames,
            stacks=builder.stacks,
            overhead=overhead,
            overhead_note=overhead_note,
            unsymbolized_frames=builder.unsymbolized,
            sample_rate_hz=rate,
            memory=memory,
            mode=self.mode,
            granularity_bytes=self.granularity,
            peak=self.peak,
            growth=self.growth,
            workload_s=result.duration_s if result else None,
            workload_metrics=result.metrics if result else {},
            complete=error is None,
            error=error,
            notes=self.notes,
            raw_files=[f for f in self.raw_files if Path(f).exists()],
            steps=journal.steps,
        )
        if not profile.stacks and error is None and tool != "procfs":
            profile.notes.append(f"{tool} recorded no stacks")
        files = store.save(self.ws, profile)
        for f in profile.raw_files:
            files.setdefault(Path(f).name.removeprefix(f"{self.label}-"), f)
        run_ = ProfileRun(
            profile=profile,
            files=files,
            top_self=views.top_functions(profile, 10, "self"),
            top_total=views.top_functions(profile, 10, "total"),
            top_paths=views.top_paths(profile, 10),
            scope=views.scope(profile, 10),
            table=views.stacks_text(profile),
            journal=journal,
        )
        if error is not None:
            raise WorkloadFailed(
                f"{error}\nWhat was captured is kept as the INCOMPLETE profile {self.label!r} "
                f"({len(profile.stacks)} stacks, total "
                f"{views.human_value(profile.total, profile.unit)}): {files['stacks']}"
            )
        return run_


def _died_message(spec: TargetSpec, result: WorkloadResult | None) -> str:
    if spec.kind == "batch":
        code = result.exit_code if result else "?"
        tail = result.log_tail if result else ""
        return f"the batch program exited with code {code} during the profile. Output tail:\n{tail}"
    return "the service exited during the profiled workload (it is no longer running)"


# -- memory -----------------------------------------------------------------------------
async def profile_memory(
    engine: Any,
    target: str,
    *,
    deployment_id: str | None = None,
    patch: str | None = None,
    base: str | None = None,
    workload: str | None = None,
    label: str | None = None,
    tool: MemoryTool = "auto",
    backend: str = "local",
    progress: Note | None = None,
) -> ProfileRun:
    """Where the memory is at the peak, by stack, plus VmHWM / VmRSS / smaps_rollup."""
    if deployment_id is not None and (patch is not None or base is not None):
        raise InvalidName(
            "give either deployment_id (profile what runs) or patch/base (build one)"
        )
    s = _Session(
        engine,
        target,
        "memory",
        deployment_id=deployment_id,
        label=label,
        backend=backend,
        workload=workload,
        progress=progress,
    )
    error: str | None = None
    result: WorkloadResult | None = None
    memory: MemoryReadings | None = None
    attached: Deployment | None = None
    try:
        await s.prepare(patch, base)  # the built tree says what the program is
        chosen = _memory_tool(s, tool, s.is_python())
        out, wrap, dumps = _memory_wrapper(s, chosen)
        spec = s.wrapped_spec(wrap)
        with _watching(dumps):
            dep = await s.start(spec, patch)
            if not s.own and s.spec.kind == "service" and chosen == "memray":
                await _memray_attach(s, dep, out)  # type: ignore[arg-type]
                attached = dep
            reset = await s.impl.reset_peak(dep) if spec.kind == "service" else False
            status = out.with_name(out.name + ".status") if out else None
            async with _reporting(s, status if chosen in ("retention", "tracemalloc") else None,
                                  chosen):
                result, error = await s.workload(spec)
            memory, died = await s.collect(spec, result, reset)
            if attached is not None:
                attached = None
                await _memray_detach(s, dep)
            if died and error is None:
                error = _died_message(spec, result)
            await s.stop()
        if dumps is not None:
            builder, problem = await _read_jemalloc(s, dumps, result)
            error = error or problem
            measure, overhead, note = jemalloc.MEASURE, "moderate", jemalloc.OVERHEAD_NOTE
        else:
            builder, measure, overhead, note = await _read_memory(s, chosen, out)
        if error is not None and chosen == "heaptrack" and not builder.total:
            s.notes.append(
                "heaptrack buffers its trace inside the process and flushes it at "
                "exit: a program killed by a signal loses the unflushed part (here: "
                "all of it). The peak RSS above was still measured"
            )
        return await s.finish(
            tool=chosen,
            measure=measure,
            unit="bytes",
            builder=builder,
            overhead=overhead,
            overhead_note=note,
            memory=memory,
            result=result,
            error=error,
        )
    finally:
        if attached is not None:
            with anyio.CancelScope(shield=True):
                await _memray_detach(s, attached)
        await s.cleanup()


def _memory_wrapper(
    s: _Session, chosen: str
) -> tuple[Path | None, Callable[[str], str] | None, jemalloc.Dumps | None]:
    """(the profiler's output file, how it wraps the command, jemalloc's dumps or None)."""
    attach = not s.own and s.spec.kind == "service"
    if chosen == "heaptrack":
        s.mode = "every malloc and free of the process, native frames"
    elif chosen == "jemalloc":
        s.mode = f"jemalloc's sampling, one sample per {1 << jemalloc.LG_SAMPLE} bytes on average"
        s.granularity = float(1 << jemalloc.LG_SAMPLE)
    if attach and chosen not in ("procfs", "memray"):
        raise ProfilerUnavailable(
            f"{chosen} cannot attach to a running service here; omit deployment_id so the "
            f"service starts under {chosen}, or use tool='procfs' for /proc readings only"
        )
    out: Path | None = None
    wrap: Callable[[str], str] | None = None
    dumps: jemalloc.Dumps | None = None
    if chosen == "memray":
        out = s.raw("memray.bin")
        mode = s.memray_mode
        s.mode, s.granularity = memray.MODES[mode], _arena(s) if mode == "arenas" else 0.0
        if s.follows_tree:  # a script that starts the programs: each Python under memray
            wrap = _follow(s, out)
        elif not attach:
            env = s.memray_env
            wrap = lambda cmd: memray.wrap(cmd, out, env, mode)  # noqa: E731
    elif chosen == "retention":
        from autoopt.tools.profiling import retention

        out = s.raw("retention.json")
        runner = s.folder / f"{s.label}-retention-runner.py"
        s.raw_files.append(str(runner))
        s.mode = retention.MODE
        wrap = lambda cmd: _runner_wrap(  # noqa: E731
            lambda: retention.wrap(cmd, out, runner), "retention")
    elif chosen == "tracemalloc":
        from autoopt.tools.profiling import tracemalloc_tool

        out = s.raw("tracemalloc.snapshot")
        runner = s.folder / f"{s.label}-tracemalloc-runner.py"
        s.raw_files.append(str(runner))
        s.mode = tracemalloc_tool.MODE
        wrap = lambda cmd: _runner_wrap(  # noqa: E731
            lambda: tracemalloc_tool.wrap(cmd, out, runner), "tracemalloc")
    elif chosen == "heaptrack":
        from autoopt.tools.profiling import heaptrack

        out = s.raw("heaptrack.raw")
        if s.follows_tree:  # the script runs its one program under $AUTOOPT_PROFILE_WRAP
            wrap = lambda cmd: heaptrack.wrap_variable(cmd, out)  # noqa: E731
        else:
            wrap = lambda cmd: heaptrack.wrap(cmd, out)  # noqa: E731
    elif chosen == "jemalloc":
        prefix = f"{s.label}-{jemalloc.SUFFIX}"
        for stale in s.folder.glob(f"{prefix}.*.heap"):
            stale.unlink()
        variable = s.jemalloc.variable if s.jemalloc else "MALLOC_CONF"
        wrap = lambda cmd: jemalloc.wrap(cmd, s.folder / prefix, variable, s.preload)  # noqa: E731
        dumps = jemalloc.Dumps(s.folder, prefix)
    if s.follows_tree and chosen in ("tracemalloc", "retention"):
        assert s.script is not None
        raise ProfilerUnavailable(
            f"{chosen} must start the program itself, but this batch workload is a script "
            f"({s.script.name}) that starts other programs: use tool='memray' (each Python "
            "it starts is followed), 'jemalloc' (each program on jemalloc dumps its heap) "
            "or 'heaptrack' (the program the script runs under $AUTOOPT_PROFILE_WRAP), "
            "or give the target a `workload:` command in ## Local"
        )
    return out, wrap, dumps


def _arena(s: _Session) -> float:
    """pymalloc's arena size for the target's Python: 1 MiB since 3.10, 256 KiB before."""
    major, _, minor = s.python.tag.partition(".")
    return float(memray.ARENA_BYTES if (int(major), int(minor or 0)) >= (3, 10) else 1 << 18)


def _runner_wrap(wrap: Callable[[], str], tool: str) -> str:
    try:
        return wrap()
    except ValueError as exc:
        raise ProfilerUnavailable(f"tool='{tool}': {exc}") from None


@asynccontextmanager
async def _reporting(s: _Session, status: Path | None, tool: str) -> AsyncIterator[None]:
    """While the body runs, the runner's status line (every few seconds, when it changes)
    goes to the progress notes."""
    if status is None or s.progress is None:
        yield
        return

    async def watch() -> None:
        last = ""
        while True:
            await anyio.sleep(3.0)
            try:
                text = status.read_text().strip()
            except OSError:
                continue
            if text and text != last:
                last = text
                await s.say(f"{tool}: {text}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


@contextmanager
def _watching(dumps: jemalloc.Dumps | None) -> Iterator[None]:
    """While the body runs, a thread reads jemalloc's dumps as they appear and deletes the
    superseded ones (a long workload writes one every 4 MiB allocated)."""
    if dumps is None:
        yield
        return
    stop = threading.Event()

    def scan() -> None:
        while not stop.wait(1.0):
            dumps.scan()

    thread = threading.Thread(target=scan, name="jemalloc-dumps", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _memory_tool(s: _Session, tool: MemoryTool, python: bool) -> str:
    if tool == "procfs":
        return tool
    if tool == "jemalloc":
        detect.require("addr2line")
        if s.jemalloc is None and s.spec.kind == "batch" and s.script is not None:
            s.notes.append(
                f"the workload is a script ({s.script.name}): jemalloc's configuration is "
                "exported to every program it starts; those on jemalloc dump heaps"
            )
        elif s.jemalloc is None and python:
            raise ProfilerUnavailable(
                f"{s.spec.name} is a Python program that does not run on jemalloc: use "
                "tool='memray' (or 'auto'); jemalloc would see only the interpreter's C frames"
            )
        elif s.jemalloc is None:
            s.preload = detect.system_jemalloc()
            s.notes.append(
                f"the program does not use jemalloc: {s.preload} was preloaded so that "
                "jemalloc's profiler could run. The stacks and bytes are the program's; "
                "VmHWM and smaps describe it on jemalloc, not on its own allocator"
            )
        return tool
    if python:
        if tool == "retention":
            return tool
        if tool in ("auto", "memray", "memray-arenas", "memray-native"):
            s.memray_mode = {"memray-arenas": "arenas", "memray-native": "native"}.get(
                tool, "objects")  # type: ignore[assignment]
            reason = detect.memray_reason()
            if reason is None:
                try:
                    s.memray_env = memray_env(s.python)
                    return "memray"
                except ProfilerUnavailable as exc:
                    reason = str(exc)
            if tool != "auto":
                raise ProfilerUnavailable(reason)
            s.notes.append(
                f"memray cannot run here ({reason}); tracemalloc used instead: "
                "stacks near the peak, high overhead"
            )
            return "tracemalloc"
        if tool == "tracemalloc":
            s.notes.append("tracemalloc chosen explicitly: stacks near the peak, not at it")
            return tool
        if tool == "heaptrack":
            detect.require("heaptrack")
            s.notes.append("heaptrack on a Python target: native frames only")
            return tool
    if tool in ("memray", "memray-arenas", "memray-native", "tracemalloc", "retention"):
        raise ProfilerUnavailable(
            f"{tool} profiles Python programs; {s.spec.name} is native: "
            "use tool='heaptrack' or 'jemalloc' (or 'auto')"
        )
    use = s.jemalloc
    if tool == "auto" and use is not None:
        detect.require("addr2line")
        s.notes.append(
            f"the program runs on jemalloc ({use.linkage}): jemalloc's own heap profiler "
            f"was used ({use.variable}=prof:true...)"
        )
        return "jemalloc"
    detect.require("heaptrack")
    if use is not None and use.linkage == "static":
        s.notes.append(
            "the program has jemalloc linked in statically: heaptrack's preload does not "
            "see those allocations; tool='jemalloc' (or 'auto') uses jemalloc's own profiler"
        )
    elif use is not None:
        s.notes.append(
            f"the program runs on jemalloc ({use.linkage}): heaptrack's preload sees its "
            "malloc/free calls; tool='jemalloc' (or 'auto') uses jemalloc's own profiler"
        )
    return "heaptrack"


async def _read_jemalloc(
    s: _Session, dumps: jemalloc.Dumps, result: WorkloadResult | None
) -> tuple[ProfileBuilder, str | None]:
    """The heaviest heap dump, unbiased and symbolized; or why there is none."""
    await anyio.to_thread.run_sync(lambda: dumps.scan(final=True))
    heaviest = dumps.heaviest
    if heaviest is None:
        said = _jemalloc_messages(s, result)
        problem = "jemalloc wrote no heap dump" + (f"; it said: {said}" if said else "")
        if "Invalid conf pair" in said:
            problem += ". 'Invalid conf pair: prof...' means this jemalloc was built without "
            problem += "--enable-prof: profile a build whose jemalloc has it, or use heaptrack"
        return ProfileBuilder(), problem
    s.raw_files.append(str(heaviest.path))
    exe = detect.require("addr2line")
    builder, unmapped = await anyio.to_thread.run_sync(jemalloc.parse, heaviest, s.tree, exe)
    command = s.program_command
    binary = detect.program_path(command, Path(s.tree)) if command and s.tree else None
    if binary is None:  # a workload script started the programs
        where = '"${PROGRAM:?set PROGRAM to the binary that wrote the dumps}"'
    elif s.tree and str(binary).startswith(s.tree.rstrip("/") + "/"):
        where = '"$TREE/' + os.path.relpath(binary, s.tree) + '"'
    else:
        where = shlex.quote(str(binary))
    s.step(
        jemalloc.heaviest_shell(
            s.folder / dumps.prefix, where, s.folder / f"{s.label}-jeprof.folded"
        ),
        note=f"the heaviest of the heap dumps ({dumps.seen} here: {heaviest.path.name}), read "
        "by jeprof (libjemalloc-dev). The server did the same: it kept the heaviest dump while "
        "the workload ran, unbiased the bytes as jeprof does and symbolized with addr2line",
    )
    others = len(dumps.pids) - 1
    s.notes.append(
        f"jemalloc: the heaviest of {dumps.seen} heap dumps is {heaviest.kind} dump "
        f"#{heaviest.seq} of pid {heaviest.pid} ({round(heaviest.total)} bytes live, "
        f"sampled every {1 << jemalloc.LG_SAMPLE} bytes on average and unbiased: a stack "
        f"holding B bytes of small objects rests on about B/{1 << jemalloc.LG_SAMPLE} samples, "
        "a relative error near 1/sqrt of that); a dump comes about every "
        f"{1 << jemalloc.LG_INTERVAL} bytes allocated, so the true peak can exceed it by up "
        "to that much"
        + (f"; {others} other process(es) dumped heaps too (not merged)" if others > 0 else "")
        + (f"; {unmapped} addresses fell outside every mapped binary" if unmapped else "")
    )
    return builder, None


def _jemalloc_messages(s: _Session, result: WorkloadResult | None) -> str:
    """jemalloc's own '<jemalloc>: ...' lines from the program's output."""
    texts = [result.log_tail] if result and result.log_tail else []
    if s.deployment is not None:
        for path in Path(s.deployment.log_dir).glob("*"):
            if path.is_file():
                texts.append(path.read_text(errors="replace")[-65536:])
    lines = {ln.strip() for text in texts for ln in text.splitlines() if "<jemalloc>" in ln}
    return "; ".join(sorted(lines)[:5])


async def _read_memory(
    s: _Session, tool: str, out: Path | None
) -> tuple[ProfileBuilder, str, Overhead, str]:
    if tool == "procfs":
        return ProfileBuilder(), "no stacks (/proc readings only)", "none", "reads /proc only"
    assert out is not None
    if tool == "memray" and s.follows_tree:
        return await _read_followed(s, out)
    if tool == "memray":
        if not out.exists():
            s.notes.append("memray wrote no output file")
            return ProfileBuilder(), memray.MEASURE, "moderate", memray.OVERHEAD_NOTE
        transform = [s.python.path, "-m", "memray", "transform", "csv", "-f", "-o",
                     str(out.with_suffix(".csv")), str(out)]
        s.step(
            Command(env=s.memray_env, argv=transform).text(),
            note="the high-water-mark records by stack (the server read them through "
            "memray's FileReader API; this command writes the same rows as CSV)",
        )
        await s.say("reading memray's capture (the high-water mark)")
        builder, info = await anyio.to_thread.run_sync(memray.parse, out, s.tree)
        s.peak, s.growth = info["peak"], info["growth"]
        span = (
            "since the attach"
            if not s.own and s.spec.kind == "service"
            else "over the whole process life (startup included)"
        )
        s.notes.append(
            f"memray: heap peak {info['peak_memory']} bytes {span}; "
            f"{info['total_allocations']} allocations recorded; python allocator "
            f"{info['python_allocator']}"
            + (f"; {info['python_frames_only']} stacks with Python frames only (memray could "
               "not place their native frames)" if info["python_frames_only"] else "")
            + ("" if s.memray_mode != "arenas" else
               "; arenas mode: a stack's bytes are a multiple of 1 MiB arenas, not its "
               "objects (tool='memray' traces each object)")
        )
        return builder, memray.MEASURE, "moderate", memray.OVERHEAD_NOTE
    if tool == "retention":
        from autoopt.tools.profiling import retention

        _drop(out.with_name(out.name + ".tmp"), out.with_name(out.name + ".status"))
        if not out.exists():
            s.notes.append("the retention runner wrote no census")
            return ProfileBuilder(), retention.MEASURE, "moderate", retention.OVERHEAD_NOTE
        builder, info = await anyio.to_thread.run_sync(retention.parse, out, s.tree)
        s.peak, s.growth = info["peak"], info["growth"]
        s.notes.append(
            f"retention: {info.get('censuses', 0)} census(es), {info.get('census_total_s', 0)} "
            f"s in all; the stored one: {info.get('objects', 0)} objects, "
            f"{info.get('census_s', 0)} s. {retention.types_line(info)}"
        )
        return builder, retention.MEASURE, "moderate", retention.OVERHEAD_NOTE
    if tool == "tracemalloc":
        from autoopt.tools.profiling import tracemalloc_tool

        extra = [out.with_name(out.name + x) for x in (".tmp", ".status", ".json")]
        _drop(*extra[:2])  # a .tmp is a dump the teardown interrupted
        if extra[2].exists():
            s.raw_files.append(str(extra[2]))
        if not out.exists():
            s.notes.append("tracemalloc took no snapshot")
            return (
                ProfileBuilder(),
                tracemalloc_tool.MEASURE,
                "high",
                tracemalloc_tool.OVERHEAD_NOTE,
            )
        readings = tracemalloc_tool.readings(out)
        s.peak, s.growth = readings["peak"], readings["growth"]
        s.notes.append(readings["note"])
        builder = await anyio.to_thread.run_sync(tracemalloc_tool.parse, out, s.tree)
        return builder, tracemalloc_tool.MEASURE, "high", tracemalloc_tool.OVERHEAD_NOTE
    from autoopt.tools.profiling import heaptrack

    interpreted = out.with_name(f"{s.label}-heaptrack.gz")
    if interpreted.exists():
        interpreted.unlink()
    s.raw_files.append(str(interpreted))
    if out.exists():
        shell = heaptrack.interpret_shell(out, interpreted)
        argv = ["bash", "-c", f"set -o pipefail; {shell}"]
        logs = Path(s.deployment.log_dir) if s.deployment else s.folder
        _, done, _ = await run(
            argv, cwd=s.folder, env=base_env(), logs=logs, name="heaptrack-interpret", timeout=1800
        )
        s.step(
            shell,
            argv=argv,
            note="symbolize heaptrack's raw trace",
            elapsed_s=done.elapsed_s,
            exit_code=done.code,
        )
        s.step(
            f"heaptrack_print -f {interpreted} --print-peaks 1 "
            f"--flamegraph-cost-type peak -F {s.folder}/{s.label}-heaptrack-peak.folded",
            note="the peak by stack (the server replays the interpreted trace itself; "
            "heaptrack_print reports the same peak costs)",
        )
        out.unlink()
    if not interpreted.exists():
        s.notes.append(
            "heaptrack wrote no trace" + (
                f": {s.script.name} must run its program as `$AUTOOPT_PROFILE_WRAP prog ...`"
                if s.follows_tree and s.script else ""
            )
        )
        return ProfileBuilder(), heaptrack.MEASURE, "high", heaptrack.OVERHEAD_NOTE
    builder, info = await anyio.to_thread.run_sync(heaptrack.parse, interpreted, s.tree)
    s.peak, s.growth = info["peak"], info["growth"]  # type: ignore[assignment]
    s.notes.append(
        f"heaptrack: peak {info['peak_bytes']} bytes; {info['allocations']} allocations traced"
    )
    return builder, heaptrack.MEASURE, "high", heaptrack.OVERHEAD_NOTE


def _drop(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _follow(s: _Session, out: Path) -> Callable[[str], str]:
    """The script's command with Python shims first on its PATH (see follow.py)."""
    from autoopt.tools.profiling import follow

    shims = s.folder / f"{s.label}-shims"
    s.raw_files.append(str(shims))
    follow.install_shims(shims, s.python, out.with_suffix(""), s.memray_env,
                         memray.FLAGS[s.memray_mode])

    def wrap(command: str) -> str:
        cmd = parse_command(command)
        path = f"{shims}:{base_env()['PATH']}"
        return Command(env={**cmd.env, "PATH": path}, argv=cmd.argv).text()

    return wrap


async def _read_followed(
    s: _Session, out: Path
) -> tuple[ProfileBuilder, str, Overhead, str]:
    """Every capture of the followed processes, merged under one root frame per pid."""
    from autoopt.tools.profiling import follow

    files = follow.captures(out.with_suffix(""))
    s.raw_files.extend(str(f) for f in files)
    s.raw_files.extend(str(f.with_suffix(".cmd")) for f in files)
    parsed = []
    for capture in files:
        builder, info = await anyio.to_thread.run_sync(memray.parse, capture, s.tree)
        parsed.append((builder, {**info, "command_line": follow.command_of(capture)}))
    builder, lines = follow.merge(parsed)
    assert s.script is not None
    if not parsed:
        s.notes.append(
            f"the workload script {s.script.name} started no Python by name (python, "
            "python3, ...): nothing was profiled. A program started by an absolute path is "
            "not followed; name it by its command name, or profile it with tool='jemalloc'"
        )
    else:
        s.notes.append(
            f"followed the workload script {s.script.name}: {len(parsed)} Python "
            f"process(es) ran under memray ({'; '.join(lines)}). Each one's stacks are under "
            "a [pid] root frame; the total adds their peaks (an upper bound when they did "
            "not run at once). Programs started by an absolute path are not followed"
        )
    return builder, memray.MEASURE, "moderate", memray.OVERHEAD_NOTE


async def _memray_attach(s: _Session, dep: Deployment, out: Path | None) -> None:
    """`memray attach` (through gdb) into a running service; memray must be importable
    by that interpreter."""
    detect.require("gdb")
    assert dep.pid is not None and out is not None
    exe = _interpreter(dep.pid)
    argv = [exe, "-c", "import memray"]
    logs = Path(dep.log_dir)
    _, done, _ = await run(
        argv, cwd=logs, env=base_env(), logs=logs, name="memray-check", timeout=60
    )
    if done.code != 0:
        raise ProfilerUnavailable(
            f"memray cannot attach: the service's interpreter {exe} cannot import memray. "
            "Omit deployment_id so the service starts under memray (recommended: the whole "
            "workload is then recorded), or use tool='procfs' for /proc readings only"
        )
    argv = [sys.executable, "-m", "memray", "attach", *memray.FLAGS[s.memray_mode], str(dep.pid),
            "-o", str(out), "-f"]
    _, done, _ = await run(
        argv, cwd=logs, env=base_env(), logs=logs, name="memray-attach", timeout=120
    )
    s.step(
        shell_join(argv).replace(str(dep.pid), '"$PID"'),
        argv=argv,
        note="attach memray (gdb); only allocations after this point are seen",
        elapsed_s=done.elapsed_s,
        exit_code=done.code,
    )
    if done.code != 0:
        raise ProfilerUnavailable(
            f"memray attach failed (exit {done.code}); see {logs}/memray-attach.err"
        )
    s.notes.append(
        "memray attached to a running service: allocations made before the "
        "attach are not in the stacks"
    )


def _interpreter(pid: int) -> str:
    """The interpreter as the process was started (a venv's python, not its base binary)."""
    import shutil

    import psutil

    try:
        proc = psutil.Process(pid)
        first = proc.cmdline()[0]
        if not os.path.isabs(first):
            first = shutil.which(first, path=proc.environ().get("PATH")) or first
        return first
    except (psutil.Error, IndexError):
        return os.path.realpath(f"/proc/{pid}/exe")


async def _memray_detach(s: _Session, dep: Deployment) -> None:
    assert dep.pid is not None
    argv = [sys.executable, "-m", "memray", "detach", str(dep.pid)]
    logs = Path(dep.log_dir)
    _, done, _ = await run(
        argv, cwd=logs, env=base_env(), logs=logs, name="memray-detach", timeout=120
    )
    s.step(
        shell_join(argv).replace(str(dep.pid), '"$PID"'),
        argv=argv,
        note="stop memray tracking; the capture file is complete",
        elapsed_s=done.elapsed_s,
        exit_code=done.code,
    )


# -- cpu --------------------------------------------------------------------------------
async def profile_cpu(
    engine: Any,
    target: str,
    *,
    deployment_id: str | None = None,
    patch: str | None = None,
    base: str | None = None,
    workload: str | None = None,
    label: str | None = None,
    tool: CpuTool = "auto",
    backend: str = "local",
    rate_hz: int = 100,
    progress: Note | None = None,
) -> ProfileRun:
    """Where the CPU time goes under the workload: py-spy (Python) or perf (native)."""
    if deployment_id is not None and (patch is not None or base is not None):
        raise InvalidName(
            "give either deployment_id (profile what runs) or patch/base (build one)"
        )
    s = _Session(
        engine,
        target,
        "cpu",
        deployment_id=deployment_id,
        label=label,
        backend=backend,
        workload=workload,
        progress=progress,
    )
    from autoopt.tools.profiling import perf, pyspy

    error: str | None = None
    result: WorkloadResult | None = None
    memory: MemoryReadings | None = None
    sampler: Child | None = None
    try:
        await s.prepare(patch, base)
        chosen = tool if tool != "auto" else ("py-spy" if s.is_python() else "perf")
        perf_exe = detect.require("perf") if chosen == "perf" else ""
        out = s.raw("pyspy.txt" if chosen == "py-spy" else "perf.data")
        wrap: Callable[[str], str] | None = None
        if s.spec.kind == "batch":
            if chosen == "py-spy":
                wrap = lambda cmd: pyspy.wrap(cmd, out, rate_hz)  # noqa: E731
            else:
                wrap = lambda cmd: perf.wrap(perf_exe, cmd, out, rate_hz)  # noqa: E731
        spec = s.wrapped_spec(wrap)
        dep = await s.start(spec, patch)
        if spec.kind == "service":
            assert dep.pid is not None
            pid = _python_pid(dep.pid) if chosen == "py-spy" else dep.pid
            argv = (
                pyspy.attach_argv(pid, out, rate_hz)
                if chosen == "py-spy"
                else perf.attach_argv(perf_exe, pid, out, rate_hz)
            )
            sampler = spawn(argv, cwd=s.folder, env=base_env(), logs=Path(dep.log_dir), name=chosen)
            s.step(
                shell_join(argv).replace(f" {pid}", ' "$PID"') + " &\nSAMPLER=$!",
                argv=argv,
                note=f"start {chosen} on the service's pid",
            )
            await _wait_sampling(sampler, out, chosen)
        reset = await s.impl.reset_peak(dep) if spec.kind == "service" else False
        result, error = await s.workload(spec)
        if sampler is not None:
            await _stop_sampler(sampler)
            s.step(
                'kill -INT "$SAMPLER"; wait "$SAMPLER"',
                note=f"stop {chosen}; it writes its output on SIGINT",
            )
        memory, died = await s.collect(spec, result, reset)
        if died and error is None:
            error = _died_message(spec, result)
        await s.stop()
        if chosen == "py-spy":
            builder = (
                await anyio.to_thread.run_sync(pyspy.parse, out, s.tree)
                if out.exists()
                else ProfileBuilder()
            )
            measure, note = pyspy.MEASURE, pyspy.OVERHEAD_NOTE
        else:
            builder = await _perf_script(s, perf_exe, out) if out.exists() else ProfileBuilder()
            measure, note = perf.MEASURE, perf.OVERHEAD_NOTE
        if not out.exists():
            s.notes.append(f"{chosen} wrote no output")
        return await s.finish(
            tool=chosen,
            measure=measure,
            unit="samples",
            builder=builder,
            overhead="low",
            overhead_note=note,
            memory=memory,
            result=result,
            error=error,
            rate=float(rate_hz),
        )
    finally:
        if sampler is not None:
            await sampler.stop(grace=2.0)
        await s.cleanup()


def _python_pid(pid: int) -> int:
    """The Python process itself: the pid when it is Python, else its Python descendant."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if detect.is_python_command(os.path.basename(proc.exe())):
            return pid
        for child in proc.children(recursive=True):
            if detect.is_python_command(os.path.basename(child.exe())):
                return child.pid
    except psutil.Error:
        pass
    return pid


async def _wait_sampling(sampler: Child, out: Path, tool: str) -> None:
    """Give the sampler a moment to attach; fail early when it cannot."""
    await anyio.sleep(0.5 if tool == "py-spy" else 1.0)
    done = sampler.poll()
    if done is not None:
        raise ProfilerUnavailable(f"{tool} stopped at once (exit {done.code}): {sampler.tail(10)}")


async def _stop_sampler(sampler: Child) -> None:
    if sampler.poll() is None:
        try:
            os.kill(sampler.pid, signal.SIGINT)
        except ProcessLookupError:
            return
    if await sampler.wait(STOP_GRACE_S) is None:
        await sampler.stop(grace=2.0)


async def _perf_script(s: _Session, perf_exe: str, data: Path) -> ProfileBuilder:
    from autoopt.tools.profiling import perf

    logs = Path(s.deployment.log_dir) if s.deployment else s.folder
    argv = perf.script_argv(perf_exe, data)
    child, done, _ = await run(
        argv, cwd=s.folder, env=base_env(), logs=logs, name="perf-script", timeout=300
    )
    if done.code != 0:  # source lines (addr2line) too slow or failing: symbols only
        s.notes.append("perf script could not give source lines (exit or timeout): the "
                       "frames have no files, so the scope view is missing")
        argv = perf.script_argv(perf_exe, data, srcline=False)
        child, done, _ = await run(
            argv, cwd=s.folder, env=base_env(), logs=logs, name="perf-script", timeout=1800
        )
    s.step(
        shell_join(argv) + f" > {s.folder}/{s.label}-perf-script.txt",
        argv=argv,
        note="decode the samples",
        elapsed_s=done.elapsed_s,
        exit_code=done.code,
    )
    text = child.stdout.read_text(errors="replace")
    decoded = s.folder / f"{s.label}-perf-script.txt"
    decoded.write_text(text)
    s.raw_files.append(str(decoded))
    return perf.parse_script(text, s.tree)


# -- diff -------------------------------------------------------------------------------
def diff_profiles(
    engine: Any, target: str, env: str, before: str, after: str, n: int = 20
) -> views.ProfileDiff:
    """Two stored profiles of a target, compared stack by stack (signed values)."""
    engine.spec(target)
    return views.diff(
        store.load(engine.workspace, target, env, before),
        store.load(engine.workspace, target, env, after),
        n,
    )
