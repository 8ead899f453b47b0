"""The workload driver on this machine: every backend runs it the same way."""

from __future__ import annotations

from pathlib import Path

from autoopt.tools.backends.base import Deployment, WorkloadResult
from autoopt.tools.errors import WorkloadFailed
from autoopt.tools.journal import Step
from autoopt.tools.process import base_env, run, tail_text
from autoopt.tools.workload import parse_metrics


async def drive(
    deployment: Deployment,
    argv: list[str],
    shell: str,
    *,
    name: str,
    timeout: float,
    cwd: Path | None = None,
    note: str | None = None,
) -> WorkloadResult:
    """Run `argv` to completion (output in the deployment's log folder), journal it as
    `shell`, parse its key=value metrics; a timeout stops it and raises WorkloadFailed."""
    logs = Path(deployment.log_dir)
    where = cwd or logs
    child, done, timed_out = await run(
        argv, cwd=where, env=base_env(), logs=logs, name=name, timeout=timeout
    )
    deployment.journal.add(
        Step(
            phase="workload",
            shell=shell,
            argv=argv,
            cwd=str(where),
            elapsed_s=done.elapsed_s,
            exit_code=done.code,
            note=note,
        )
    )
    result = WorkloadResult(
        metrics=parse_metrics(tail_text(child.stdout, 200)),
        exit_code=done.code,
        duration_s=done.elapsed_s,
        log_tail=child.tail(30),
    )
    if timed_out:
        raise WorkloadFailed(
            f"the workload timed out after {timeout:.0f} s. Log tail:\n{result.log_tail}"
        )
    return result
