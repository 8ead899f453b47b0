"""Where profiles live: `results/<target>/<env>/profiles/<label>-*`."""

from __future__ import annotations

import json
from pathlib import Path

from autoopt.tools.errors import AlreadyExists, NotFound
from autoopt.tools.profiling import views
from autoopt.tools.profiling.model import Profile
from autoopt.tools.state import write_atomic
from autoopt.tools.workspace import Workspace, check_name

SUFFIXES = {
    "profile": "profile.json",
    "stacks": "stacks.txt",
    "folded": "folded.txt",
    "speedscope": "speedscope.json",
    "flamegraph": "flamegraph.png",
}


def profiles_dir(ws: Workspace, target: str, env: str) -> Path:
    return ws.results_for(target, env) / "profiles"


def file_of(ws: Workspace, target: str, env: str, label: str, what: str) -> Path:
    check_name(label, "profile label")
    return profiles_dir(ws, target, env) / f"{label}-{SUFFIXES.get(what, what)}"


def check_label_free(ws: Workspace, target: str, env: str, label: str, kind: str) -> None:
    """A label is reused only by a profile of the same kind (re-profiling replaces it)."""
    path = file_of(ws, target, env, label, "profile")
    if path.is_file():
        try:
            old = json.loads(path.read_text()).get("kind")
        except (OSError, ValueError):
            return
        if old != kind:
            raise AlreadyExists(f"label {label!r} already holds a {old} profile of {target}/"
                                f"{env}; choose another label for this {kind} profile")


def save(ws: Workspace, profile: Profile, *, picture: bool = True) -> dict[str, str]:
    """Write the profile and its views; returns {what: path}."""
    folder = profiles_dir(ws, profile.target, profile.env)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def put(what: str, text: str) -> None:
        path = file_of(ws, profile.target, profile.env, profile.label, what)
        write_atomic(path, text)
        out[what] = str(path)

    put("profile", profile.model_dump_json())
    put("stacks", views.stacks_text(profile))
    put("folded", views.folded(profile))
    put("speedscope", views.speedscope_json(profile))
    if picture:
        from autoopt.tools.profiling.flamegraph import render

        png = file_of(ws, profile.target, profile.env, profile.label, "flamegraph")
        out["flamegraph"] = str(render(profile, png))
    return out


def load(ws: Workspace, target: str, env: str, label: str) -> Profile:
    path = file_of(ws, target, env, label, "profile")
    if not path.is_file():
        folder = profiles_dir(ws, target, env)
        known = sorted(p.name.removesuffix("-profile.json")
                       for p in folder.glob("*-profile.json")) if folder.is_dir() else []
        raise NotFound(f"no profile {label!r} for {target}/{env}; stored labels: "
                       f"{', '.join(known) or 'none'} (profile_memory / profile_cpu make them)")
    return Profile.model_validate_json(path.read_text())
