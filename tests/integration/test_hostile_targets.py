"""list_targets beside broken target.md files (issue 19): every other target is listed,
each broken one says file:line, and the answer stays within its schema and small."""

from __future__ import annotations

import pytest
from mcp import Client

from autoopt.tools.workspace import Workspace

pytestmark = pytest.mark.anyio


def _broken(workspace: Workspace) -> dict[str, tuple[bytes, str]]:
    """name -> (pyserver's target.md broken one way, what its error must say)."""
    good = (workspace.targets_dir / "pyserver" / "target.md").read_bytes()

    def swap(old: bytes, new: bytes) -> bytes:
        assert old in good
        return good.replace(old, new)

    return {
        "port-inf": (swap(b"port: 8080", b"port: inf"), ":41: port"),
        "port-1e400": (swap(b"port: 8080", b"port: 1e400"), ":41: port"),
        "concurrency-inf": (swap(b"duration: 2s", b"concurrency: inf"), ":25: concurrency"),
        "effect-nan": (swap(b"min_effect_pct: 1", b"min_effect_pct: nan"), ":47: min_effect"),
        "effect-neg": (swap(b"min_effect_pct: 1", b"min_effect_pct: -50"), ":47: min_effect"),
        "not-utf8": (swap(b"unit: MiB", b"unit: Mi\xff"), ":15: not UTF-8"),
        "dup-section": (good + b"\n## Local\nkind: batch\n", "'## Local' again"),
        "huge": (good + b"## Notes\n" + b"x" * (40 * 1024 * 1024), "over 256 KiB"),
        "nul": (swap(b"health: /health", b"health: /he\x00alth"), ":53: control character"),
    }


async def test_broken_targets_beside_good_ones(client: Client, workspace: Workspace) -> None:
    good_names = set(workspace.target_names())
    broken = _broken(workspace)
    for name, (data, _) in broken.items():
        (workspace.targets_dir / name).mkdir()
        (workspace.targets_dir / name / "target.md").write_bytes(data)
    for detail in (False, True):  # detail dumps every spec (a nan broke the output schema)
        result = await client.call_tool("list_targets", {"detail": detail})
        assert not result.is_error, result.content[0].text
        text = result.content[0].text
        assert len(text) < 20_000  # a 40 MB target.md used to come back as 88 MB
        targets = {t["name"]: t for t in result.structured_content["targets"]}
        assert set(targets) == good_names | set(broken)
        assert all(targets[n]["valid"] for n in good_names), text
        for name, (_, where) in broken.items():
            assert not targets[name]["valid"], name
            assert f"targets/{name}/target.md" in targets[name]["error"], targets[name]
            assert where in targets[name]["error"], targets[name]["error"]
            assert f"{name}: INVALID: " in text


async def test_a_huge_target_md_is_not_served_whole(client: Client, workspace: Workspace) -> None:
    (workspace.targets_dir / "huge").mkdir()
    with (workspace.targets_dir / "huge" / "target.md").open("wb") as f:
        f.truncate(40 * 1024 * 1024)
    with pytest.raises(Exception, match=r"targets/huge/target\.md"):  # the SDK hides why
        await client.read_resource("autoopt://targets/huge/target.md")
    good = await client.read_resource("autoopt://targets/pyserver/target.md")
    assert "## Source" in good.contents[0].text
