"""The engine: targets, sources, builds and deployments of one workspace.

MCP-agnostic; the server maps each tool onto one method here. Builds are stored under
`.autoopt/builds/<id>/` (build.json, tree/, logs/); live deployments are listed in
`.autoopt/deployments.json` so a restarted server can tear down what a crashed one left.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from uuid import uuid4

import anyio

from autoopt.tools.abrun import (
    ABRun,
    ABRunner,
    Order,
    RunProgress,
    check_runs,
    load_run,
    mark_crashed,
    new_run,
    runs_dir,
)
from autoopt.tools.backends.base import Backend, Build, Deployment, Progress, WorkloadResult
from autoopt.tools.errors import BackendUnavailable, InvalidName, NotFound
from autoopt.tools.journal import Journal
from autoopt.tools.record import ExperimentRecord, record
from autoopt.tools.source import Source
from autoopt.tools.state import load_json, locked, save_model, write_atomic
from autoopt.tools.status import ExperimentStatus, experiment_status
from autoopt.tools.targets import Direction, TargetSpec, load_target
from autoopt.tools.workload import workload_argv, workload_script
from autoopt.tools.workspace import Workspace, check_name

BACKENDS = ("local", "docker", "kubernetes")


def make_backend(name: str, workspace: Workspace) -> Backend:
    if name == "local":
        from autoopt.tools.backends.local import LocalBackend

        return LocalBackend()
    if name == "docker":
        from autoopt.tools.backends.docker import DockerBackend

        return DockerBackend(workspace)
    if name == "kubernetes":
        from autoopt.tools.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(workspace)
    raise InvalidName(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")


class Engine:
    """One per server: owns the backends and the live deployments."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._backends: dict[str, Backend] = {}
        self.deployments: dict[str, Deployment] = {}
        self.session_builds: list[str] = []  # made by the build tool; discarded at shutdown

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
        if backend == "kubernetes":
            if spec.kind == "batch":
                return "the kubernetes backend runs services only (batch: use local or docker)"
            manifest = spec.kubernetes.manifest or f"targets/{spec.name}/k8s.yaml"
            if not (self.workspace.root / manifest).is_file():
                return f"no Kubernetes manifest {manifest} ('## Kubernetes' manifest:)"
        return None

    def build_dir(self, build_id: str) -> Path:
        check_name(build_id, "build id")
        return self.workspace.state_dir / "builds" / build_id

    def get_build(self, build_id: str) -> Build:
        data = load_json(self.build_dir(build_id) / "build.json")
        if data is None:
            raise NotFound(f"unknown build {build_id!r}: call build first")
        return Build.model_validate(data)

    def get_deployment(self, deployment_id: str) -> Deployment:
        check_name(deployment_id, "deployment id")
        if deployment_id not in self.deployments:
            raise NotFound(
                f"unknown deployment {deployment_id!r} (already torn down, or from another "
                "server); deploy a build first"
            )
        return self.deployments[deployment_id]

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
    ) -> Build:
        """Check out base (+ patch) in a fresh worktree and build it."""
        spec = self.spec(target)
        impl = self.backend(backend)
        source = self.source(spec)
        commit = source.resolve(base)
        info = source.check_patch(patch, allow_constants=allow_constant_tuning) if patch else None
        build_id = f"b-{uuid4().hex[:10]}"
        folder = self.build_dir(build_id)
        folder.mkdir(parents=True)
        journal = Journal()
        try:
            tree_commit = source.worktree(commit, folder / "tree", patch, journal)
            build = Build(
                id=build_id,
                target=spec.name,
                backend=backend,
                base=commit,
                commit=tree_commit,
                patch_sha256=info.sha256 if info else None,
                patch_files=info.files if info else [],
                allow_constant_tuning=allow_constant_tuning,
                tree=str(folder / "tree"),
                journal=journal,
            )
            if patch:
                (folder / "patch.diff").write_text(patch)
            build = await impl.build(spec, build, progress)
        except BaseException:
            source.remove_worktree(folder / "tree")
            shutil.rmtree(folder, ignore_errors=True)
            raise
        save_model(folder / "build.json", build)
        return build

    async def deploy(self, build_id: str) -> Deployment:
        build = self.get_build(build_id)
        spec = self.spec(build.target)
        impl = self.backend(build.backend)
        deployment = await impl.deploy(spec, build)
        self.deployments[deployment.id] = deployment
        self._save_deployments()
        return deployment

    async def run_workload(
        self, deployment_id: str, script: str | None = None, *, name: str = "workload"
    ) -> WorkloadResult:
        deployment = self.get_deployment(deployment_id)
        spec = self.spec(deployment.target)
        path = workload_script(self.workspace, spec, script)
        argv, shell = workload_argv(spec, path, deployment.endpoint)
        impl = self.backend(deployment.backend)
        return await impl.run_workload(spec, deployment, argv, shell, name=name)

    async def teardown(self, deployment_id: str) -> Deployment:
        deployment = self.get_deployment(deployment_id)
        await self.backend(deployment.backend, check=False).teardown(deployment)
        self.deployments.pop(deployment_id, None)
        self._save_deployments()
        return deployment

    async def discard_build(self, build_id: str) -> None:
        """Remove a build: its tree, its image (container backends) and its record."""
        build = self.get_build(build_id)
        await self.backend(build.backend, check=False).discard(build)
        self.source(self.spec(build.target)).remove_worktree(Path(build.tree))
        shutil.rmtree(self.build_dir(build_id), ignore_errors=True)

    async def shutdown(self) -> None:
        """Tear down every live deployment and discard the builds made with `build`."""
        with anyio.CancelScope(shield=True):
            for dep_id in list(self.deployments):
                await self.teardown(dep_id)
            for build_id in self.session_builds:
                await self.discard_build(build_id)
            self.session_builds.clear()

    # -- A/B runs --------------------------------------------------------------------
    async def run_ab(
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
        progress: RunProgress | None = None,
    ) -> ABRun:
        """Build both arms from one base commit, run them interleaved, decide, persist."""
        check_runs(runs)
        spec = self.spec(target)
        impl = self.backend(backend)
        script = workload_script(self.workspace, spec, workload)
        base_commit = self.source(spec).resolve(base)
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

        async def note(message: str) -> None:
            if progress:
                await progress(0, len(run.schedule), message)

        builds: dict[str, Build] = {}
        try:
            builds["A"] = await self.build(target, base=base_commit, backend=backend, progress=note)
            builds["B"] = await self.build(
                target,
                base=base_commit,
                patch=patch,
                backend=backend,
                progress=note,
                allow_constant_tuning=allow_constant_tuning,
            )
            build_b = builds["B"]
            run.patch_sha256, run.patch_files = build_b.patch_sha256, build_b.patch_files
            for arm, b in builds.items():
                run.builds[arm], run.commits[arm] = b.id, b.commit
                run.journal.extend(b.journal, arm=arm)
            runner = ABRunner(spec, impl, run, folder, script, self._track)
            await runner.execute(builds, progress)
            if run.report is not None:
                from autoopt.tools.plot import plot_run

                run.plot = str(plot_run(run, folder / "plot.png"))
                save_model(folder / "run.json", run)
        except BaseException as exc:
            if run.status == "running":
                run.status = "failed"
                run.error = str(exc)
            with anyio.CancelScope(shield=True):
                save_model(folder / "run.json", run)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                for b in builds.values():
                    await impl.discard(b)
                    self.source(spec).remove_worktree(Path(b.tree))
        return run

    def record(self, run_id: str, **kwargs: object) -> ExperimentRecord:
        """record_experiment: write the run's record (see tools/record.py)."""
        run = self.get_run(run_id)
        spec = self.spec(run.target)
        return record(self.workspace, spec, self.source(spec), run, **kwargs)  # type: ignore[arg-type]

    def status(self, target: str, env: str) -> ExperimentStatus:
        spec = self.spec(target)
        source = self.source(spec)
        marker = source.repo / ".git" / "autoopt-frontier-branch"
        branch = marker.read_text().strip() if marker.exists() else spec.source.branch
        live = [d.id for d in self.deployments.values() if d.target == target]
        return experiment_status(self.workspace, target, env, source.frontier(), branch, live)

    def get_run(self, run_id: str) -> ABRun:
        return load_run(self.workspace.state_dir, run_id)

    def _track(self, deployment: object, alive: bool) -> None:
        assert isinstance(deployment, Deployment)
        if alive:
            self.deployments[deployment.id] = deployment
        else:
            self.deployments.pop(deployment.id, None)
        self._save_deployments()

    # -- crash recovery ---------------------------------------------------------------
    @property
    def _deployments_file(self) -> Path:
        return self.workspace.state_dir / "deployments.json"

    def _save_deployments(self) -> None:
        with locked(self.workspace.state_dir / "deployments.lock"):
            data = {
                d.id: d.model_dump(mode="json", exclude={"journal"})
                for d in self.deployments.values()
            }
            write_atomic(self._deployments_file, json.dumps(data, indent=1))

    async def recover(self) -> list[str]:
        """Tear down deployments a crashed server left behind; their ids."""
        data = load_json(self._deployments_file, {}) or {}
        cleaned = []
        for dep_id, raw in data.items():
            deployment = Deployment.model_validate(raw)
            try:
                impl = self.backend(deployment.backend, check=False)
                await impl.teardown(deployment)
                cleaned.append(dep_id)
            except Exception:  # a backend that cannot be reached now; keep the entry
                continue
        self.deployments = {}
        self._save_deployments()
        mark_crashed(self.workspace.state_dir)
        return cleaned


def _workload_files(workspace: Workspace, spec: TargetSpec, script: Path | None) -> list[str]:
    """The target's workload files (paths relative to the workspace), copied into records."""
    folder = workspace.targets_dir / spec.name
    files = sorted(p for p in folder.glob("workload*") if p.is_file())
    if script is not None and script not in files:
        files.append(script)
    return [str(p.relative_to(workspace.root)) for p in files]
