"""Workloads: which command drives a target, and the `key=value` metrics it prints."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

from autoopt.tools.backends.base import Deployment
from autoopt.tools.command import Command, parse_command, resolve
from autoopt.tools.errors import InvalidName, TargetSpecError
from autoopt.tools.profiling.detect import join_command
from autoopt.tools.targets import TargetSpec
from autoopt.tools.workspace import Workspace, inside

_METRIC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")

# The one-liner that measures a batch program from wait4 (RUSAGE_CHILDREN): peak RSS in
# MiB, CPU and wall seconds, in a form a clean shell can run: only a python is needed.
# Leading VAR=value arguments are the program's environment (not the wrapper's).
MEASURE_PY = (
    "import os,re,resource,subprocess,sys,time;a=sys.argv[1:];e=dict(os.environ);"
    "n=next((i for i,x in enumerate(a) if not re.match('[A-Za-z_][A-Za-z0-9_]*=',x)),len(a));"
    "e.update(x.split('=',1) for x in a[:n]);"
    "t=time.monotonic();r=subprocess.run(a[n:],env=e);t=time.monotonic()-t;"
    "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
    "print('peak_rss_mb=%.3f' % (u.ru_maxrss/1024));"
    "print('cpu_s=%.3f' % (u.ru_utime+u.ru_stime));"
    "print('wall_s=%.3f' % t);"
    "sys.exit(r.returncode)"
)

# `instructions`: the program under cachegrind (no cache simulation: only the instruction
# count), children followed, every process's count summed from its out file. Valgrind runs
# the program ~20-50x slower: wall and CPU time and peak RSS of such a run measure valgrind.
INSTRUCTIONS = "instructions"
COUNT_PY = (
    "import glob,shutil,subprocess,sys,tempfile\n"
    "d=tempfile.mkdtemp(prefix='cachegrind-')\n"
    "r=subprocess.run(['valgrind','-q','--tool=cachegrind','--cache-sim=no',"
    "'--trace-children=yes','--cachegrind-out-file='+d+'/cg.%p']+sys.argv[1:])\n"
    "n=sum(int(x.split()[1]) for f in glob.glob(d+'/cg.*') for x in open(f)"
    " if x.startswith('summary:'))\n"
    "shutil.rmtree(d)\n"
    "print('instructions=%d' % n)\n"
    "sys.exit(r.returncode)"
)


def counts_instructions(spec: TargetSpec) -> bool:
    """Whether the target declares `instructions` (primary or secondary metric)."""
    return INSTRUCTIONS in (spec.primary.name, *spec.secondary)


def is_metric(line: str) -> bool:
    """A `key=number` line (what parse_metrics reads)."""
    return _METRIC.match(line) is not None


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


def output_lines(text: str, lines: int = 20, width: int = 200) -> list[str]:
    """The last lines that are not `key=number` metrics, each cut to `width` (for a person
    checking the program's output)."""
    kept = [ln[:width] for ln in text.splitlines() if ln.strip() and not _METRIC.match(ln)]
    return kept[-lines:]


def named_files(spec: TargetSpec, target_dir: Path) -> list[Path]:
    """Files of the target's folder that its workload, build or run command names as
    {target_dir}/... (a record copies them, so its scripts replay without the workspace)."""
    words: list[str] = []
    for text in (spec.local.workload, spec.local.build, spec.local.run):
        if text:
            cmd = parse_command(text)
            words += [*cmd.argv, *cmd.env.values()]
    found = []
    for word in words:
        for rel in re.findall(r"\{target_dir\}/([^\s:'\"]+)", word):
            path = target_dir / rel
            if path.is_file() and path.resolve().is_relative_to(target_dir.resolve()):
                found.append(path)
    return found


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


def host_python(spec: TargetSpec) -> str:
    """The target's interpreter on this machine (target.md's `python:`, else python3)."""
    from autoopt.tools.interpreter import find

    return find(spec.local.python).path


def program(
    text: str, values: dict[str, str], *, python: str | None, cwd: Path
) -> Command:
    """A target.md command as it runs: placeholders substituted, the interpreter explicit."""
    cmd = parse_command(text).substitute(values)
    return Command(env=cmd.env, argv=resolve(cmd.argv, python, cwd))


def workload_argv(
    spec: TargetSpec,
    script: Path | None,
    deployment: Deployment,
    target_dir: Path,
    seed: str = "0",
) -> tuple[Command, str]:
    """(command, shell line) of a workload. A service's driver gets the endpoint as its
    first argument and runs on this machine; a batch program's command runs in the built
    tree and is measured, in the arm's container on the container backends. On this
    machine, the target's interpreter runs Python; in a container, the image's. `seed`
    (run_ab's per-block seed; 0 elsewhere) is AUTOOPT_BLOCK_SEED and `{block_seed}`."""
    endpoint = deployment.endpoint
    on_host = deployment.backend == "local" or spec.kind == "service"
    cwd = Path(deployment.tree) if spec.kind == "batch" and deployment.tree else None
    python = host_python(spec) if on_host else None
    if script is not None:
        runner = resolve([str(script)], python, script.parent)
        if runner == [str(script)]:
            runner = ["bash", str(script)]  # no #! line and no known extension
        cmd = Command(env={"AUTOOPT_BLOCK_SEED": seed}, argv=runner)
        shell = f"AUTOOPT_BLOCK_SEED={seed} {join_command(runner[:-1])}"
        shell += f' "$WORKLOAD_DIR/{script.name}"'
        if spec.kind == "service":
            cmd.argv.append(endpoint or "")
            shell += ' "$ENDPOINT"'
    else:
        assert spec.local.workload is not None
        values = {"endpoint": endpoint or "", "target_dir": str(target_dir), "block_seed": seed}
        if python:
            values["python"] = python
        cmd = program(spec.local.workload, values, python=python, cwd=cwd or target_dir)
        cmd.env = {"AUTOOPT_BLOCK_SEED": seed, **cmd.env}
        shell = cmd.text().replace(str(target_dir), '"$WORKLOAD_DIR"')  # the record's copy
        shell = shell.replace(endpoint, "$ENDPOINT") if endpoint else shell
    if spec.kind == "batch":  # the program's variables go to it, not to the wrapper
        measure = python or "python3"
        counter: list[str] = []
        if counts_instructions(spec) and deployment.backend == "local":
            _need_valgrind(spec)
            counter = [measure, "-c", COUNT_PY]
            shell = f"{measure} -c {shlex.quote(COUNT_PY)} {shell}"
        shell = f"{measure} -c {shlex.quote(MEASURE_PY)} {shell}"
        assignments = [f"{k}={v}" for k, v in cmd.env.items()]
        cmd = Command(argv=[measure, "-c", MEASURE_PY, *assignments, *counter, *cmd.argv])
    return cmd, shell


def _need_valgrind(spec: TargetSpec) -> None:
    import shutil

    if shutil.which("valgrind") is None:
        raise TargetSpecError(
            f"target {spec.name} declares the metric instructions, counted with valgrind "
            "--tool=cachegrind, and valgrind is not installed (apt-get install valgrind)"
        )
