"""The engine: targets, sources, builds and deployments of one workspace.

MCP-agnostic; the server maps each tool onto one method here. Builds are stored under
`.autoopt/builds/<id>/` (build.json, tree/, logs/); live deployments are listed in
`.autoopt/deployments.json` (tools/registry.py) with their owners, so any server on the
workspace can use them and a starting server tears down only what dead servers left.
Long work runs as jobs (tools/jobs.py) that outlive the call that started them.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import uuid4

import anyio

from autoopt.tools import buildcache, contain, network
from autoopt.tools.abrun import (
    ACTIVE,
    ABRun,
    ABRunner,
    Order,
    RunProgress,
    analyse,
    check_duet,
    check_runs,
    load_run,
    mark_crashed,
    new_run,
    runs_dir,
)
from autoopt.tools.backends.base import Backend, Build, Deployment, Progress, WorkloadResult
from autoopt.tools.errors import BackendUnavailable, InvalidName, NotFound, RuleViolation
from autoopt.tools.jobs import JobRecord, Jobs, JobStatus, Owner
from autoopt.tools.journal import Journal, Step
from autoopt.tools.process import process_started
from autoopt.tools.prune import prune_runs
from autoopt.tools.record import ExperimentRecord, record
from autoopt.tools.registry import KEEP_S, Registry
from autoopt.tools.source import Source
from autoopt.tools.state import load_state, locked, save_model, write_atomic
from autoopt.tools.status import ExperimentStatus, experiment_status
from autoopt.tools.target_lock import target_lock
from autoopt.tools.targets import Direction, TargetSpec, load_target
from autoopt.tools.workload import named_files, workload_argv, workload_script
from autoopt.tools.workspace import Workspace, check_name

BACKENDS = ("local", "docker", "kubernetes")
log = logging.getLogger("autoopt")


def make_backend(name: str, workspace: Workspace) -> Backend:
    if name == "local":
        from autoopt.tools.backends.local import LocalBackend

        return LocalBackend(workspace)
    if name == "docker":
        from autoopt.tools.backends.docker import DockerBackend

        return DockerBackend(workspace)
    if name == "kubernetes":
        from autoopt.tools.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(workspace)
    raise InvalidName(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")


class Engine:
    """One per server: the backends, the jobs it runs, the deployments it started."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._backends: dict[str, Backend] = {}
        self.deployments: dict[str, Deployment] = {}  # started by this server
        self.jobs = Jobs(workspace.state_dir)
        self.registry = Registry(workspace.state_dir)
        self._leases: dict[str, buildcache.Lease] = {}  # build id -> the build-cache slot it holds
        self.stopped = False  # set when shutdown has finished

    # -- lookups --------------------------------------------------------------------
    def spec(self, target: str) -> TargetSpec:
        return load_target(self.workspace, target)

    def source(self, spec: TargetSpec) -> Source:
        return Source(self.workspace, spec)

    def backend(self, name: str, *, check: bool = True) -> Backend:
        if name not in self._backends:
            self._backends[name] = make_backend(name, self.workspace)
        backend = self._backends[name]
        if check and (reason := backend.unavailable_reason()):
            raise BackendUnavailable(f"backend {name} is unavailable: {reason}")
        return backend

    def readiness(self, spec: TargetSpec, backend: str) -> str | None:
        """None when `backend` can run this target, else why not (engine or target files)."""
        if backend == "kubernetes" and spec.kind == "batch":  # true whatever the cluster's state
            return "the kubernetes backend runs services only (batch: use local or docker)"
        try:
            reason = self.backend(backend, check=False).unavailable_reason()
        except Exception as exc:  # a backend that cannot even start says why
            reason = f"cannot start the {backend} backend: {type(exc).__name__}: {exc}"
        if reason:
            return reason
        if backend == "local":
            if spec.kind == "service" and not spec.local.run:
                return "target.md's '## Local' has no 'run:' command for the service"
            if spec.kind == "batch" and not (spec.local.workload or spec.workload.script):
                return "target.md names no workload ('## Local' workload: or '## Workload' script:)"
            return None
        dockerfile = spec.build.dockerfile
        if not dockerfile or not (self.workspace.root / dockerfile).is_file():
            return (
                f"no Dockerfile for {spec.name}: set '## Build' dockerfile: to a file in the "
                "workspace"
            )
        if blocked := network.first_unreachable(spec.build.fetches):
            return (
                f"the Dockerfile downloads from {', '.join(spec.build.fetches)} while it builds "
                f"and this machine cannot reach {blocked}: build on a machine with network"
            )
        if backend == "kubernetes":
            manifest = spec.kubernetes.manifest or f"targets/{spec.name}/k8s.yaml"
            if not (self.workspace.root / manifest).is_file():
                return f"no Kubernetes manifest {manifest} ('## Kubernetes' manifest:)"
        return None

    def build_dir(self, build_id: str) -> Path:
        check_name(build_id, "build id")
        return self.workspace.state_dir / "builds" / build_id

    def get_build(self, build_id: str) -> Build:
        build = load_state(self.build_dir(build_id) / "build.json", Build.model_validate, None)
        if build is None:
            raise NotFound(f"unknown build {build_id!r}: call build first")
        if build.building:
            raise NotFound(f"build {build_id!r} is still building: wait for its build call")
        if build.gone or not Path(build.tree).is_dir():
            raise NotFound(
                f"build {build_id!r} is gone: {build.gone or 'its tree was removed'}; "
                "call build again"
            )
        return build

    def get_deployment(self, deployment_id: str) -> Deployment:
        """A live deployment started by this or any other server on the workspace."""
        check_name(deployment_id, "deployment id")
        if deployment_id in self.deployments:
            return self.deployments[deployment_id]
        entry = self.registry.entries().get(deployment_id)
        if entry is not None:
            if _alive(entry.deployment):
                return entry.deployment
            self.registry.remove(deployment_id, "its process had exited")
        gone = self.registry.gone(deployment_id)
        if gone is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gone.when))
            raise NotFound(
                f"deployment {deployment_id!r} is gone ({gone.reason}, {when}); deploy its "
                "build again"
            )
        raise NotFound(f"unknown deployment {deployment_id!r}: deploy a build first")

    def _drop_tree(self, target: str, build_id: str, tree: Path, slot: bool = False) -> None:
        """A build's tree: a build-cache slot is released and kept; any other removed."""
        lease = self._leases.pop(build_id, None)
        if lease is not None or slot:
            if lease is not None:
                lease.release()
            return
        try:
            self.source(self.spec(target)).remove_worktree(tree)
        except Exception:  # the target is gone or broken: still remove the tree
            shutil.rmtree(tree, ignore_errors=True)

    def _evict_slot_users(self, tree: Path, build_id: str) -> None:
        """Builds of dead servers left in the slot now re-used are gone (their tree moves)."""
        for path in (self.workspace.state_dir / "builds").glob("*/build.json"):
            old = load_state(path, Build.model_validate, None)
            if old is not None and old.id != build_id and not old.gone and old.tree == str(tree):
                old.gone = f"its build-cache slot was re-used by build {build_id}"
                save_model(path, old)

    # -- build / deploy / workload / teardown ----------------------------------------
    async def build(
        self,
        target: str,
        *,
        patch: str | None = None,
        base: str | None = None,
        backend: str = "local",
        allow_constant_tuning: bool = False,
        progress: Progress | None = None,
        build_id: str | None = None,
        kept: bool = False,
    ) -> Build:
        """Check out base (+ patch) in a fresh worktree and build it. A kept build (the
        build tool's) outlives this server until it has been idle for KEEP_S seconds."""
        spec = self.spec(target)
        impl = self.backend(backend)
        source = self.source(spec)
        commit = source.resolve(base)
        info = (
            source.check_patch(patch, allow_constants=allow_constant_tuning, base=commit)
            if patch
            else None
        )
        build_id = build_id or new_build_id()
        folder = self.build_dir(build_id)
        folder.mkdir(parents=True)
        journal = Journal()
        lease = None
        if spec.build.incremental and backend == "local":
            lease = buildcache.acquire(
                self.workspace.state_dir, spec.name, commit, info.sha256 if info else None
            )
            if lease is None and progress:
                await progress(
                    f"incremental: all {buildcache.SLOTS} build-cache slots of {spec.name} are "
                    "held; building in a fresh tree (a full build)"
                )
        tree = lease.tree if lease else folder / "tree"
        incremental = lease.describe() if lease else None
        build = Build(
            id=build_id,
            target=spec.name,
            backend=backend,
            base=commit,
            commit=commit,
            patch_sha256=info.sha256 if info else None,
            patch_files=info.files if info else [],
            allow_constant_tuning=allow_constant_tuning,
            tree=str(tree),
            home=str(folder),
            incremental=incremental,
            journal=journal,
            owner=Owner.me(),
            kept=kept,
            building=True,
        )
        save_model(folder / "build.json", build)  # before any work: recovery finds it
        try:
            if lease is not None:
                self._leases[build_id] = lease
                self._evict_slot_users(lease.tree, build_id)
                note = (f"the server built incrementally in build-cache {incremental}; "
                        "this replay is a cold build in a fresh tree")
                last = lease.last
                same = (
                    last.commit
                    if last and info and (last.base, last.patch_sha256) == (commit, info.sha256)
                    else None
                )
                build.commit = source.slot_worktree(
                    commit, tree, patch, info.files if info else [], folder / "patch.diff",
                    journal, note, same,
                )
                lease.save(build.commit, commit, info.sha256 if info else None)
            else:
                build.commit = source.worktree(commit, tree, patch, journal)
            if patch:
                (folder / "patch.diff").write_text(patch)
            if progress and incremental:
                await progress(f"incremental: {incremental}")
            build = await impl.build(spec, build, progress)
        except BaseException:
            self._drop_tree(spec.name, build_id, tree)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        build.building = False
        save_model(folder / "build.json", build)
        return build

    async def deploy(self, build_id: str, *, kept: bool = False) -> Deployment:
        """Start a build. A kept deployment (the deploy tool's) outlives this server until
        teardown or KEEP_S seconds without use; any other stops with the server."""
        build = self.get_build(build_id)
        spec = self.spec(build.target)
        impl = self.backend(build.backend)
        deployment = await impl.deploy(spec, build)
        if kept and deployment.scope:  # no other workspace's server sweeps it
            contain.keep(deployment.scope)
        self.deployments[deployment.id] = deployment
        self.registry.add(deployment, kept=kept)
        if kept:
            build.used = time.time()
            save_model(self.build_dir(build.id) / "build.json", build)
        return deployment

    async def run_workload(
        self, deployment_id: str, script: str | None = None, *, name: str = "workload"
    ) -> WorkloadResult:
        """One workload run: its own metrics plus those run_ab measures (peak_rss_mb,
        cpu_s, wall_s), and its other output lines."""
        deployment = self.get_deployment(deployment_id)
        spec = self.spec(deployment.target)
        path = workload_script(self.workspace, spec, script)
        cmd, shell = workload_argv(spec, path, deployment, self.workspace.target_dir(spec.name))
        impl = self.backend(deployment.backend)
        self.registry.touch(deployment_id)
        await impl.reset_peak(deployment)
        result = await impl.run_workload(
            spec, deployment, cmd.argv, shell, name=name, env=cmd.env
        )
        collected = await impl.collect(spec, deployment, result)
        measured = dict(collected.get("metrics") or {})  # type: ignore[call-overload]
        result.metrics = {**result.metrics, **measured}  # what run_ab samples, the same way
        result.metrics.setdefault("wall_s", round(result.duration_s, 3))
        return result

    async def teardown(self, deployment_id: str, reason: str = "torn down") -> Deployment:
        deployment = self.get_deployment(deployment_id)
        await self.backend(deployment.backend, check=False).teardown(deployment)
        self.deployments.pop(deployment_id, None)
        self.registry.remove(deployment_id, reason)
        return deployment

    async def discard_build(self, build_id: str, reason: str = "discarded") -> None:
        """Remove a build's tree, logs and image (container backends). A kept build (its id
        was handed to a user) leaves its build.json to say why; any other leaves nothing."""
        build = load_state(self.build_dir(build_id) / "build.json", Build.model_validate, None)
        if build is None:
            return
        await self.backend(build.backend, check=False).discard(build)
        self._drop_tree(build.target, build.id, Path(build.tree), bool(build.incremental))
        folder = self.build_dir(build_id)
        shutil.rmtree(folder, ignore_errors=True)
        if build.kept:
            build.gone = reason
            save_model(folder / "build.json", build)

    async def remove_build(self, build_id: str) -> list[str]:
        """teardown(build_id): stop the build's deployments, then discard it; their ids."""
        self.get_build(build_id)
        stopped = []
        for entry in self.registry.entries().values():
            if entry.deployment.build_id == build_id:
                await self.teardown(entry.deployment.id, "its build was removed")
                stopped.append(entry.deployment.id)
        await self.discard_build(build_id, "removed with teardown")
        return stopped

    async def shutdown(self) -> None:
        """Tear down what this server started and does not keep (kept builds and
        deployments stay for later servers until they expire)."""
        with anyio.CancelScope(shield=True):
            for entry in self.registry.mine():
                await self.teardown(entry.deployment.id, "its server stopped")
        self.stopped = True

    # -- A/B runs --------------------------------------------------------------------
    def prepare_ab(
        self,
        target: str,
        *,
        patch: str | None = None,
        base: str | None = None,
        runs: int = 5,
        warmup: int = 1,
        backend: str = "local",
        order: Order = "abba",
        seed: int | None = None,
        min_effect: float | None = None,
        sequential: bool = False,
        metric: str | None = None,
        direction: Direction | None = None,
        workload: str | None = None,
        allow_constant_tuning: bool = False,
    ) -> ABRun:
        """Check the request and persist a new run (fast: bad input fails here)."""
        check_runs(runs)
        check_duet(order, backend)
        spec = self.spec(target)
        self.backend(backend)
        script = workload_script(self.workspace, spec, workload)
        source = self.source(spec)
        base_commit = source.resolve(base)
        if patch:
            source.check_patch(patch, allow_constants=allow_constant_tuning, base=base_commit)
        run = new_run(
            spec,
            backend=backend,
            base=base_commit,
            patch=patch,
            runs=runs,
            warmup=warmup,
            order=order,
            seed=seed,
            sequential=sequential,
            metric=metric,
            direction=direction,
            min_effect=min_effect,
            workload=workload,
            allow_constant_tuning=allow_constant_tuning,
        )
        run.workload_files = _workload_files(self.workspace, spec, script)
        folder = runs_dir(self.workspace.state_dir) / run.id
        folder.mkdir(parents=True)
        save_model(folder / "run.json", run)
        prune_runs(self.workspace.state_dir, spec.name)
        return run

    def _flag_outputs(self, run: ABRun) -> None:
        """A run that found the workload's output nondeterministic flags the target (list_targets
        says so) until a later run finds it deterministic."""
        flag = self.workspace.state_dir / "flags" / f"{run.target}.json"
        if run.outputs is None or run.outputs.status in ("unchecked", "changed"):
            return
        if run.outputs.status == "same":
            flag.unlink(missing_ok=True)
            return
        flag.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(flag, json.dumps({"run_id": run.id, "reason": run.outputs.summary()}))

    def flag(self, target: str) -> str | None:
        """Why the target is flagged (its workload's output is not deterministic), or None."""
        path = self.workspace.state_dir / "flags" / f"{check_name(target)}.json"
        return load_state(path, lambda d: f"{d['reason']} (run {d['run_id']})", None)

    async def _run_tests(
        self,
        spec: TargetSpec,
        run: ABRun,
        builds: dict[str, Build],
        folder: Path,
        note: Callable[[str], Awaitable[None]],
    ) -> None:
        """The target's tests once per arm build, before (and outside) the timed runs."""
        from autoopt.tools.correctness import run_tests

        for arm, b in builds.items():
            await note(f"running the tests on {arm}: {spec.correctness.tests}")
            result = await run_tests(
                spec, arm, Path(b.tree), self.workspace.target_dir(spec.name), folder / "tests"
            )
            run.tests[arm] = result
            run.journal.add(
                Step(
                    phase="build",
                    shell=f'(cd "$TREE" && {result.command})',
                    argv=[],
                    arm=arm,
                    elapsed_s=result.duration_s,
                    exit_code=result.exit_code,
                    note="the target's tests (## Correctness), outside the timed runs",
                )
            )
            save_model(folder / "run.json", run)

    async def execute_ab(self, run: ABRun, progress: RunProgress | None = None) -> ABRun:
        """Build both arms from one base commit, run them interleaved, decide, persist.
        One run per target at a time: a second waits for the first and says so."""
        spec = self.spec(run.target)
        impl = self.backend(run.backend)
        script = workload_script(self.workspace, spec, run.workload)
        folder = runs_dir(self.workspace.state_dir) / run.id

        async def note(message: str) -> None:
            if progress:
                await progress(0, len(run.schedule), message)

        async def waiting(who: str) -> None:
            await note(f"waiting: another A/B run of {spec.name} is running ({who}); "
                       "runs of one target take turns so they do not measure each other")

        builds: dict[str, Build] = {}
        try:
            async with target_lock(self.workspace.state_dir, spec.name, run.id, waiting):
                for arm, arm_patch in (("A", None), ("B", run.patch)):
                    builds[arm] = await self.build(
                        run.target,
                        base=run.base,
                        patch=arm_patch,
                        backend=run.backend,
                        progress=note,
                        allow_constant_tuning=run.allow_constant_tuning,
                    )
                build_b = builds["B"]
                run.patch_sha256, run.patch_files = build_b.patch_sha256, build_b.patch_files
                for arm, b in builds.items():
                    run.builds[arm], run.commits[arm] = b.id, b.commit
                    run.journal.extend(b.journal, arm=arm)
                if spec.correctness.tests:
                    await self._run_tests(spec, run, builds, folder, note)
                runner = ABRunner(
                    spec, impl, run, folder, script, self._track,
                    self.workspace.target_dir(spec.name),
                )
                if _tests_broke(run):  # B fails what A passes: no timed run can save it
                    run.report = analyse(run, spec, look=None)
                    run.status, run.finished = "done", time.time()
                    save_model(folder / "run.json", run)
                else:
                    await runner.execute(builds, progress)
            self._flag_outputs(run)
            if run.report is not None:
                from autoopt.tools.plot import plot_run

                run.plot = str(plot_run(run, folder / "plot.png"))
                save_model(folder / "run.json", run)
        except BaseException as exc:
            if run.status in ACTIVE:
                cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
                run.status, run.error = run.stop_reason or (
                    ("interrupted", "stopped before any run") if cancelled else ("failed", str(exc))
                )
            with anyio.CancelScope(shield=True):
                save_model(folder / "run.json", run)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                for b in builds.values():
                    await impl.discard(b)
                    self._drop_tree(b.target, b.id, Path(b.tree), bool(b.incremental))
                    shutil.rmtree(self.build_dir(b.id), ignore_errors=True)
        return run

    async def run_ab(self, target: str, *, progress: RunProgress | None = None,
                     **options: object) -> ABRun:
        """prepare_ab then execute_ab in the caller's task (no job)."""
        run = self.prepare_ab(target, **options)  # type: ignore[arg-type]
        return await self.execute_ab(run, progress)

    def start_ab(self, run: ABRun) -> None:
        """Run a prepared A/B run as a job of this server; its id is the run id."""

        def on_stop(status: JobStatus, message: str) -> None:
            run.stop_reason = (status, message)

        self.jobs.start(
            run.id,
            "run_ab",
            run.target,
            lambda report: self.execute_ab(run, report),
            render=lambda _: None,  # the answer is rebuilt from run.json
            on_stop=on_stop,
        )

    def record(self, run_id: str, **kwargs: object) -> ExperimentRecord:
        """record_experiment: write the run's record (see tools/record.py)."""
        run = self.get_run(run_id)
        spec = self.spec(run.target)
        # one recorder at a time per target, across servers: a run is recorded once
        with locked(self.workspace.state_dir / "locks" / f"record-{run.target}.lock"):
            return record(self.workspace, spec, self.source(spec), run, **kwargs)  # type: ignore[arg-type]

    def status(self, target: str, env: str) -> ExperimentStatus:
        spec = self.spec(target)
        source = self.source(spec)
        marker = source.repo / ".git" / "autoopt-frontier-branch"
        branch = marker.read_text().strip() if marker.exists() else spec.source.branch
        live = sorted(
            e.deployment.id
            for e in self.registry.entries().values()
            if e.deployment.target == target
        )
        return experiment_status(self.workspace, target, env, source.frontier(), branch, live)

    def get_run(self, run_id: str) -> ABRun:
        """A persisted run; one left running by a server that ended is marked so."""
        run = load_run(self.workspace.state_dir, run_id)
        record = self.jobs.get(run_id)
        if run.status in ACTIVE and record is not None and record.finished:
            run.status = "interrupted" if record.status == "interrupted" else "crashed"
            run.error = record.error
            save_model(runs_dir(self.workspace.state_dir) / run_id / "run.json", run)
        return run

    async def cancel(self, job_id: str, wait_s: float = 30) -> JobRecord:
        """Stop a job of any server on the workspace; its record once it has stopped."""
        record = self.jobs.require(job_id, "run")
        if record.finished:
            raise RuleViolation(
                f"{record.kind} {job_id} had already finished (status {record.status}); "
                "nothing to cancel"
            )
        message = "cancelled with cancel_run; what was measured so far is kept"
        if not self.jobs.stop(job_id, "cancelled", message):
            self.jobs.request_stop(job_id, message)
        return await self.jobs.wait(job_id, wait_s)

    def _track(self, deployment: object, alive: bool) -> None:
        assert isinstance(deployment, Deployment)
        if alive:
            self.deployments[deployment.id] = deployment
            self.registry.add(deployment, kept=False)
        else:
            self.deployments.pop(deployment.id, None)
            self.registry.remove(deployment.id, "its run finished with it")

    # -- crash recovery ---------------------------------------------------------------
    async def recover(self) -> list[str]:
        """Tear down what dead servers left and kept deployments that expired; discard
        their builds. Never touches a live server's work. The ids torn down."""
        cleaned = []
        for entry in self.registry.leftovers():
            deployment = entry.deployment
            owner = f"pid {entry.owner.pid}" if entry.owner else "an older server"
            reason = (f"idle for more than {KEEP_S:g} s" if entry.kept
                      else f"its server ({owner}) ended without tearing it down")
            try:
                await self.backend(deployment.backend, check=False).teardown(deployment)
            except Exception:  # a backend that cannot be reached now; keep the entry
                continue
            self.registry.remove(deployment.id, reason)
            cleaned.append(deployment.id)
        entries = self.registry.entries().values()
        keep = {e.deployment.scope for e in entries if e.deployment.scope}
        for swept in await anyio.to_thread.run_sync(contain.recover, keep):
            shown = "; ".join(f"pid {p} {c}" for p, c in sorted(swept.killed.items())[:5])
            log.warning("killed %d process(es) left by a dead server (scope %s): %s",
                        len(swept.killed), swept.scope, shown)
        live = {e.deployment.build_id for e in entries}
        for path in sorted((self.workspace.state_dir / "builds").glob("*/build.json")):
            build = load_state(path, Build.model_validate, None)
            if build is None or build.gone or build.id in live:
                continue
            idle = build.kept and time.time() - max(build.used, build.created) > KEEP_S
            dead = build.owner is None or not build.owner.alive()
            orphan = dead and (not build.kept or build.building)
            if idle or orphan:
                reason = f"idle for more than {KEEP_S:g} s" if idle else "its server ended"
                try:
                    await self.discard_build(build.id, reason)
                except Exception:  # a server starts even when a leftover resists; next time
                    log.warning("could not discard leftover build %s", build.id, exc_info=True)
        mark_crashed(self.workspace.state_dir)
        return cleaned


def new_build_id() -> str:
    return f"b-{uuid4().hex[:10]}"


def _alive(deployment: Deployment) -> bool:
    """Whether a deployment another server started is still there (local: its process)."""
    if deployment.backend != "local" or deployment.pid is None:
        return deployment.tree is None or Path(deployment.tree).is_dir()
    return process_started(deployment.pid) == deployment.pid_start


def _tests_broke(run: ABRun) -> bool:
    a, b = run.tests.get("A"), run.tests.get("B")
    return a is not None and b is not None and a.passed and not b.passed


def _workload_files(workspace: Workspace, spec: TargetSpec, script: Path | None) -> list[str]:
    """The target's workload files (paths relative to the workspace), copied into records."""
    folder = workspace.targets_dir / spec.name
    files = sorted(p for p in folder.glob("workload*") if p.is_file())
    for named in [*([script] if script else []), *named_files(spec, folder)]:
        if named not in files:
            files.append(named)
    return [str(p.relative_to(workspace.root)) for p in files]
