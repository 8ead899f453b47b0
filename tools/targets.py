"""target.md: the seed's format, read unchanged, plus sections of our own.

The seed's sections hold `key: value` lines and `- item` lists (`## Source`, `## Build`,
`## Primary Metric`, `## Secondary Metrics`, `## Workload`, `## Scope`, `## Constraints`,
`## Service`, `## Profiling`). Ours: `## Local` (how the target builds and runs as a local
process, and its kind: service or batch), `## Docker`, `## Kubernetes`, `## Decision`.

The parser is total: any bytes give a TargetSpec or a TargetSpecError naming file:line (a
file over 256 KiB, bytes that are not UTF-8, control characters, a section or key given
twice, a number that is not finite or out of range, a path outside the workspace).
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from autoopt.tools.errors import TargetSpecError
from autoopt.tools.workspace import Workspace

Direction = Literal["lower", "higher"]
Kind = Literal["service", "batch"]
LatencyEstimator = Literal["p99", "median_of_windows", "trimmed"]  # stats.latency_estimate

MAX_BYTES = 256 * 1024
"""The largest target.md read (a page of settings; a bigger file is refused unread)."""
MAX_SECONDS = 7 * 86400.0
"""The longest duration or timeout target.md may give (a week)."""
Finite = Annotated[float, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Guardrail(BaseModel):
    """A constraint from target.md, checked on every A/B run."""

    metric: str
    rule: Literal["max_increase_pct", "max_decrease_pct", "remain"]
    value: Finite
    text: str

    @property
    def direction(self) -> Direction:
        """Which way is better, as the rule implies it (a floor on a decrease: higher)."""
        return "higher" if self.rule == "max_decrease_pct" else "lower"


BUILTIN_METRICS: dict[str, Direction] = {
    "peak_rss_mb": "lower",
    "cpu_s": "lower",
    "wall_s": "lower",
    "restarts": "lower",
}
"""What the server measures on every backend, whatever the workload prints (restarts is 0
for a local process, which cannot restart)."""
CONTAINER_METRICS: dict[str, Direction] = {"oom_killed": "lower"}
CONTAINER_BACKENDS = frozenset({"docker", "kubernetes"})
SEED_ALIASES = {"pod_restarts": "restarts"}
"""The seed's names for built-ins: its 'pod_restarts must remain 0' is `restarts` on every
backend."""


def builtin_metrics(backend: str) -> dict[str, Direction]:
    """The metrics the server itself adds to every sample on `backend`."""
    extra = CONTAINER_METRICS if backend in CONTAINER_BACKENDS else {}
    return {**BUILTIN_METRICS, **extra}


def guess_direction(metric: str) -> Direction:
    """For a metric nothing declares a direction for (run_ab's metric=, a bare secondary)."""
    higher = ("qps", "throughput", "ops", "per_s", "rps", "hit")
    return "higher" if any(h in metric for h in higher) else "lower"


SourceKind = Literal["local", "git", "pypi", "debian"]


class SourceSpec(BaseModel):
    """Where a target's code comes from; every kind becomes a commit in the server's repo."""

    repo: str = Field("local", description="git URL, or 'local' for a tree in the workspace")
    branch: str = "main"
    path: str | None = Field(None, description="the tree to import when repo is 'local'")
    commit: str | None = Field(None, description="git: the commit or tag to start from")
    pypi: str | None = Field(None, description="a distribution on the package index: name==version")
    debian: str | None = Field(None, description="a Debian source package: name or name=version")
    dist: Literal["sdist", "wheel"] | None = Field(None, description="pypi: force this archive")

    @property
    def kind(self) -> SourceKind:
        if self.pypi:
            return "pypi"
        if self.debian:
            return "debian"
        return "local" if self.repo == "local" else "git"


class BuildSpec(BaseModel):
    dockerfile: str | None = None
    timeout_s: Seconds = 600.0
    args: dict[str, str] = Field(default_factory=dict)
    incremental: bool = Field(
        False, description="local: build in a persistent build-cache slot (tools/buildcache.py)"
    )
    fetches: list[str] = Field(
        default_factory=list, description="hosts the Dockerfile downloads from while it builds"
    )


class MetricSpec(BaseModel):
    name: str
    direction: Direction
    unit: str = ""


class WorkloadSpec(BaseModel):
    description: str = ""
    warmup_s: Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)] = 0.0
    duration_s: Seconds | None = None
    timeout_s: Seconds | None = Field(
        None, description="one timed run's limit (default: tools/timeouts.py)"
    )
    script: str | None = None
    concurrency: Annotated[int, Field(ge=1, le=100_000)] | None = None


class ScopeSpec(BaseModel):
    editable: list[str] = Field(default_factory=list)
    readonly: list[str] = Field(default_factory=list)


class LocalSpec(BaseModel):
    """How the target builds and runs as a local process (cwd: the built source tree)."""

    build: str | None = None
    run: str | None = Field(None, description="service start command; {port} is substituted")
    health: str | None = Field(None, description="HTTP path probed on the service")
    health_cmd: str | None = Field(
        None, description="or a command that exits 0 once the service is ready; {port} set"
    )
    health_timeout_s: Seconds = 30.0
    workload: str | None = Field(None, description="overrides the Workload script")
    python: str | None = Field(
        None, description="the Python interpreter of every command (default: python3 on PATH)"
    )
    measure_children: bool = Field(
        False,
        description="add the VmHWM of the service's live child processes (workers) at collect "
        "time: an upper bound on the process tree's peak",
    )


class CorrectnessSpec(BaseModel):
    """What must not change (`## Correctness`): the workload's output, and the tests."""

    output: Literal["stdout", "checks", "none"] | None = Field(
        None,
        description="stdout: every non-metric line (batch default); checks: `check: ...` and "
        "`digest=` lines (service default); none: not compared",
    )
    ignore: list[str] = Field(default_factory=list, description="regexes blanked in each line")
    tests: str | None = Field(None, description="test command, run once per arm build")
    tests_timeout_s: Seconds = 300.0

    def mode(self, kind: Kind) -> str:
        return self.output or ("stdout" if kind == "batch" else "checks")


class DockerSpec(BaseModel):
    base_image_arg: str | None = "BASE_IMAGE"
    memory: str | None = None
    cpus: Annotated[float, Field(gt=0, le=4096, allow_inf_nan=False)] | None = None


class KubernetesSpec(BaseModel):
    manifest: str | None = None
    memory: str | None = None
    cpu: str | None = None


class TargetSpec(BaseModel):
    """Everything the server knows about one target."""

    name: str
    kind: Kind
    source: SourceSpec
    build: BuildSpec
    primary: MetricSpec
    secondary: list[str] = Field(default_factory=list)
    secondary_directions: dict[str, Direction] = Field(
        default_factory=dict, description="from a note: '- throughput_qps (higher is better)'"
    )
    workload: WorkloadSpec
    scope: ScopeSpec
    guardrails: list[Guardrail] = Field(default_factory=list)
    service_port: Port | None = None
    profiling: list[str] = Field(default_factory=list)
    local: LocalSpec
    correctness: CorrectnessSpec = Field(default_factory=CorrectnessSpec)
    docker: DockerSpec = Field(default_factory=DockerSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    min_effect_pct: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = 1.0
    latency_estimator: LatencyEstimator = Field(
        "p99", description="## Decision: how a run's *_p99* metric is taken from the latencies"
    )

    def latency_metric(self) -> str | None:
        """The declared metric a `latency_estimator:` other than p99 replaces: the first
        declared one named *_p99*, when the workload writes AUTOOPT_LATENCY_FILE."""
        if self.latency_estimator == "p99":
            return None
        names = [self.primary.name, *self.secondary, *(g.metric for g in self.guardrails)]
        return next((n for n in names if "_p99" in n), None)

    def declared_metrics(self, backend: str) -> dict[str, Direction]:
        """Every metric an A/B run compares, with its direction: the primary, the secondary
        metrics, the guardrails' metrics and the built-ins. Anything else a workload prints
        is recorded but not compared."""
        out = builtin_metrics(backend)
        for g in self.guardrails:
            out.setdefault(g.metric, g.direction)
        for name in self.secondary:
            declared = self.secondary_directions.get(name)
            out[name] = declared or out.get(name) or guess_direction(name)
        out[self.primary.name] = self.primary.direction
        return out

    def is_editable(self, path: str) -> bool:
        """True when `path` (relative to the source root) may be changed: in the editable
        scope, not read-only, and not a file the workload or the tests name (a patch may
        never change the measurement)."""
        in_scope = any(glob_matches(path, g) for g in self.scope.editable)
        protected = [*self.scope.readonly, *self.harness_paths()]
        return in_scope and not any(glob_matches(path, g) for g in protected)

    def harness_paths(self) -> list[str]:
        """What the measurement reads in the tree, which no patch may change: the files
        the workload command names besides its program (its data), and with a test
        command, the tests (what it names, and test_*.py, *_test.py, tests/, test/)."""
        from autoopt.tools.command import is_python_name, parse_command

        def paths(words: list[str]) -> list[str]:
            out = []
            for word in words:
                rel = word.removeprefix("./").split("::")[0]
                if rel and not rel.startswith(("-", "/", "{")) and "=" not in rel and (
                    "/" in rel or "." in rel
                ):
                    out.append(rel)
            return out

        found = []
        if self.local.workload:
            argv = parse_command(self.local.workload).argv
            program = 2 if is_python_name(argv[0]) else 1  # the program is the code itself
            found += paths(argv[program:])
        if self.correctness.tests:
            argv = parse_command(self.correctness.tests).argv
            found += paths(argv[1:])
            found += [a + ".py" for a in argv[1:] if a.isidentifier() and a.startswith("test")]
            found += ["test_*.py", "*/test_*.py", "*_test.py", "*/*_test.py", "tests/", "test/"]
        return found


def glob_matches(path: str, glob: str) -> bool:
    """fnmatch, where a glob naming a directory (`dir/` or `dir`) covers everything below."""
    path = path.removeprefix("./")
    if glob.endswith("/"):
        return path.startswith(glob)
    return fnmatchcase(path, glob) or path.startswith(glob.rstrip("/") + "/")


_CONSTRAINTS: list[tuple[re.Pattern[str], str | None]] = [
    (
        re.compile(
            r"(?P<m>[\w.]+) must not (?P<dir>increase|decrease) by more than "
            r"(?P<v>[0-9]+(?:\.[0-9]+)?)\s*%(?: from baseline)?\.?",
            re.I,
        ),
        None,
    ),
    (
        re.compile(r"(?P<m>[\w.]+) must (?:remain|stay|be) (?P<v>-?[0-9]+(?:\.[0-9]+)?)\.?", re.I),
        "remain",
    ),
]


def parse_constraint(text: str) -> Guardrail | None:
    """A guardrail from one constraint sentence, or None if it is not understood
    (ValueError: its number is not finite)."""
    for pattern, rule in _CONSTRAINTS:
        m = pattern.fullmatch(text.strip())
        if m:
            kind = rule or f"max_{m['dir'].lower()}_pct"
            metric = SEED_ALIASES.get(m["m"], m["m"])
            value = float(m["v"])
            if not math.isfinite(value):
                raise ValueError(f"{_shown(m['v'])} is too large")
            return Guardrail(metric=metric, rule=kind, value=value, text=text.strip())
    return None


_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"


def parse_duration(value: str) -> float:
    """Seconds from '30', '30s', '500ms', '2m', '1h' (ValueError otherwise)."""
    m = re.fullmatch(rf"\s*({_NUMBER})\s*(ms|s|m|min|h)?\s*", value)
    if not m:
        raise ValueError(f"not a duration: {_shown(value)} (use e.g. 30, 30s, 2m)")
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[m[2]]
    return float(m[1]) * scale


def parse_number(value: str) -> float:
    """A decimal number, '%' allowed after it (ValueError otherwise: no inf, nan, 1_000)."""
    if not re.fullmatch(rf"\s*{_NUMBER}\s*%?\s*", value):
        raise ValueError(f"not a number: {_shown(value)}")
    return float(value.strip().rstrip("%"))


def _cut(text: str, limit: int = 200) -> str:
    """`text`, cut to `limit` characters (an error never echoes a whole line or file)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _shown(text: str, limit: int = 80) -> str:
    """repr of `text`, cut to `limit` characters."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"


KNOWN_SECTIONS = frozenset(
    {
        "source",
        "build",
        "primary metric",
        "secondary metrics",
        "workload",
        "scope",
        "constraints",
        "service",
        "profiling",
        "local",
        "docker",
        "kubernetes",
        "decision",
        "correctness",
    }
)


class _Section:
    def __init__(self, name: str, line: int) -> None:
        self.name = name
        self.line = line
        self.values: dict[str, tuple[str, int]] = {}
        self.items: list[tuple[str, int]] = []
        self.lists: dict[str, list[tuple[str, int]]] = {}


def _strip_note(item: str) -> str:
    """'chromadb/ (Python layer)' -> 'chromadb/'; '(none)' -> '' (a trailing '(...)' with
    no ')' inside, found without a regex: linear in the length)."""
    item = item.rstrip()
    if item.endswith(")"):
        start = item.find("(", item.rfind(")", 0, -1) + 1)
        if start >= 0:
            return item[:start].strip()
    return item.strip()


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def read_text(file: Path) -> str:
    """target.md's text: a regular file of at most MAX_BYTES, UTF-8 (a BOM is dropped)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the server
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise TargetSpecError(f"{file}: not a regular file")
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise TargetSpecError(f"{file}: cannot read it: {exc.strerror or exc}") from exc
    if len(data) > MAX_BYTES:
        raise TargetSpecError(
            f"{file}: over {MAX_BYTES // 1024} KiB, not read; a target.md is a page of settings"
        )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise TargetSpecError(
            f"{file}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "save target.md as UTF-8"
        ) from exc


def _sections(text: str, file: Path) -> dict[str, _Section]:
    """The sections by lowercase name; lines are split on '\\n' only (a '\\r' before it
    is dropped), so the numbers are an editor's."""
    sections: dict[str, _Section] = {}
    current: _Section | None = None
    list_key: str | None = None
    keys: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if bad := _CONTROL.search(raw):
            raise TargetSpecError(
                f"{file}:{number}: control character U+{ord(bad[0]):04X} at column "
                f"{bad.start() + 1}"
            )
        line = raw.rstrip()
        if not line.strip() or line.startswith("# "):
            continue
        if line.startswith("## "):
            name = line[3:].strip().lower()
            if name in KNOWN_SECTIONS and name in sections:
                raise TargetSpecError(
                    f"{file}:{number}: '## {name.title()}' again (first at line "
                    f"{sections[name].line}); give each section once"
                )
            current = sections.setdefault(name, _Section(name, number))
            list_key, keys = None, {}
            continue
        if current is None:
            raise TargetSpecError(f"{file}:{number}: text before the first '## ' section")
        stripped = line.strip()
        if stripped.startswith("- "):
            item = (stripped[2:].strip(), number)
            if list_key is not None and raw[:1].isspace():
                current.lists[list_key].append(item)
            else:
                list_key = None
                current.items.append(item)
            continue
        key, sep, value = stripped.partition(":")
        if current.name not in KNOWN_SECTIONS:
            continue  # a section of prose (## Notes, ...): for people, not parsed
        if not sep or not re.fullmatch(r"[\w -]+", key):
            if current.name in {"profiling", "workload"}:
                current.items.append((stripped, number))
                continue
            raise TargetSpecError(
                f"{file}:{number}: expected 'key: value' or '- item': {_shown(line)}"
            )
        key = key.strip().lower().replace(" ", "_")
        if key in keys:
            raise TargetSpecError(
                f"{file}:{number}: {key} given twice in '## {current.name.title()}' (first at "
                f"line {keys[key]})"
            )
        keys[key] = number
        if value.strip():
            current.values[key] = (value.strip(), number)
            list_key = None
        else:
            current.lists[key] = []
            list_key = key
    return sections


class _Reader:
    """Typed access to the sections, with errors that name the file and line."""

    def __init__(self, file: Path, sections: dict[str, _Section]) -> None:
        self.file = file
        self.sections = sections

    def value(self, section: str, key: str, default: str | None = None) -> str | None:
        sec = self.sections.get(section)
        return sec.values[key][0] if sec and key in sec.values else default

    def line(self, section: str, key: str | None = None) -> int:
        sec = self.sections.get(section)
        if sec and key and key in sec.values:
            return sec.values[key][1]
        return sec.line if sec else 1

    def need(self, section: str, key: str) -> str:
        got = self.value(section, key)
        if got is None:
            raise TargetSpecError(
                f"{self.file}:{self.line(section)}: section '## {section.title()}' "
                f"needs '{key}: ...'"
            )
        return got

    def number(
        self,
        section: str,
        key: str,
        low: float,
        high: float,
        *,
        above: bool = False,
        integer: bool = False,
        parse: Callable[[str], float] = parse_number,
    ) -> float | None:
        """The value as a finite number in [low, high] ((low, high] when `above`), or None
        when the key is absent; TargetSpecError naming the line otherwise."""
        got = self.value(section, key)
        if got is None:
            return None
        where = f"{self.file}:{self.line(section, key)}: {key}"
        try:
            value = parse(got)
        except ValueError as exc:
            raise TargetSpecError(f"{where}: {exc}") from exc
        fits = (low < value if above else low <= value) and value <= high  # False for nan
        if not fits or (integer and not value.is_integer()):
            what = "an integer" if integer else "a number"
            raise TargetSpecError(
                f"{where}: {_shown(got)} is not {what} {'>' if above else '>='} {low:g} "
                f"and <= {high:g}"
            )
        return value

    def duration(self, section: str, key: str, *, zero: bool = False) -> float | None:
        """Seconds, finite, > 0 (>= 0 with `zero`), at most MAX_SECONDS."""
        return self.number(section, key, 0, MAX_SECONDS, above=not zero, parse=parse_duration)

    def path(self, section: str, key: str) -> str | None:
        """A path relative to the workspace, inside it (no '..', not absolute)."""
        got = self.value(section, key)
        if got is None:
            return None
        parts = PurePosixPath(got).parts
        where = f"{self.file}:{self.line(section, key)}: {key}: {_shown(got)}"
        if got.startswith(("/", "~")) or ".." in parts:
            raise TargetSpecError(f"{where} must be a path inside the workspace, relative to it")
        if len(got) > 1024 or any(len(p.encode()) > 255 for p in parts):
            raise TargetSpecError(f"{where} is too long for a path")
        return got

    def choice(self, section: str, key: str, default: str, allowed: tuple[str, ...]) -> str:
        got = (self.value(section, key) or default).lower()
        if got not in allowed:
            raise TargetSpecError(
                f"{self.file}:{self.line(section, key)}: {key} must be one of "
                f"{' | '.join(allowed)}, not {got!r}"
            )
        return got

    def items(self, section: str) -> list[tuple[str, int]]:
        sec = self.sections.get(section)
        return sec.items if sec else []

    def sublist(self, section: str, key: str) -> list[tuple[str, int]]:
        sec = self.sections.get(section)
        return sec.lists.get(key, []) if sec else []


def _guardrails(r: _Reader) -> list[Guardrail]:
    guardrails = []
    for sentence, line in r.items("constraints"):
        try:
            guardrail = parse_constraint(sentence)
        except ValueError as exc:
            raise TargetSpecError(f"{r.file}:{line}: constraint: {exc}") from exc
        if guardrail is None:
            raise TargetSpecError(
                f"{r.file}:{line}: constraint not understood: {_shown(sentence)}. Write "
                "'X must not increase by more than P% from baseline', "
                "'X must not decrease by more than P% from baseline' or 'X must remain V'."
            )
        guardrails.append(guardrail)
    return guardrails


def _secondary(r: _Reader) -> tuple[list[str], dict[str, Direction]]:
    """'- name' or '- name (higher is better)': the names and the declared directions."""
    names: list[str] = []
    directions: dict[str, Direction] = {}
    for item, _ in r.items("secondary metrics"):
        bare = _strip_note(item)
        if not bare:
            continue
        name = SEED_ALIASES.get(bare, bare)
        note = item[len(bare) :].lower()
        if "higher" in note or "lower" in note:
            directions[name] = "higher" if "higher" in note else "lower"
        names.append(name)
    return names, directions


def _build_args(r: _Reader) -> dict[str, str]:
    args = {}
    for item, line in r.sublist("build", "args"):
        key, sep, val = item.partition("=")
        if not sep:
            raise TargetSpecError(
                f"{r.file}:{line}: build arg must be KEY=VALUE: {_shown(item)}"
            )
        args[key.strip()] = val.strip()
    return args


HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?")


def _hosts(r: _Reader, section: str, key: str) -> list[str]:
    """A comma-separated list of host or host:port names."""
    hosts = [h.strip() for h in (r.value(section, key) or "").split(",") if h.strip()]
    for host in hosts:
        if not HOST.fullmatch(host):
            raise TargetSpecError(
                f"{r.file}:{r.line(section, key)}: {key}: {_shown(host)} is not a host name "
                "(host or host:port, comma-separated)"
            )
    return hosts


def _correctness(r: _Reader) -> CorrectnessSpec:
    from autoopt.tools.command import parse_command

    ignore = []
    for item, line in r.sublist("correctness", "ignore"):
        pattern = item.strip().strip("'\"")
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as exc:  # a{9999999999}, (((((...
            why = exc if isinstance(exc, re.error) else type(exc).__name__
            raise TargetSpecError(
                f"{r.file}:{line}: ignore: bad regex {_shown(pattern)}: {why}"
            ) from exc
        ignore.append(pattern)
    tests = r.value("correctness", "tests")
    if tests:
        try:
            parse_command(tests)
        except ValueError as exc:
            where = r.line("correctness", "tests")
            raise TargetSpecError(f"{r.file}:{where}: tests: {_cut(str(exc))}") from exc
    output = r.value("correctness", "output")
    return CorrectnessSpec(
        output=r.choice("correctness", "output", "", ("stdout", "checks", "none"))  # type: ignore[arg-type]
        if output
        else None,
        ignore=ignore,
        tests=tests,
        tests_timeout_s=_or(r.duration("correctness", "tests_timeout"), 300.0),
    )


def _source(r: _Reader) -> SourceSpec:
    pypi, debian = r.value("source", "pypi"), r.value("source", "debian")
    if pypi and debian:
        raise TargetSpecError(f"{r.file}:{r.line('source')}: give pypi: or debian:, not both")
    from autoopt.tools import fetch

    try:
        if pypi:
            fetch.pypi_pin(pypi)
        if debian and not fetch.DEBIAN_PIN.fullmatch(debian.strip()):
            raise TargetSpecError(f"debian: {debian!r} is not a package name or name=version")
    except TargetSpecError as exc:
        raise TargetSpecError(f"{r.file}:{r.line('source')}: {exc}") from exc
    dist = r.value("source", "dist")
    if dist and not pypi:
        raise TargetSpecError(f"{r.file}:{r.line('source', 'dist')}: dist: needs pypi:")
    return SourceSpec(
        repo=r.value("source", "repo") or ("local" if pypi or debian else r.need("source", "repo")),
        branch=r.value("source", "branch") or "main",
        path=r.path("source", "path"),
        commit=r.value("source", "commit"),
        pypi=pypi,
        debian=debian,
        dist=r.choice("source", "dist", "", ("sdist", "wheel")) if dist else None,  # type: ignore[arg-type]
    )


def parse_target(path: Path) -> TargetSpec:
    """Parse targets/<name>/target.md; errors name the file and line."""
    file = path / "target.md"
    r = _Reader(file, _sections(read_text(file), file))

    def globs(key: str) -> list[str]:
        return [g for g in (_strip_note(item) for item, _ in r.sublist("scope", key)) if g]

    port = r.number("service", "port", 1, 65535, integer=True)
    concurrency = r.number("workload", "concurrency", 1, 100_000, integer=True)
    secondary, secondary_directions = _secondary(r)
    _check_commands(r)
    try:
        return TargetSpec(
            name=path.name,
            kind=r.choice("local", "kind", "service", ("service", "batch")),  # type: ignore[arg-type]
            source=_source(r),
            build=BuildSpec(
                dockerfile=r.path("build", "dockerfile"),
                timeout_s=_or(r.duration("build", "build_timeout"), 600.0),
                args=_build_args(r),
                incremental=r.choice("build", "incremental", "false", ("true", "false")) == "true",
                fetches=_hosts(r, "build", "fetches"),
            ),
            primary=MetricSpec(
                name=r.need("primary metric", "name"),
                direction=r.choice("primary metric", "direction", "", ("lower", "higher")),  # type: ignore[arg-type]
                unit=r.value("primary metric", "unit") or "",
            ),
            secondary=secondary,
            secondary_directions=secondary_directions,
            workload=WorkloadSpec(
                description=r.value("workload", "description") or "",
                warmup_s=_or(r.duration("workload", "warmup", zero=True), 0.0),
                duration_s=r.duration("workload", "duration"),
                timeout_s=r.duration("workload", "timeout"),
                script=r.path("workload", "script"),
                concurrency=None if concurrency is None else int(concurrency),
            ),
            scope=ScopeSpec(editable=globs("editable"), readonly=globs("readonly")),
            guardrails=_guardrails(r),
            service_port=None if port is None else int(port),
            profiling=[i for i, _ in r.items("profiling")],
            local=LocalSpec(
                build=r.value("local", "build"),
                run=r.value("local", "run"),
                health=r.value("local", "health"),
                health_cmd=r.value("local", "health_cmd"),
                health_timeout_s=_or(r.duration("local", "health_timeout"), 30.0),
                workload=r.value("local", "workload"),
                python=r.value("local", "python"),
                measure_children=(r.value("local", "measure_children") or "").lower() == "true",
            ),
            correctness=_correctness(r),
            docker=DockerSpec(
                base_image_arg=r.value("docker", "base_image_arg", "BASE_IMAGE"),
                memory=r.value("docker", "memory"),
                cpus=r.number("docker", "cpus", 0, 4096, above=True),
            ),
            kubernetes=KubernetesSpec(
                manifest=r.path("kubernetes", "manifest"),
                memory=r.value("kubernetes", "memory"),
                cpu=r.value("kubernetes", "cpu"),
            ),
            min_effect_pct=_or(r.number("decision", "min_effect_pct", 0, 100), 1.0),
            latency_estimator=r.choice(  # type: ignore[arg-type]
                "decision", "latency_estimator", "p99", ("p99", "median_of_windows", "trimmed")
            ),
        )
    except ValueError as exc:  # pydantic's ValidationError: a check above is missing
        raise TargetSpecError(f"{file}: {_cut(str(exc), 400)}") from exc


def _or(value: float | None, default: float) -> float:
    """`value` unless absent (0 stays 0, unlike `value or default`)."""
    return default if value is None else value


def _check_commands(r: _Reader) -> None:
    """Every command parses (VAR=value prefixes, quoting, no shell operators)."""
    from autoopt.tools.command import parse_command

    if r.value("local", "health") and r.value("local", "health_cmd"):
        raise TargetSpecError(
            f"{r.file}:{r.line('local', 'health_cmd')}: give health: (an HTTP path) or "
            "health_cmd: (a command), not both"
        )
    for key in ("build", "run", "workload", "health_cmd"):
        text = r.value("local", key)
        if text is None:
            continue
        try:
            parse_command(text)
        except ValueError as exc:
            raise TargetSpecError(
                f"{r.file}:{r.line('local', key)}: {key}: {_cut(str(exc))}"
            ) from exc


def load_target(workspace: Workspace, name: str) -> TargetSpec:
    """The parsed spec of a target, by name (validated, confined to the workspace)."""
    return parse_target(workspace.target_dir(name))
