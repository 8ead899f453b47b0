"""Harness overhead per run: deploy + collect + teardown over the bare workload time.

The harness side is read from the persisted runs (`<state_dir>/runs/<id>/run.json`, each
sample's `timings`: deploy_s runs from the deploy call to the reset peak, and includes the
previous run's teardown when it ran meanwhile; that teardown is then marked
teardown_hidden_s and not counted again); the bare side is `workload.sh` timed by hand
against a server that is already up (local: server.py started by hand; docker / kubernetes:
a deployment made by the engine, whose start and stop are not timed). The bare runs
interleave with the run_abs: some before the first, some after each. The harness cost is
the mean over the runs of (deploy + collect + teardown) over the median bare time.

    python -m bench.overhead [--runs 5] [--backend local|docker|kubernetes]
    python -m bench.overhead --backend docker --overlap 8   # teardown + next deploy only
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import anyio

from bench.aa_series import Between, Series, run_series
from bench.common import (
    PYSERVER,
    ROOT,
    bare_local_workload,
    f,
    log,
    median,
    table,
    temp_workspace,
    timed_workload,
)

PARTS = ("deploy_s", "workload_s", "collect_s", "teardown_s")


@dataclass
class Overhead:
    """Harness samples and bare workload times of one backend (or why it was skipped)."""

    backend: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    bare_how: str = ""
    skipped: str | None = None

    @classmethod
    def of(cls, backend: str, series: Series, bare: list[float], how: str) -> Overhead:
        return cls(backend, series.samples(), series.records, bare, how)

    def figures(self) -> dict[str, float]:
        t = [s["timings"] for s in self.samples if all(k in s["timings"] for k in PARTS)]
        bare = median(self.bare)
        # a teardown that ran while the next run deployed is already in that deploy's time
        extra = [
            x["deploy_s"] + x["collect_s"] + x["teardown_s"] - x.get("teardown_hidden_s", 0.0)
            for x in t
        ]
        total = [e + x["workload_s"] for e, x in zip(extra, t, strict=True)]
        per_run = [
            (r["finished"] - r["created"]) / len(r["samples"])
            for r in self.records
            if r.get("finished") and r["samples"]
        ]
        out = {k: median([x[k] for x in t]) for k in PARTS}
        out["hidden"] = float(sum(x.get("teardown_hidden_s", 0.0) > 0 for x in t))
        out |= {
            "bare_s": bare,
            "extra_ratio": fmean(extra) / bare,  # the mean: hidden teardowns make it bimodal
            "total_ratio": fmean(total) / bare - 1,
            "workload_ratio": out["workload_s"] / bare,
            "runab_per_run_s": median(per_run),
            "n": float(len(t)),
        }
        return out


def spread(total: int, gaps: int) -> list[int]:
    """`total` bare runs over `gaps` gaps (at least one per gap), as evenly as possible."""
    total = max(total, gaps)
    return [total // gaps + (1 if i < total % gaps else 0) for i in range(gaps)]


def local_bare(root: Path, counts: Sequence[int], out: list[float]) -> Between:
    """Bare runs of server.py started by hand, `counts[i]` of them before run_ab i."""

    async def between(i: int, engine: Any) -> None:
        for _ in range(counts[i]):
            elapsed, _ = await anyio.to_thread.run_sync(bare_local_workload, root)
            out.append(elapsed)
        if counts[i]:
            log(f"  bare workload x{counts[i]} (local): last {out[-1]:.2f} s")

    return between


def deployed_bare(backend: str, counts: Sequence[int], out: list[float]) -> Between:
    """Bare runs against a deployment the engine made from one build (start/stop untimed)."""
    state: dict[str, Any] = {}

    async def between(i: int, engine: Any) -> None:
        script = engine.workspace.targets_dir / PYSERVER / "workload.sh"
        if counts[i] and "build" not in state:
            state["build"] = await engine.build(PYSERVER, backend=backend)
        for _ in range(counts[i]):
            dep = await engine.deploy(state["build"].id)
            try:
                elapsed, _ = await anyio.to_thread.run_sync(timed_workload, script, dep.endpoint)
            finally:
                await engine.teardown(dep.id)
            out.append(elapsed)
        if counts[i]:
            log(f"  bare workload x{counts[i]} ({backend}): last {out[-1]:.2f} s")
        if i == len(counts) - 1 and "build" in state:
            await engine.discard_build(state.pop("build").id)

    return between


TEST_CONTEXT = "autoopt-test"  # the context of scripts/k8s-cluster.sh's kubeconfig
CLUSTER_SH = ROOT / "scripts" / "k8s-cluster.sh"


def unavailable(backend: str, root: Path) -> str | None:
    """Why `backend` cannot be measured here, or None."""
    if backend == "kubernetes":
        if importlib.util.find_spec("autoopt.tools.backends.kubernetes") is None:
            return (
                "there is no kubernetes backend in this checkout yet "
                "(tools/backends/kubernetes.py is missing)"
            )
        if not os.environ.get("AUTOOPT_K8S_CONTEXT") and not use_test_cluster():
            return (
                "no cluster: AUTOOPT_K8S_CONTEXT is unset and the project's test cluster is not "
                "up (`bash scripts/k8s-cluster.sh up`)"
            )
    from autoopt.tools.engine import make_backend
    from autoopt.tools.workspace import Workspace

    try:
        reason = make_backend(backend, Workspace(root)).unavailable_reason()
    except Exception as exc:  # a backend that cannot even start says why
        return f"cannot start the {backend} backend: {type(exc).__name__}: {exc}"
    if reason and backend == "docker":
        reason += " (run `bash scripts/setup-docker.sh` first)"
    return reason


def _cluster_sh(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["bash", str(CLUSTER_SH), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def use_test_cluster() -> bool:
    """Point the kubernetes backend at scripts/k8s-cluster.sh's cluster when it is up."""
    status = _cluster_sh("status")
    if status is None or status.returncode != 0 or "ready" not in status.stdout:
        return False
    kubeconfig = _cluster_sh("kubeconfig")
    if kubeconfig is None or kubeconfig.returncode != 0:
        return False
    os.environ["AUTOOPT_KUBECONFIG"] = kubeconfig.stdout.strip()
    os.environ["AUTOOPT_K8S_CONTEXT"] = TEST_CONTEXT
    return True


def delete_namespace(root: Path) -> None:
    """Delete the namespace the backend made for this (temporary) workspace."""
    from kubernetes import client, config

    from autoopt.tools.backends.kubernetes import default_namespace
    from autoopt.tools.workspace import Workspace

    api = config.new_client_from_config(
        config_file=os.environ.get("AUTOOPT_KUBECONFIG") or os.environ.get("KUBECONFIG"),
        context=os.environ["AUTOOPT_K8S_CONTEXT"],
    )
    try:
        namespace = default_namespace(Workspace(root))
        client.CoreV1Api(api).delete_namespace(namespace, _preload_content=False).release_conn()
        log(f"kubernetes: deleted namespace {namespace}")
    except Exception as exc:  # already gone, or not ours to delete: say so and go on
        log(f"kubernetes: namespace not deleted: {exc}")
    finally:
        api.close()


async def measure_backend(root: Path, backend: str, runs: int, warmup: int = 1) -> Overhead:
    """One A/A run_ab on `backend` with as many bare runs as it has runs, half before it
    and half after it."""
    reason = unavailable(backend, root)
    if reason:
        log(f"{backend}: skipped: {reason}")
        return Overhead(backend, skipped=reason)
    bare: list[float] = []
    counts = spread(2 * (runs + warmup), 2)
    log(f"{backend}: one A/A run_ab at runs={runs} and {sum(counts)} bare workload runs")
    try:
        between = deployed_bare(backend, counts, bare)
        series = await run_series(root, 1, runs, between, backend, warmup)
    finally:
        if backend == "kubernetes" and not os.environ.get("AUTOOPT_K8S_NAMESPACE"):
            await anyio.to_thread.run_sync(delete_namespace, root)
    how = (
        f"workload.sh timed by hand against a {backend} deployment made by the engine "
        "(its start and stop untimed)"
    )
    if backend == "kubernetes":
        how += f"; cluster: kubeconfig context {os.environ.get('AUTOOPT_K8S_CONTEXT')}"
    result = Overhead.of(backend, series, bare, how)
    if series.errors:
        result.skipped = f"run_ab failed: {series.errors[0][:300]}"
    return result


def markdown(results: Sequence[Overhead]) -> str:
    rows = []
    notes = []
    for r in results:
        if r.skipped and not r.samples:
            rows.append([r.backend, *["-"] * 11])
            notes.append(f"- **{r.backend}**: not measured: {r.skipped}")
            continue
        x = r.figures()
        rows.append(
            [
                r.backend,
                int(x["n"]),
                len(r.bare),
                f(x["deploy_s"], 3),
                f(x["workload_s"], 3),
                f(x["collect_s"], 4),
                f"{f(x['teardown_s'], 3)} ({int(x['hidden'])} hidden)",
                f(x["bare_s"], 3),
                f"**{100 * x['extra_ratio']:.1f}%**",
                f"{100 * x['total_ratio']:+.1f}%",
                f(x["workload_ratio"], 3),
                f(x["runab_per_run_s"], 2),
            ]
        )
        notes.append(f"- **{r.backend}**: bare = {r.bare_how}.")
        if r.skipped:
            notes.append(f"- **{r.backend}**: {r.skipped}")
    head = [
        "backend",
        "harness runs",
        "bare runs",
        "deploy s",
        "workload s (harness)",
        "collect s",
        "teardown s (runs it hid behind the next deploy)",
        "bare workload s",
        "(deploy+collect+teardown) / bare",
        "whole run / bare - 1",
        "harness workload / bare",
        "run_ab wall per run s",
    ]
    return "\n".join([table(head, rows), "", *notes])


async def overlap(root: Path, backend: str, pairs: int) -> str:
    """Teardown of one deployment + deploy of the next (of the other build), one after the
    other and at once (as run_ab does it), alternating, so a drift of the machine's load
    hits both alike: the wall times, and the per-pair ratio."""
    from autoopt.tools.engine import Engine
    from autoopt.tools.workspace import Workspace

    reason = unavailable(backend, root)
    if reason:
        return f"{backend}: not measured: {reason}"
    engine = Engine(Workspace(root))
    builds = [await engine.build(PYSERVER, backend=backend) for _ in range(2)]
    impl, spec = engine.backend(backend), engine.spec(PYSERVER)
    walls: dict[str, list[float]] = {"one after the other": [], "at once": []}
    previous = await impl.deploy(spec, builds[0])
    try:
        for i in range(2 * pairs):
            t0 = time.monotonic()
            if i % 2 == 0:
                await impl.teardown(previous)
                previous = await impl.deploy(spec, builds[1])
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(impl.teardown, previous)
                    previous = await impl.deploy(spec, builds[0])
            walls["at once" if i % 2 else "one after the other"].append(time.monotonic() - t0)
    finally:
        await impl.teardown(previous)
        for build in builds:
            await engine.discard_build(build.id)
        if backend == "kubernetes" and not os.environ.get("AUTOOPT_K8S_NAMESPACE"):
            await anyio.to_thread.run_sync(delete_namespace, root)
    ratio = median([b / a for a, b in zip(*walls.values(), strict=True)])
    rows = [
        [backend, mode, len(xs), f(median(xs), 3), f(fmean(xs), 3)] for mode, xs in walls.items()
    ]
    head = ["backend", "teardown + next deploy", "pairs", "median s", "mean s"]
    return f"{table(head, rows)}\n\nat once / one after the other, per pair: median {ratio:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default="local")
    parser.add_argument("--warmup", type=int, default=1, help="warmup pairs per run_ab")
    parser.add_argument(
        "--overlap", type=int, metavar="PAIRS", help="only time teardown + next deploy"
    )
    args = parser.parse_args()
    with temp_workspace() as root:
        if args.overlap:
            print(anyio.run(overlap, root, args.backend, args.overlap))
            return
        if args.backend == "local":
            bare: list[float] = []
            counts = spread(2 * (args.runs + args.warmup), 2)
            between = local_bare(root, counts, bare)
            series = anyio.run(run_series, root, 1, args.runs, between, "local", args.warmup)
            result = Overhead.of("local", series, bare, "server.py started by hand")
        else:
            result = anyio.run(measure_backend, root, args.backend, args.runs, args.warmup)
    print(markdown([result]))


if __name__ == "__main__":
    main()
