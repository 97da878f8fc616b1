"""Time spans on the step grid: what a scrape has done, what is left of a window, and the chunks that fetch it.

A span is [start, end) in whole epoch seconds, both on the step grid. A window is cut into chunks of at most
``max_steps`` steps (a range query evaluates every step in it); the spans done are kept merged, so a re-run with an
overlapping window fetches only what is not done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Span = tuple[int, int]
"""[start, end) in whole epoch seconds, both on the step grid."""


def grid_ceil(seconds: float, step_s: int) -> int:
    return math.ceil(seconds / step_s) * step_s


def grid_floor(seconds: float, step_s: int) -> int:
    return math.floor(seconds / step_s) * step_s


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Spans sorted, with overlapping or touching ones joined."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def subtract_spans(window: Span, done: Iterable[Span]) -> list[Span]:
    """The parts of ``window`` no span of ``done`` covers, in time order."""
    todo: list[Span] = []
    cursor, end = window
    for d_start, d_end in merge_spans(done):
        if d_end <= cursor or d_start >= end:
            continue
        if d_start > cursor:
            todo.append((cursor, d_start))
        cursor = max(cursor, d_end)
    if cursor < end:
        todo.append((cursor, end))
    return todo


def plan_chunks(todo: Iterable[Span], *, step_s: int, max_steps: int) -> list[Span]:
    """``todo`` cut into chunks of at most ``max_steps`` steps each (a chunk's query evaluates every step in it)."""
    width = step_s * max(1, max_steps)
    return [(a, min(a + width, end)) for start, end in todo for a in range(start, end, width)]
