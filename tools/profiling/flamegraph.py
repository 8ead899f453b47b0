"""A flame graph picture (icicle: root on top) drawn from a profile's stacks with matplotlib."""

from __future__ import annotations

import zlib
from pathlib import Path

from autoopt.tools.profiling.model import Profile, human_value

MAX_DEPTH = 48
MIN_FRACTION = 0.002  # boxes narrower than this share of the total are not drawn


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.children: dict[str, _Node] = {}


def _tree(profile: Profile) -> tuple[_Node, int]:
    root = _Node()
    depth = 0
    for stack in profile.stacks:
        node = root
        node.value += stack.value
        frames = profile.stack_frames(stack)[:MAX_DEPTH]
        depth = max(depth, len(frames))
        for f in frames:
            node = node.children.setdefault(f.key, _Node())
            node.value += stack.value
    return root, depth


def _color(name: str) -> tuple[float, float, float]:
    h = zlib.crc32(name.encode()) & 0xFFFF
    return (0.85 + 0.15 * ((h & 0xFF) / 255), 0.35 + 0.45 * ((h >> 8) / 255), 0.15)


def render(profile: Profile, path: Path) -> Path:
    """Write the PNG; one row per stack depth, box width proportional to the value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    root, _ = _tree(profile)
    total = root.value or 1.0
    boxes: list[tuple[float, int, float, str]] = []  # x, level, width, name

    def layout(node: _Node, x: float, level: int) -> None:
        for name, child in sorted(node.children.items(), key=lambda kv: -kv[1].value):
            width = child.value / total
            if width >= MIN_FRACTION:
                boxes.append((x, level, width, name))
                layout(child, x, level + 1)
            x += width

    layout(root, 0.0, 0)
    rows = max((b[1] for b in boxes), default=0) + 1
    fig, ax = plt.subplots(figsize=(16, min(2.0 + 0.26 * rows, 16.0)), dpi=100)
    for x, level, width, name in boxes:
        ax.add_patch(Rectangle((x, level), width, 0.92, facecolor=_color(name),
                               edgecolor="white", linewidth=0.3))
        chars = int(width * 16 * 100 / 6.5)  # about 6.5 px per character at size 7
        if chars >= 4:
            text = f"{name} {100 * width:.1f}%"
            ax.text(x + 0.002, level + 0.46, text if len(text) <= chars
                    else text[: chars - 2] + "..", va="center", ha="left", fontsize=7,
                    clip_on=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(rows, 0)
    ax.set_yticks([])
    ax.set_xticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    title = (f"{profile.target} {profile.label}: {profile.measure} ({profile.tool}), "
             f"total {human_value(profile.total, profile.unit)}")
    if not profile.complete:
        title += "  [INCOMPLETE]"
    ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
