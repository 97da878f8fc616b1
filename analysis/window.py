"""Time windows: parsing ISO-8601 and relative times (``-7d``), and the report's default window."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from analysis.errors import InvalidWindow

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end)."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidWindow("times must carry a timezone")
        if self.end <= self.start:
            raise InvalidWindow(f"start {self.start.isoformat()} is not before end {self.end.isoformat()}")

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600.0


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """An absolute or relative time as an aware UTC datetime (naive ISO times are taken as UTC)."""
    value = text.strip()
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidWindow(f"cannot read {text!r} as a time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def resolve(
    start: str | None, end: str | None, *, newest: dt.datetime | None, default_days: float, now: dt.datetime
) -> Window:
    """The window a command asked for; without --start/--end, the ``default_days`` ending at the newest data."""
    end_at = parse_time(end, now) if end else (newest + dt.timedelta(minutes=1) if newest else now)
    start_at = parse_time(start, now) if start else end_at - dt.timedelta(days=default_days)
    return Window(start_at, end_at)
