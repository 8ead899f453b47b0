"""The journal: every side effect of a run, as the command that performed it.

Each step keeps what really ran (argv, cwd, the environment variables we set) and the
line a human would type, written with the variables of the generated scripts
(`$TREE`, `$PORT`, `$ENDPOINT`, `$PID`, `$CONTAINER`, ...). Reproducible scripts are
rendered from these steps, never from assumptions.
"""

from __future__ import annotations

import shlex
import time
from typing import Literal

from pydantic import BaseModel, Field

Phase = Literal["source", "build", "deploy", "workload", "collect", "teardown", "profile"]


class Step(BaseModel):
    """One command, as executed and as a person would type it."""

    phase: Phase
    shell: str = Field(description="the line a human types, using the scripts' variables")
    argv: list[str] = Field(
        default_factory=list, description="what really ran (empty for API calls)"
    )
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="variables set for the step")
    arm: str | None = None
    run: int | None = None
    started: float = Field(default_factory=time.time)
    elapsed_s: float | None = None
    exit_code: int | None = None
    note: str | None = None


class Journal(BaseModel):
    """An ordered list of steps; owned by one build, deployment or A/B run."""

    steps: list[Step] = Field(default_factory=list)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def extend(self, other: Journal, *, arm: str | None = None, run: int | None = None) -> None:
        for step in other.steps:
            update = {k: v for k, v in (("arm", arm), ("run", run)) if v is not None}
            self.steps.append(step.model_copy(update=update))


def shell_join(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
