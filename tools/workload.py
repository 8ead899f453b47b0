"""Workloads: which command drives a target, and the `key=value` metrics it prints."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

from autoopt.tools.errors import InvalidName, TargetSpecError
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workspace import Workspace, inside

_METRIC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")

# The one-liner that measures a batch program's peak RSS from wait4 (RUSAGE_CHILDREN),
# in a form a clean shell can run: only python3 is needed.
MEASURE_PY = (
    "import resource,subprocess,sys;"
    "r=subprocess.run(sys.argv[1:]);"
    "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
    "print('peak_rss_mb=%.3f' % (u.ru_maxrss/1024));"
    "print('cpu_s=%.3f' % (u.ru_utime+u.ru_stime));"
    "sys.exit(r.returncode)"
)


def parse_metrics(text: str) -> dict[str, float]:
    """`key=value` lines with a finite number; everything else is ignored. Last one wins."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            value = float(m[2])
            if math.isfinite(value):
                out[m[1]] = value
    return out


def workload_script(workspace: Workspace, spec: TargetSpec, script: str | None) -> Path | None:
    """The workload file: a targeted one named by the caller (inside the target's folder),
    else the target's own `## Workload` script. None when the target has only a command."""
    target_dir = workspace.target_dir(spec.name)
    if script:
        if "/" in script or script.startswith((".", "-")):
            raise InvalidName(
                f"workload {script!r}: name a file in targets/{spec.name}/ "
                "(e.g. workload-ingest.sh)"
            )
        path = inside(target_dir, script)
        if not path.is_file():
            known = sorted(p.name for p in target_dir.glob("workload*"))
            raise InvalidName(
                f"no workload {script!r} in targets/{spec.name}/; available: {', '.join(known)}"
            )
        return path
    if spec.local.workload:
        return None
    if not spec.workload.script:
        raise TargetSpecError(
            f"target {spec.name} has no '## Workload' script: or '## Local' workload"
        )
    path = inside(workspace.root, spec.workload.script)
    if not path.is_file():
        raise TargetSpecError(
            f"target {spec.name}: workload script {spec.workload.script} is missing"
        )
    return path


def workload_argv(
    spec: TargetSpec, script: Path | None, endpoint: str | None
) -> tuple[list[str], str]:
    """(argv, shell line) of a workload. A service's driver gets the endpoint as its first
    argument; a batch program's command runs in the built tree and is measured."""
    if script is not None:
        argv = ["bash", str(script)]
        shell = f'bash "$WORKLOAD_DIR/{script.name}"'
        if spec.kind == "service":
            argv.append(endpoint or "")
            shell += ' "$ENDPOINT"'
    else:
        assert spec.local.workload is not None
        command = spec.local.workload
        argv = shlex.split(command.replace("{endpoint}", endpoint or ""))
        shell = command.replace("{endpoint}", "$ENDPOINT")
    if spec.kind == "batch":
        argv = ["python3", "-c", MEASURE_PY, *argv]
        shell = f"python3 -c {shlex.quote(MEASURE_PY)} {shell}"
    return argv, shell
