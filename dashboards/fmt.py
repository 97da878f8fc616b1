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
