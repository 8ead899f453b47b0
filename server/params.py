"""Argument types and tool annotations shared by the server's tool modules."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp_types import ToolAnnotations
from pydantic import Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
ACTS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
STOPS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)

TargetName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
Backend = Literal["local", "docker", "kubernetes"]
Env = Annotated[str, Field(pattern=NAME_PATTERN)]
