"""A lean tools/list: the same schemas without what a model never needs to read.

Every property pydantic describes carries a generated `title` ("Run Id" for run_id), every
optional one a `"default": null` and a two-way anyOf, and docstrings keep their
indentation. None of it changes what a client may send or will get back; all of it is paid
for in the context of every conversation that lists the tools. Arguments are still
validated by the tools' pydantic models (which name the rule a bad value breaks), and
answers by their output models, so trimming the advertised copy is safe.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations


def compact_schema(node: Any, *, output: bool = False, field: bool = False) -> Any:
    """The schema without generated titles, null defaults, regex patterns (the server checks
    them and says the rule), and, in output schemas, descriptions; an answer's `X | None`
    field becomes `X` (answers leave out what has no value)."""
    if isinstance(node, list):
        return [compact_schema(item, output=output) for item in node]
    if not isinstance(node, dict):
        return node
    node = _nullable(node, keep_null=not (output and field))
    out = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and (value is None or value is False):  # a flag is off unless given
            continue
        if key in ("pattern", "maxLength", "minLength") and not isinstance(value, dict):
            continue
        if key == "required" and output and isinstance(value, list):
            continue
        if key == "additionalProperties" and value is True:
            continue
        if key == "description" and isinstance(value, str):
            if output:
                continue
            value = " ".join(value.split())
        if key in ("properties", "$defs"):
            out[key] = {
                name: compact_schema(prop, output=output, field=key == "properties")
                for name, prop in value.items()
            }
        else:
            out[key] = compact_schema(value, output=output)
    return out


def _nullable(node: dict[str, Any], *, keep_null: bool) -> dict[str, Any]:
    """`anyOf: [{type: X, ...}, {type: null}]` as `type: X` where null cannot occur: a field
    of an answer (answers leave out what has no value) or an argument that may be omitted.
    Elsewhere the anyOf stays: a type array would be legal JSON Schema, but clients that
    map schemas onto one-type dialects (Gemini's OpenAPI subset) reject it."""
    options = node.get("anyOf")
    if keep_null or not (
        isinstance(options, list) and len(options) == 2 and {"type": "null"} in options
    ):
        return node
    other = next(o for o in options if o != {"type": "null"})
    if not isinstance(other.get("type"), str) or "anyOf" in other:
        return node
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    merged.update(other)
    return merged


# The hints clients act on (confirmation prompts, read-only modes), and the spec's defaults:
# a hint equal to its default says nothing.
_HINT_DEFAULTS = {"read_only_hint": False, "destructive_hint": True}


def _optional_inputs(schema: dict[str, Any]) -> dict[str, Any]:
    """An argument that may be left out needs no `null`: omitting it means the default."""
    required = set(schema.get("required", []))
    properties = schema.get("properties", {})
    for name, prop in properties.items():
        if name not in required:
            properties[name] = _nullable(prop, keep_null=False)
    return schema


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Definitions used once, written where they are used (no $defs/$ref indirection)."""
    defs = schema.get("$defs")
    if not defs:
        return schema
    text = str(schema)
    once = {name for name in defs if text.count(f"'#/$defs/{name}'") == 1}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref", "")
        if isinstance(ref, str) and ref.removeprefix("#/$defs/") in once:
            return walk(defs[ref.removeprefix("#/$defs/")])
        return {k: walk(v) for k, v in node.items() if not (k == "$defs" and node is schema)}

    out = walk(schema)
    rest = {k: walk(v) for k, v in defs.items() if k not in once}
    return {**out, "$defs": rest} if rest else out


def compact_tools(mcp: MCPServer) -> None:
    """Trim every registered tool's advertised description and schemas in place."""
    for tool in mcp._tool_manager.list_tools():
        tool.description = " ".join(tool.description.split())
        if tool.annotations is not None:
            given = {k: getattr(tool.annotations, k) for k in _HINT_DEFAULTS}
            hints = {k: v for k, v in given.items() if v is not None and v != _HINT_DEFAULTS[k]}
            if hints.get("read_only_hint"):  # destructiveHint means nothing for a read
                hints.pop("destructive_hint", None)
            tool.annotations = ToolAnnotations(**hints) if hints else None
        tool.parameters = _inline_defs(_optional_inputs(compact_schema(tool.parameters)))
        if tool.fn_metadata.output_schema is not None:
            schema = _inline_defs(compact_schema(tool.fn_metadata.output_schema, output=True))
            tool.fn_metadata.output_schema = schema
            tool.__dict__.pop("output_schema", None)  # a cached_property of the old one
