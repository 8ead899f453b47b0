"""The short answers' own rules: texts stay within their limits and keep the detail line."""

from __future__ import annotations

from autoopt.server.compact import compact_schema
from autoopt.server.jobs_view import capped


def test_capped_keeps_order_and_the_last_line() -> None:
    lines = [f"line {i} " + "x" * 40 for i in range(200)] + ["Detail: get_run(detail=true)"]
    text = capped(lines, 1000)
    assert len(text) <= 1000
    assert text.startswith("line 0 ") and text.endswith("Detail: get_run(detail=true)")
    assert "more lines: ask for the detail" in text
    assert capped(["a", "b", "Detail"], 1000) == "a\nb\nDetail"


def test_compact_schema_keeps_meaning() -> None:
    schema = {
        "title": "Args", "type": "object", "required": ["target"],
        "properties": {
            "target": {"title": "Target", "type": "string", "pattern": "^[a-z]+$"},
            "title": {"title": "Title", "type": "string"},  # a property named title stays
            "base": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None,
                     "description": "a\n        commit"},
            "flag": {"type": "boolean", "default": False},
            "runs": {"type": "integer", "default": 0, "minimum": 0},
        },
    }
    out = compact_schema(schema)
    assert out == {
        "type": "object", "required": ["target"],
        "properties": {
            "target": {"type": "string"},
            "title": {"type": "string"},
            "base": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "a commit"},
            "flag": {"type": "boolean"},
            "runs": {"type": "integer", "default": 0, "minimum": 0},
        },
    }
    answer = compact_schema({"properties": {"x": {"anyOf": [{"type": "number"},
                                                            {"type": "null"}]},
                                            "xs": {"type": "array", "items": {"anyOf": [
                                                {"type": "number"}, {"type": "null"}]}}},
                             "required": ["x"], "type": "object"}, output=True)
    # a field may be left out instead of null; an item of a list may still be null
    assert answer["properties"]["x"] == {"type": "number"} and "required" not in answer
    assert answer["properties"]["xs"]["items"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
