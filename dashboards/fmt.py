"""How the pages write numbers (the tests format the report's numbers the same way to find them on a page)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def hours(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def pct(value: float | None) -> str:
    """A percentage given in percent (41.47 -> "41.5%")."""
    return "-" if value is None else f"{value:,.1f}%"


def share(value: float | None) -> str:
    """A fraction as a percentage (0.2254 -> "22.5%")."""
    return "-" if value is None else f"{value * 100:,.1f}%"


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def when(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return f"{value:%Y-%m-%d %H:%M} UTC"


EMPTY = "—"
"""What an empty cell shows; the column's help (or the page's caption) says why it is empty."""

COLUMN_FORMATS = {
    "usd": "dollar",
    "hours": "%.1f",
    "pct": "%.1f%%",
    "share": "percent",
    "gib": "%.1f",
    "count": "%d",
    "number": "%.2f",
}
"""The same numbers in a table (``st.column_config.NumberColumn`` formats), so a column stays sortable."""
TIME_COLUMN = "YYYY-MM-DD HH:mm"
"""A time in a table (``st.column_config.DatetimeColumn``; the column's name says UTC), as ``when`` writes it."""


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


TEXT = {"usd": usd, "hours": hours, "pct": pct, "share": share, "gib": gib, "count": count, "number": number}
"""A table number written out, for a column that holds empty cells too (written as what they mean)."""


def cents_adding_up(values: list[float], total: float) -> tuple[list[float], int]:
    """``values`` rounded to the cent so that they add up to ``total`` rounded to the cent: the cents that rounding
    each value on its own leaves over go to the largest values, one each (a largest-remainder rounding of values
    already rounded). Returns the values and the cents moved; a difference of more than a cent per value is not
    rounding, and is left as it is (moved 0)."""
    cents = [round(v * 100) for v in values]
    diff = round(total * 100) - sum(cents)
    if diff == 0 or abs(diff) > len(cents):
        return [c / 100 for c in cents], 0
    step = 1 if diff > 0 else -1
    for i in sorted(range(len(cents)), key=lambda i: -abs(values[i]))[: abs(diff)]:
        cents[i] += step
    return [c / 100 for c in cents], abs(diff)
