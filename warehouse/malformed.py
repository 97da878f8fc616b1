"""Lines of a source's answer that could not be read (a dcgm-exporter page with a partly redacted label, say).

The collector skips such lines and keeps every valid sample of the page; how many it skipped is added, with the
page's rows, to a running count in the warehouse state ``malformed-lines``, which the dashboard's data-health page
shows beside the rows rejected for impossible timestamps (``warehouse.ingest``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from warehouse.lake import Lake

MALFORMED_STATE = "malformed-lines"


@dataclass(frozen=True)
class MalformedLines:
    """The running count of skipped lines, as kept in the warehouse state."""

    lines: int
    scrapes: int
    """Pages (scrapes) that had at least one skipped line."""
    last_at: dt.datetime
    """When the last such page was stored."""
    last_lines: int
    """Lines skipped in the rows stored last time some were."""
    by_source: dict[str, int]


def count_malformed(lake: Lake, *, source: str, lines: int, scrapes: int, now: dt.datetime) -> None:
    """Add ``lines`` skipped lines from ``scrapes`` pages of ``source`` to the running count (the caller holds the
    writer lock, so the count is read and written in one go)."""
    if lines <= 0:
        return
    state: dict[str, Any] = lake.read_state(MALFORMED_STATE) or {}
    by_source = {**state.get("by_source", {})}
    by_source[source] = int(by_source.get(source, 0)) + lines
    lake.write_state(
        MALFORMED_STATE,
        {
            "lines": int(state.get("lines", 0)) + lines,
            "scrapes": int(state.get("scrapes", 0)) + scrapes,
            "last_at": now.isoformat(),
            "last_lines": lines,
            "by_source": by_source,
        },
    )


def malformed_lines(lake: Lake) -> MalformedLines | None:
    """What collectors have skipped so far, or None when no line was ever skipped."""
    state = lake.read_state(MALFORMED_STATE)
    if not state or not state.get("lines"):
        return None
    return MalformedLines(
        lines=int(state["lines"]),
        scrapes=int(state.get("scrapes", 0)),
        last_at=dt.datetime.fromisoformat(state["last_at"]),
        last_lines=int(state.get("last_lines", 0)),
        by_source={str(k): int(v) for k, v in state.get("by_source", {}).items()},
    )
