"""What every backend does the same way on this machine: a new deployment's record, the
HTTP health probe (and its shell form for the scripts), and the workload driver."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from uuid import uuid4

from autoopt.tools.backends.base import Build, Deployment, WorkloadResult
from autoopt.tools.errors import WorkloadFailed
from autoopt.tools.journal import Step
from autoopt.tools.process import base_env, run, tail_text
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workload import output_lines, parse_metrics

HEALTH_WAIT_SH = (
    'for _ in $(seq 300); do python3 -c "import sys, urllib.request as u; '
    'u.urlopen(sys.argv[1], timeout=1)" "{url}" 2>/dev/null && break; sleep 0.1; done'
)

HEALTH_FAST_S, HEALTH_SLOW_S, HEALTH_FAST_FOR_S = 0.005, 0.05, 2.0


def health_pause(since: float) -> float:
    """Seconds to the next health probe of a service started at `since` (monotonic): every
    5 ms for its first 2 s, so a fast start is seen at once, then every 50 ms."""
    return HEALTH_FAST_S if time.monotonic() - since < HEALTH_FAST_FOR_S else HEALTH_SLOW_S


def probe(url: str) -> bool:
    """One health check: True on a 2xx answer (blocking; run it in a worker thread)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError:
        return False


def new_deployment(spec: TargetSpec, build: Build, backend: str, **fields: object) -> Deployment:
    """A fresh deployment id and its log folder beside the build."""
    dep_id = f"dep-{uuid4().hex[:10]}"
    logs = build.folder / "deployments" / dep_id
    logs.mkdir(parents=True, exist_ok=True)
    return Deployment(
        id=dep_id,
        build_id=build.id,
        target=spec.name,
        backend=backend,
        kind=spec.kind,
        log_dir=str(logs),
        tree=build.tree,
        **fields,
    )


async def drive(
    deployment: Deployment,
    argv: list[str],
    shell: str,
    *,
    name: str,
    timeout: float,
    cwd: Path | None = None,
    note: str | None = None,
    env: dict[str, str] | None = None,
) -> WorkloadResult:
    """Run `argv` to completion (output in the deployment's log folder), journal it as
    `shell`, parse its key=value metrics; a timeout stops it and raises WorkloadFailed."""
    logs = Path(deployment.log_dir)
    where = cwd or logs
    child, done, timed_out = await run(
        argv, cwd=where, env=base_env(env), logs=logs, name=name, timeout=timeout
    )
    deployment.journal.add(
        Step(
            phase="workload",
            shell=shell,
            argv=argv,
            env=env or {},
            cwd=str(where),
            elapsed_s=done.elapsed_s,
            exit_code=done.code,
            note=note,
        )
    )
    stdout = tail_text(child.stdout, 200)
    result = WorkloadResult(
        metrics=parse_metrics(stdout),
        output=output_lines(stdout),
        stdout_file=str(child.stdout),
        exit_code=done.code,
        duration_s=done.elapsed_s,
        log_tail=child.tail(30),
    )
    if timed_out:
        raise WorkloadFailed(
            f"the workload timed out after {timeout:.0f} s. Log tail:\n{result.log_tail}"
        )
    return result
