"""Scheduled reports that are due: the state that makes a failed daily or weekly report retried, never lost.

A report's job marks its period due before building it and forgets it once it is queued; the outbox job retries
what is still marked, and gives up (loudly) a week after the period ended. ``DueReports`` is that document, kept in
the warehouse's state (``STATE_NAME``) by ``mark_due`` and ``forget_due``, and read by ``due_reports``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from analysis.window import Window
from warehouse.lake import Lake

STATE_NAME = "reports-due"
PERIOD_DAYS = {"daily": 1, "weekly": 7}
GIVE_UP_AFTER = dt.timedelta(days=7)


def period_window(kind: str, fired_at: dt.datetime, timezone: str) -> Window:
    """The days a scheduled report covers: the ``daily`` or ``weekly`` period ending at local midnight of the day it
    fires (in ``timezone``)."""
    tz = zoneinfo.ZoneInfo(timezone)
    local = fired_at.astimezone(tz)
    end = dt.datetime.combine(local.date(), dt.time(), tzinfo=tz)
    start = dt.datetime.combine(local.date() - dt.timedelta(days=PERIOD_DAYS[kind]), dt.time(), tzinfo=tz)
    return Window(start.astimezone(dt.UTC), end.astimezone(dt.UTC))


@dataclass(frozen=True)
class DueReport:
    marker: str
    kind: str
    start: str
    end: str

    def given_up(self, now: dt.datetime) -> bool:
        """Still not built a week after its period ended."""
        return dt.datetime.fromisoformat(self.end) < now - GIVE_UP_AFTER


@dataclass
class DueReports:
    """Marker (``kind:start``) -> the report's kind and window."""

    due: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> DueReports:
        return cls(dict(doc or {}))

    def to_json(self) -> dict[str, dict[str, str]]:
        return dict(self.due)

    def mark(self, kind: str, window: Window) -> str:
        """Mark the ``kind`` report of ``window`` due; returns its marker."""
        marker = f"{kind}:{window.start.isoformat()}"
        self.due[marker] = {"kind": kind, "start": window.start.isoformat(), "end": window.end.isoformat()}
        return marker

    def forget(self, marker: str) -> None:
        self.due.pop(marker, None)

    def pending(self) -> list[DueReport]:
        """Every due report, in marker order."""
        return [
            DueReport(marker, spec["kind"], spec["start"], spec["end"]) for marker, spec in sorted(self.due.items())
        ]


def mark_due(lake: Lake, kind: str, window: Window) -> str:
    """Mark the ``kind`` report of ``window`` due in ``lake``'s state; returns its marker."""
    reports = DueReports.from_json(lake.read_state(STATE_NAME))
    marker = reports.mark(kind, window)
    lake.write_state(STATE_NAME, reports.to_json())
    return marker


def forget_due(lake: Lake, marker: str) -> None:
    """The report of ``marker`` is queued (or given up): it is no longer due."""
    reports = DueReports.from_json(lake.read_state(STATE_NAME))
    reports.forget(marker)
    lake.write_state(STATE_NAME, reports.to_json())


def due_reports(lake: Lake) -> list[DueReport]:
    """Every report still due in ``lake``'s state, in marker order."""
    return DueReports.from_json(lake.read_state(STATE_NAME)).pending()
