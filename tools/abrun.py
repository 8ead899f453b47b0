"""run_ab: interleaved A/B runs of the same base commit, persisted after every run.

Both arms are built from one base commit (A = base, B = base + patch; no patch = A/A).
Each run is deploy -> reset peak -> workload -> collect -> teardown on a fresh process; a
run's teardown may go on while the next run deploys (never into the same tree: a small
local service tree gets a copy, so runs of one arm alternate between two), and the next
workload starts only once it is done.
Arms alternate in randomised ABBA blocks; warmup runs are recorded but not analysed. In
duet order both runs of a pair run at the same time, each arm pinned to its own half of the
CPUs (which half: by the seed, per pair), so interference that hits both cancels in the
paired difference; a pair's teardowns end before the next pair deploys.
The run file (`.autoopt/runs/<id>/run.json`) is rewritten after every sample, so a
disconnect, a cancel or a crash loses nothing; cancelled and crashed runs are marked.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal
from uuid import uuid4

import anyio
from pydantic import BaseModel, Field, PrivateAttr

from autoopt.tools import correctness
from autoopt.tools.backends.base import Backend, Build, Deployment, Sample
from autoopt.tools.correctness import OutputCheck, TestRun
from autoopt.tools.errors import AutooptError, NotFound, RuleViolation, WorkloadFailed
from autoopt.tools.journal import Journal
from autoopt.tools.state import load_json, load_state, save_model
from autoopt.tools.targets import CONTAINER_BACKENDS, Direction, TargetSpec, guess_direction
from autoopt.tools.timeouts import Durations, run_timeout
from autoopt.tools.workload import workload_argv

MIN_RUNS = 3
Order = Literal["abba", "random", "alternate", "duet"]
Status = Literal["starting", "running", "done", "cancelled", "interrupted", "crashed", "failed"]
ACTIVE = ("starting", "running")  # starting: saved before the builds, until the first sample
RunProgress = Callable[[int, int, str], Awaitable[None]]
LOOKS = (5, 10, 15, 20)
TWIN_MAX_FILES, TWIN_MAX_BYTES = 5000, 64 * 2**20  # a local tree this small gets a copy


class Slot(BaseModel):
    """One place in the schedule."""

    index: int
    arm: Literal["A", "B"]
    warmup: bool
    block: int = Field(-1, description="runs that share one AUTOOPT_BLOCK_SEED")
    cpus: list[int] = Field(default_factory=list, description="duet: the CPUs it is pinned to")

    def block_id(self) -> int:
        return self.block if self.block >= 0 else self.index // 2  # runs before blocks


class ArmReport(BaseModel):
    """Per-arm figures for one metric."""

    values: list[float]
    summary: dict[str, object]


class MetricReport(BaseModel):
    metric: str
    direction: Direction
    a: ArmReport
    b: ArmReport
    comparison: dict[str, object] | None = None


class ABReport(BaseModel):
    """The statistics of a finished (or stopped) run."""

    metric: str
    direction: Direction
    n_a: int
    n_b: int
    failed_a: int
    failed_b: int
    paired: bool
    metrics: list[MetricReport]
    decision: dict[str, object]
    drift: dict[str, float | None]


class ABRun(BaseModel):
    """Everything about one A/B run; what record_experiment renders from."""

    version: int = 1
    id: str
    target: str
    backend: str
    status: Status = "starting"
    created: float = Field(default_factory=time.time)
    finished: float | None = None
    server_pid: int = Field(default_factory=os.getpid)
    base: str
    patch: str | None = None
    patch_sha256: str | None = None
    patch_files: list[str] = Field(default_factory=list)
    allow_constant_tuning: bool = False
    builds: dict[str, str] = Field(default_factory=dict, description="arm -> build id")
    commits: dict[str, str] = Field(default_factory=dict, description="arm -> tree commit")
    runs: int
    warmup: int
    order: Order
    seed: int
    sequential: bool
    looks: list[int] = Field(default_factory=list)
    workload: str | None = None
    workload_files: list[str] = Field(default_factory=list)
    metric: str
    direction: Direction
    unit: str = ""
    min_effect_pct: float
    schedule: list[Slot] = Field(default_factory=list)
    samples: list[Sample] = Field(default_factory=list)
    journal: Journal = Field(default_factory=Journal)
    report: ABReport | None = None
    outputs: OutputCheck | None = Field(None, description="the arms' outputs, compared")
    tests: dict[str, TestRun] = Field(default_factory=dict, description="arm -> its tests")
    error: str | None = None
    plot: str | None = None
    path: str = Field(
        default_factory=lambda: os.environ.get("PATH", "/usr/bin:/bin"),
        description="the PATH the server ran the steps with",
    )
    _stop: tuple[Status, str] | None = PrivateAttr(None)

    @property
    def stop_reason(self) -> tuple[Status, str] | None:
        """Why the run was asked to stop (cancel_run, the server stopping), if it was."""
        return self._stop

    @stop_reason.setter
    def stop_reason(self, value: tuple[Status, str]) -> None:
        self._stop = value


def make_schedule(
    runs: int,
    warmup: int,
    order: Order,
    seed: int,
    cpus: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> list[Slot]:
    """Warmup pairs first, then `runs` per arm: ABBA/BAAB blocks chosen by the seed. A duet
    schedule is A/B pairs run together; `cpus` (two disjoint sets) go to the arms of each
    pair in an order the seed picks, so a faster CPU favours neither arm."""
    if order == "duet" and cpus is None:
        raise ValueError("a duet schedule needs two CPU sets")
    rng = random.Random(seed)
    arms: list[tuple[str, bool]] = []
    for _ in range(warmup):
        pair = ["A", "B"] if rng.random() < 0.5 else ["B", "A"]
        arms += [(a, True) for a in pair]
    pairs: list[list[str]] = []
    while len(pairs) < runs:
        first = ["A", "B"] if rng.random() < 0.5 else ["B", "A"]
        if order == "abba":
            pairs += [first, first[::-1]]
        elif order in ("alternate", "duet"):
            pairs.append(["A", "B"])
        else:
            pairs.append(first)
    for pair in pairs[:runs]:
        arms += [(a, False) for a in pair]
    per_block = 4 if order == "abba" else 2  # an ABBA block: two runs of each arm
    warm = 2 * warmup

    def block(i: int) -> int:
        return i // 2 if i < warm else warmup + (i - warm) // per_block

    slots = [
        Slot(index=i, arm=a, warmup=w, block=block(i))  # type: ignore[arg-type]
        for i, (a, w) in enumerate(arms)
    ]
    if order == "duet" and cpus is not None:
        pin = random.Random(seed ^ 0x5EED)
        for k in range(0, len(slots), 2):
            first, second = cpus if pin.random() < 0.5 else cpus[::-1]
            slots[k].cpus, slots[k + 1].cpus = list(first), list(second)
    return slots


def steps(schedule: list[Slot], order: Order) -> list[list[Slot]]:
    """The slots that run together: pairs in duet order, one at a time otherwise."""
    if order != "duet":
        return [[slot] for slot in schedule]
    return [schedule[k : k + 2] for k in range(0, len(schedule), 2)]


def check_duet(order: Order, backend: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The two CPU sets of a duet run; None for the sequential orders. Refuses what duet
    cannot do here: one usable CPU, or a backend that cannot pin (kubernetes)."""
    if order != "duet":
        return None
    from autoopt.tools import pinning

    if backend not in ("local", "docker"):
        raise RuleViolation(
            f"order='duet' pins each arm to its own CPUs, which the {backend} backend cannot "
            "do; use backend='local' or 'docker', or order='abba'"
        )
    usable = pinning.usable()
    if len(usable) < 2:
        raise RuleViolation(
            f"order='duet' runs both arms at once on disjoint CPUs; this machine gives the "
            f"server {len(usable)} CPU, so the arms would share it. Use order='abba'."
        )
    return pinning.halves(usable)


def block_seed(run_seed: int, block: int) -> str:
    """AUTOOPT_BLOCK_SEED: the same for both arms of a block, different between blocks."""
    return str(random.Random(run_seed * 1_000_003 + block).randrange(2**31))


def runs_dir(state_dir: Path) -> Path:
    return state_dir / "runs"


def load_run(state_dir: Path, run_id: str) -> ABRun:
    from autoopt.tools.workspace import check_name

    check_name(run_id, "run id")
    run = load_state(runs_dir(state_dir) / run_id / "run.json", ABRun.model_validate, None)
    if run is None:
        raise NotFound(f"unknown run {run_id!r}: run_ab returns the run id (a target keeps "
                       "its last AUTOOPT_KEEP_RUNS runs; recorded ones live in results/)")
    return run


def mark_crashed(state_dir: Path) -> list[str]:
    """Runs left 'running' by a server that is gone are marked crashed; their ids."""
    import psutil

    marked = []
    folder = runs_dir(state_dir)
    for path in sorted(folder.glob("*/run.json")) if folder.is_dir() else []:
        data = load_json(path, {})  # validated only when running: cheap, and a finished
        if not isinstance(data, dict) or data.get("status") not in ACTIVE:  # one stays as is
            continue
        pid = data.get("server_pid")
        if pid and pid != os.getpid() and psutil.pid_exists(pid):
            continue
        if (run := load_state(path, ABRun.model_validate, None)) is None:
            continue
        before = "before its first sample" if run.status == "starting" else "during this run"
        run.status = "crashed"
        run.error = f"the server stopped {before}; samples so far are kept"
        save_model(path, run)
        marked.append(run.id)
    return marked


class ABRunner:
    """Executes one ABRun against a backend; the engine supplies builds and tracking."""

    def __init__(
        self,
        spec: TargetSpec,
        backend: Backend,
        run: ABRun,
        folder: Path,
        script: Path | None,
        track: Callable[[object, bool], None],
        target_dir: Path,
    ) -> None:
        self.target_dir = target_dir
        self._built: dict[str, dict[str, tuple[int, int]]] = {}  # build id -> its files
        self.spec = spec
        self.backend = backend
        self.run = run
        self.folder = folder
        self.script = script
        self.track = track
        self.durations = Durations(folder.parent.parent, spec.name, backend.name)
        self._pending: tuple[Deployment, Sample, Build] | None = None  # its teardown waits
        self._teardown_error: AutooptError | None = None
        self._twins: dict[str, Build] = {}  # build id -> the build in a copy of its tree

    def save(self) -> None:
        save_model(self.folder / "run.json", self.run)

    async def execute(self, builds: dict[str, Build], progress: RunProgress | None) -> ABRun:
        run = self.run
        total = len(run.schedule)
        looks = run.looks or [run.runs]
        run.status = "running"
        self.save()
        try:
            if self.backend.name == "local" and self.spec.kind == "service":
                for build in builds.values():
                    await self._make_twin(build)
            for step in steps(run.schedule, run.order):
                for sample in await self.together(builds, step):
                    run.samples.append(sample)
                    run.outputs = self.compare_outputs()
                    self.save()
                    if progress:
                        await progress(len(run.samples), total, _describe(sample, run.metric))
                if stop := self._stop_early(step):
                    run.error = stop
                    break
                n = self._complete_pairs()
                if run.sequential and n in looks and not step[-1].warmup and n < looks[-1]:
                    await self.finish_pending()
                    report = analyse(run, self.spec, look=n)
                    if report.decision["verdict"] != "INCONCLUSIVE":
                        run.report = report
                        break
            await self.finish_pending()
            if run.report is None:
                run.report = analyse(run, self.spec, look=None)
            run.status = "done"
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                run.status, run.error = run.stop_reason or (
                    "cancelled", "the client cancelled the call; samples so far are kept"
                )
                run.finished = time.time()
                self.save()
            raise
        except BaseException as exc:
            run.status = "failed"
            run.error = str(exc)
            raise
        finally:
            await self.finish_pending()
            run.finished = run.finished or time.time()
            self.save()
        return run

    async def together(self, builds: dict[str, Build], step: list[Slot]) -> list[Sample]:
        """The step's runs, started together (a duet pair) or alone; in schedule order."""
        if len(step) == 1:  # its teardown may overlap the next run's deploy
            slot = step[0]
            after = self.run.schedule[slot.index + 1 :]
            then = builds[after[0].arm] if after else None
            return [await self.one(builds[slot.arm], slot, then)]
        from autoopt.tools import pinning

        done: dict[int, Sample] = {}

        async def pinned_run(slot: Slot) -> None:
            with pinning.pinned(tuple(slot.cpus) or None):
                done[slot.index] = await self.one(builds[slot.arm], slot, None)

        async with anyio.create_task_group() as tg:
            for slot in step:
                tg.start_soon(pinned_run, slot)
        return [done[slot.index] for slot in step]

    def _stop_early(self, step: list[Slot]) -> str | None:
        """Why the run stops before its schedule ends, if it must."""
        run = self.run
        for arm in dict.fromkeys(slot.arm for slot in step):
            if self._hopeless(arm):
                return f"arm {arm} failed in every run so far; stopped early"
        if len(run.samples) >= 2 and not any(s.ok for s in run.samples):
            return "the first runs of both arms failed; stopped early"
        if run.outputs is not None and run.outputs.status == "changed":
            return f"stopped early: {run.outputs.summary()}"
        return None

    def compare_outputs(self) -> OutputCheck:
        """The outputs of the samples so far, block by block."""
        runs = [
            (f"run{s.run:03d}-{s.arm}", s.arm, s.block if s.block is not None else -1, s.output_fp)
            for s in self.run.samples
            if s.ok
        ]
        mode = self.spec.correctness.mode(self.spec.kind)
        return correctness.check(mode, runs, self.folder / "outputs", aa=not self.run.patch)

    def _complete_pairs(self) -> int:
        counted = [s for s in self.run.samples if not s.warmup]
        return min(sum(s.arm == "A" for s in counted), sum(s.arm == "B" for s in counted))

    def _hopeless(self, arm: str) -> bool:
        mine = [s for s in self.run.samples if s.arm == arm]
        return len(mine) >= 2 and not any(s.ok for s in mine)

    async def _make_twin(self, build: Build) -> None:
        """A copy of a small local tree (files, links and mtimes as built), beside the build:
        a run of the same build deploys there while the last one's teardown goes on."""
        files = await anyio.to_thread.run_sync(correctness.tree_files, Path(build.tree))
        self._built.setdefault(build.id, files)
        if len(files) > TWIN_MAX_FILES or sum(size for size, _ in files.values()) > TWIN_MAX_BYTES:
            return
        twin = build.folder / "twin-tree"
        await anyio.to_thread.run_sync(
            lambda: shutil.copytree(build.tree, twin, symlinks=True, dirs_exist_ok=True)
        )
        self._twins[build.id] = build.model_copy(update={"tree": str(twin)})

    def _tree_for(self, build: Build) -> Build:
        """`build` in the tree this run deploys into: the other one of its two trees when
        the pending teardown is of the same build."""
        pending = self._pending
        twin = self._twins.get(build.id)
        if pending is None or twin is None or pending[2].id != build.id:
            return build
        return build if pending[2].tree == twin.tree else twin

    async def one(self, build: Build, slot: Slot, then: Build | None = None) -> Sample:
        """deploy -> reset peak -> workload -> collect -> teardown, never leaving a process.
        When the next run (of `then`) deploys elsewhere than this tree, this teardown is left
        pending and goes on during that deploy (see deploy_beside_teardown)."""
        spec, backend = self.spec, self.backend
        build = self._tree_for(build)
        sample = Sample(
            run=slot.index, arm=slot.arm, build_id=build.id, ok=False, warmup=slot.warmup
        )
        deployment = None
        local = backend.name == "local"
        if local and build.id not in self._built:
            self._built[build.id] = correctness.tree_files(Path(build.tree))
        t0 = time.monotonic()
        settled = False
        try:
            deployment = await self.deploy_beside_teardown(build)
            self.track(deployment, True)
            if slot.cpus:
                from autoopt.tools.journal import Step

                cpus = ",".join(map(str, slot.cpus))
                deployment.journal.add(Step(
                    phase="deploy", shell=f": duet: this arm's processes run on CPUs {cpus}",
                    note=f"sched_setaffinity (taskset -c {cpus}; docker --cpuset-cpus)",
                ))
            await backend.reset_peak(deployment)
            t1 = time.monotonic()
            seed = block_seed(self.run.seed, slot.block_id())
            cmd, shell = workload_argv(spec, self.script, deployment, self.target_dir, seed)
            name = f"run{slot.index:03d}-{slot.arm}"
            latencies = self.folder / "latencies" / f"{name}.txt"
            if spec.kind == "service":  # the driver runs here: it may write every latency
                latencies.parent.mkdir(parents=True, exist_ok=True)
                cmd.env = {**cmd.env, "AUTOOPT_LATENCY_FILE": str(latencies)}
            timeout, why = run_timeout(spec, self.durations.load())
            sample.timeout_s = timeout
            try:
                result = await backend.run_workload(
                    spec, deployment, cmd.argv, shell, name=name, env=cmd.env, timeout=timeout
                )
            except WorkloadFailed as exc:
                if time.monotonic() - t1 >= timeout:
                    raise WorkloadFailed(f"{exc}\n(the limit: {why}; set timeout: under "
                                         "## Workload in target.md to change it)") from exc
                raise
            sample.block = slot.block_id()
            if result.stdout_file and spec.correctness.mode(spec.kind) != "none":
                text = Path(result.stdout_file).read_text(errors="replace")
                sample.output_fp = correctness.save(
                    self.folder / "outputs", name, correctness.observed(text, spec)
                )
            t2 = time.monotonic()
            collected = await backend.collect(spec, deployment, result)
            t3 = time.monotonic()
            metrics = {**result.metrics, **dict(collected.get("metrics", {}))}  # type: ignore[arg-type]
            _estimate_latency(spec, metrics, latencies)
            restarts = int(collected.get("restarts", 0))  # type: ignore[call-overload]
            oom = bool(collected.get("oom_killed", False))
            died = bool(collected.get("died", False))
            metrics["restarts"] = float(restarts)  # 0 for a local process: it cannot restart
            if backend.name in CONTAINER_BACKENDS:
                metrics["oom_killed"] = float(oom)
            if "wall_s" not in metrics:  # the workload's own time (a service's driver)
                metrics["wall_s"] = round(result.duration_s, 3)
            sample.metrics = metrics
            sample.smaps = dict(collected.get("smaps", {}))  # type: ignore[call-overload]
            sample.died, sample.restarts, sample.oom_killed = died, restarts, oom
            sample.log_tail = result.log_tail
            sample.timings = {"deploy_s": t1 - t0, "workload_s": t2 - t1, "collect_s": t3 - t2}
            problems = []
            if result.exit_code != 0:
                problems.append(f"the workload exited with code {result.exit_code}")
            if died:
                problems.append("the service died during the workload")
            if oom:
                problems.append("the service was killed for memory (OOM)")
            if spec.primary.name not in metrics and self.run.metric not in metrics:
                problems.append(f"no {self.run.metric} was measured")
            sample.ok = not problems
            sample.error = "; ".join(problems) or None
            if sample.ok:
                self.durations.add(result.duration_s)
            settled = True
        except AutooptError as exc:
            sample.error = str(exc)
            sample.log_tail = str(exc)[-2000:]
            settled = True
        finally:
            if deployment is None:
                await self.finish_pending()  # a failed deploy: the previous one, now
                self._clean_tree(build, sample)
            elif settled and then is not None and (
                not local or then.id != build.id or build.id in self._twins
            ):
                self._pending = (deployment, sample, build)
            else:
                await self._finish(deployment, sample, build)
                await self.finish_pending()  # raises what a teardown raised
        return sample

    async def deploy_beside_teardown(self, build: Build) -> Deployment:
        """Deploy `build` while the previous run's deployment is torn down; return once both
        are done, so no workload ever shares the machine with another run's service."""
        pending, self._pending = self._pending, None
        if pending is None:
            return await self.backend.deploy(self.spec, build)
        failed: list[Exception] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._finish, *pending)
            try:
                deployment = await self.backend.deploy(self.spec, build)
            except Exception as exc:  # not as an ExceptionGroup: once the teardown is done
                failed.append(exc)
        if failed:
            raise failed[0]
        pending[1].timings["teardown_hidden_s"] = pending[1].timings.get("teardown_s", 0.0)
        return deployment

    async def finish_pending(self) -> None:
        """Tear down the deployment a run left pending (none is left after this)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await self._finish(*pending)
        if self._teardown_error is not None:
            error, self._teardown_error = self._teardown_error, None
            raise error

    async def _finish(self, deployment: Deployment, sample: Sample, build: Build) -> None:
        """Teardown (shielded: it runs even when cancelled), its journal, the tree's cleanup;
        a teardown that fails is raised by the run that notices it."""
        t4 = time.monotonic()
        with anyio.CancelScope(shield=True):
            try:
                await self.backend.teardown(deployment)
            except AutooptError as exc:
                self._teardown_error = self._teardown_error or exc
            self.track(deployment, False)
        sample.timings["teardown_s"] = time.monotonic() - t4
        self.run.journal.extend(deployment.journal, arm=sample.arm, run=sample.run)
        self._clean_tree(build, sample)

    def _clean_tree(self, build: Build, sample: Sample) -> None:
        """Local backend: the next run starts from the tree as built: no cache survives."""
        if self.backend.name == "local":
            removed, changed = correctness.clean_leftovers(Path(build.tree), self._built[build.id])
            sample.left = removed[:20] + [f"(changed) {c}" for c in changed[:5]]


def _estimate_latency(spec: TargetSpec, metrics: dict[str, float], latencies: Path) -> None:
    """With `latency_estimator:` in target.md, its estimate from the run's latencies file
    replaces the workload's own p99 (kept as <name>_workload)."""
    name = spec.latency_metric()
    if name is None or not latencies.is_file():
        return
    from autoopt.tools import stats

    values = [float(x) for x in latencies.read_text().split()]
    if not values:
        return
    if name in metrics:
        metrics[f"{name}_workload"] = metrics[name]
    metrics[name] = round(stats.latency_estimate(values, spec.latency_estimator), 3)


def _describe(sample: Sample, metric: str) -> str:
    kind = "warmup" if sample.warmup else "run"
    if not sample.ok:
        return f"{kind} {sample.run} ({sample.arm}) FAILED: {(sample.error or '')[:200]}"
    value = sample.metrics.get(metric)
    return f"{kind} {sample.run} ({sample.arm}): {metric}={value}"


def _first_errors(by_arm: dict[str, list[Sample]], metric: str) -> dict[str, str]:
    """Per arm, the first failed run's error, or that no successful run measured `metric`
    (what decide() gives as the reason of a FAILED verdict)."""
    out = {}
    for arm, xs in by_arm.items():
        error = next((s.error for s in xs if not s.ok and s.error), None)
        ok = [s for s in xs if s.ok]
        if error is None and ok and not any(metric in s.metrics for s in ok):
            error = f"no {metric} in the metrics of any {arm} run"
        if error:
            out[arm] = error
    return out


def analyse(run: ABRun, spec: TargetSpec, look: int | None) -> ABReport:
    """Statistics over the non-warmup samples (the first `look` per arm, in sequential mode).

    Only declared metrics are compared: the run's metric, the target's primary, secondary and
    guardrail metrics, and the built-ins (TargetSpec.declared_metrics). Whatever else the
    workload printed stays in the samples (run.json, metrics.log) and is not compared."""
    from autoopt.tools import stats
    from autoopt.tools.decision import decide

    counted = [s for s in run.samples if not s.warmup]
    by_arm = {arm: [s for s in counted if s.arm == arm] for arm in ("A", "B")}
    if look is not None:
        by_arm = {arm: xs[:look] for arm, xs in by_arm.items()}
    ok = {arm: [s for s in xs if s.ok] for arm, xs in by_arm.items()}
    failed = {arm: len(by_arm[arm]) - len(ok[arm]) for arm in by_arm}
    paired = failed["A"] == 0 and failed["B"] == 0 and len(ok["A"]) == len(ok["B"])
    if run.order == "duet":  # a pair ran together: a failed run drops its partner too
        whole = {s.block for s in ok["A"]} & {s.block for s in ok["B"]}
        ok = {arm: [s for s in xs if s.block in whole] for arm, xs in ok.items()}
        paired = True

    def values(arm: str, metric: str) -> list[float]:
        return [s.metrics[metric] for s in ok[arm] if metric in s.metrics]

    looks = run.looks or [run.runs]
    alpha = 0.05
    final = True
    if run.sequential:
        index = looks.index(look) if look in looks else len(looks) - 1
        alpha = stats.sequential_boundaries(looks)[index]
        final = index == len(looks) - 1
        look = looks[index]
    guardrails = [(g, values("A", g.metric), values("B", g.metric)) for g in spec.guardrails]
    decision = decide(
        values("A", run.metric),
        values("B", run.metric),
        metric=run.metric,
        direction=run.direction,
        min_effect_pct=run.min_effect_pct,
        guardrails=guardrails,
        failed_runs_a=failed["A"],
        failed_runs_b=failed["B"],
        paired=paired,
        one_sided_alpha=alpha,
        final_look=final,
        inconclusive_is_discard=run.sequential and final,
        look=look,
        errors=_first_errors(by_arm, run.metric),
    )
    verdict, reason = correctness.gate(decision.verdict, decision.reason, run.outputs, run.tests)
    if (verdict, reason) != (decision.verdict, decision.reason):  # faster is not enough
        kind = type(decision.verdict)  # the verdict's own type (str or its enum)
        decision = decision.model_copy(update={"verdict": kind(verdict), "reason": reason})
    declared = {**spec.declared_metrics(run.backend), run.metric: run.direction}
    reports = []
    for name in sorted(declared):
        va, vb = values("A", name), values("B", name)
        if not va or not vb:
            continue
        direction = declared[name]
        comparison = None
        if len(va) >= 2 and len(vb) >= 2:
            comparison = stats.compare(
                va, vb, metric=name, direction=direction, paired=paired and len(va) == len(vb)
            ).model_dump(mode="json")
        reports.append(
            MetricReport(
                metric=name,
                direction=direction,
                a=ArmReport(values=va, summary=stats.summarize(va).model_dump(mode="json")),
                b=ArmReport(values=vb, summary=stats.summarize(vb).model_dump(mode="json")),
                comparison=comparison,
            )
        )
    return ABReport(
        metric=run.metric,
        direction=run.direction,
        n_a=len(ok["A"]),
        n_b=len(ok["B"]),
        failed_a=failed["A"],
        failed_b=failed["B"],
        paired=paired,
        metrics=reports,
        decision=decision.model_dump(mode="json"),
        drift={
            arm: stats.drift_slope(v) if len(v := values(arm, run.metric)) >= 3 else None
            for arm in ("A", "B")
        },
    )


def check_runs(runs: int) -> None:
    if runs < MIN_RUNS:
        raise RuleViolation(
            f"runs={runs} is below the minimum of {MIN_RUNS} runs per arm (the methodology's "
            f"N >= 3 rule; 5 or more are recommended). Ask for runs >= {MIN_RUNS}."
        )


def new_run(
    spec: TargetSpec,
    *,
    backend: str,
    base: str,
    patch: str | None,
    runs: int,
    warmup: int,
    order: Order,
    seed: int | None,
    sequential: bool,
    metric: str | None,
    direction: Direction | None,
    min_effect: float | None,
    workload: str | None,
    allow_constant_tuning: bool,
) -> ABRun:
    check_runs(runs)
    cpus = check_duet(order, backend)
    chosen = metric or spec.primary.name
    declared = spec.declared_metrics(backend)
    looks = [n for n in LOOKS if n < runs] + [runs] if sequential else []
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    return ABRun(
        id=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid4().hex[:6]}",
        target=spec.name,
        backend=backend,
        base=base,
        patch=patch,
        runs=runs,
        warmup=warmup,
        order=order,
        seed=seed,
        sequential=sequential,
        looks=looks,
        workload=workload,
        metric=chosen,
        direction=direction or declared.get(chosen) or guess_direction(chosen),
        unit=spec.primary.unit if chosen == spec.primary.name else "",
        min_effect_pct=min_effect if min_effect is not None else spec.min_effect_pct,
        schedule=make_schedule(runs, warmup, order, seed, cpus),
        allow_constant_tuning=allow_constant_tuning,
    )
