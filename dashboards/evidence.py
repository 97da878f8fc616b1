"""How a recommendation's evidence is written: a nested list a person reads, drawn at once (a JSON viewer in each
of 50 expanders makes the browser load and lay out a heavy component before the page settles)."""

from __future__ import annotations

from typing import Any


def outline(value: Any, depth: int = 0) -> str:
    """``value`` (the evidence dict) as markdown list items, nested as it is."""
    pad = "  " * depth
    if isinstance(value, dict):
        return "\n".join(
            f"{pad}- **{_name(key)}**: {inline}"
            if (inline := _inline(item)) is not None
            else f"{pad}- **{_name(key)}**:\n{outline(item, depth + 1)}"
            for key, item in value.items()
        )
    if isinstance(value, list):
        return "\n".join(
            f"{pad}- {inline}" if (inline := _inline(item)) is not None else outline(item, depth) for item in value
        )
    return f"{pad}- {_inline(value)}"


def _inline(value: Any) -> str | None:
    """A leaf as markdown (None: a non-empty dict or list, written as a nested list)."""
    if isinstance(value, dict | list):
        return None if value else "none"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:,.4g}"
    text = str(value)
    if isinstance(value, str) and len(text) < 40 and "`" not in text:
        return f"`{text}`"
    return text.replace("$", "\\$").replace("*", "\\*").replace("_", "\\_")  # not math, emphasis


def _name(key: Any) -> str:
    """An evidence field in words (``gpu_hours`` -> "gpu hours")."""
    return str(key).replace("_", " ")
