"""The workspace: one directory holding targets/ and results/, plus the server's state.

Nothing a client passes may reach outside it: names are validated, paths are resolved
and checked to stay below their root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from autoopt.tools.errors import InvalidName, TargetNotFound

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")


def check_name(value: str, what: str = "name") -> str:
    """Return `value` if it is a safe name, else raise InvalidName saying the rule."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise InvalidName(
            f"invalid {what} {value!r}: use lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return value


def inside(root: Path, relative: str) -> Path:
    """Resolve `relative` below `root`, refusing anything that escapes it."""
    if not relative or "\x00" in relative or os.path.isabs(relative):
        raise InvalidName(f"path {relative!r} must be relative to {root.name}/")
    resolved = (root / relative).resolve()
    base = root.resolve()
    if resolved != base and base not in resolved.parents:
        raise InvalidName(f"path {relative!r} leaves {root.name}/; give a path inside it")
    return resolved


def default_root() -> Path:
    """AUTOOPT_WORKSPACE, else the checkout this code runs from."""
    env = os.environ.get("AUTOOPT_WORKSPACE")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. State (sources, builds, runs) lives under .autoopt/."""

    root: Path

    @classmethod
    def from_env(cls) -> Workspace:
        return cls(default_root())

    @property
    def targets_dir(self) -> Path:
        return self.root / "targets"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def state_dir(self) -> Path:
        env = os.environ.get("AUTOOPT_STATE_DIR")
        return Path(env).resolve() if env else self.root / ".autoopt"

    def target_dir(self, name: str) -> Path:
        check_name(name, "target name")
        path = self.targets_dir / name
        if not (path / "target.md").is_file():
            known = ", ".join(self.target_names()) or "none"
            raise TargetNotFound(
                f"unknown target {name!r}: no targets/{name}/target.md in {self.root}. "
                f"Known targets: {known}. Call list_targets to see them."
            )
        return path

    def target_names(self) -> list[str]:
        if not self.targets_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.targets_dir.iterdir()
            if (p / "target.md").is_file() and NAME_RE.fullmatch(p.name)
        )

    def results_for(self, target: str, env: str) -> Path:
        check_name(target, "target name")
        check_name(env, "environment name")
        return self.results_dir / target / env

    def state(self, *parts: str) -> Path:
        path = self.state_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
