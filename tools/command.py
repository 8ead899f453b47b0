"""target.md command lines, parsed once like a shell: `VAR=value` prefixes, quoting, then argv.

A command runs exactly as written, without a shell: `PYTHONMALLOC=malloc python3 x.py 3`
is the environment {PYTHONMALLOC: malloc} and argv [python3, x.py, 3]; `env VAR=v cmd`
means the same. Pipes, redirections and `&&` need a shell: put them in a workload script.
Placeholders (`{port}`, `{endpoint}`, `{target_dir}`, `{python}`) are substituted per
argument after parsing, so a value with spaces stays one argument.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from pydantic import BaseModel, Field

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.S)
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
_OPERATORS = frozenset({"|", "||", "&", "&&", ";", ";;", "<", ">", ">>", "<<", "(", ")", "|&"})
# a script's interpreter by its extension, when it has no `#!` line
_BY_EXTENSION = {
    ".py": "python3",
    ".sh": "bash",
    ".bash": "bash",
    ".js": "node",
    ".mjs": "node",
    ".rb": "ruby",
    ".pl": "perl",
    ".lua": "lua",
    ".php": "php",
    ".R": "Rscript",
}


class Command(BaseModel):
    """One command line as it runs: the variables it sets, then the program and its args."""

    env: dict[str, str] = Field(default_factory=dict)
    argv: list[str]

    def substitute(self, values: dict[str, str]) -> Command:
        """`{name}` placeholders replaced in every argument and variable."""

        def sub(text: str) -> str:
            for name, value in values.items():
                text = text.replace("{" + name + "}", value)
            return text

        env = {k: sub(v) for k, v in self.env.items()}
        return Command(env=env, argv=[sub(a) for a in self.argv])

    def text(self) -> str:
        """The command line again, as a shell would read it."""
        from autoopt.tools.profiling.detect import join_command

        prefix = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*prefix, join_command(self.argv)])

    def env_argv(self) -> list[str]:
        """argv that sets the variables itself (`env VAR=v cmd`), for a container."""
        if not self.env:
            return list(self.argv)
        return ["env", *(f"{k}={v}" for k, v in self.env.items()), *self.argv]


def parse_command(text: str) -> Command:
    """A command line as a shell splits it; ValueError says what cannot run without a shell."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ValueError(f"cannot parse the command {text!r}: {exc}") from exc
    if any(t in _OPERATORS for t in tokens):
        raise ValueError(
            f"{text!r} needs a shell (pipes, redirections, ; or &&): put it in a workload "
            "script, or write one command as `VAR=value program args`"
        )
    tokens = shlex.split(text)  # the same words, with `a=b;c` kept whole when quoted
    env: dict[str, str] = {}
    while True:
        while tokens and _ASSIGNMENT.fullmatch(tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            env[name] = value
        if tokens and tokens[0] in ("env", "/usr/bin/env", "/bin/env"):
            tokens.pop(0)
            if tokens and tokens[0].startswith("-"):
                raise ValueError(
                    f"{text!r}: env's options ({tokens[0]}) are not supported; write "
                    "`VAR=value program args`"
                )
            continue
        break
    if not tokens:
        raise ValueError(f"{text!r} sets variables but runs no program")
    if not tokens[0].strip():
        raise ValueError(f"{text!r}: the program's name is empty")
    return Command(env=env, argv=tokens)


def is_python_name(program: str) -> bool:
    """python, python3, python3.11 (a bare name or a path ending in one)."""
    return bool(_PYTHON.fullmatch(os.path.basename(program)))


def script_interpreter(path: Path) -> list[str] | None:
    """How a script runs: its `#!` line (through env or not), else its extension; None for
    a file with neither (a binary, or a script the kernel cannot start)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        if words and os.path.basename(words[0]) == "env":
            words = [w for w in words[1:] if not w.startswith("-")]
        return words or None
    by_ext = _BY_EXTENSION.get(path.suffix)
    return [by_ext] if by_ext else None


def resolve(argv: list[str], python: str | None, cwd: Path) -> list[str]:
    """argv with the target's interpreter made explicit: a bare `python3` becomes `python`,
    and a script (argv[0] naming a file) runs by its `#!` line or extension, a Python one
    with `python`. With python None (inside a container) only scripts are resolved."""
    if not argv:
        return argv
    program, rest = argv[0], argv[1:]
    if python and "/" not in program and is_python_name(program):
        return [python, *rest]
    if "/" not in program:
        return argv  # a program found on PATH, as a shell would
    path = Path(program) if os.path.isabs(program) else cwd / program
    if not path.is_file() or is_python_name(program):
        return argv
    runner = script_interpreter(path)
    if runner is None:
        return argv
    if python and is_python_name(runner[0]):
        runner = [python, *runner[1:]]
    return [*runner, program, *rest]
