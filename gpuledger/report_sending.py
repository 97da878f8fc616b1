"""Sending the fleet report: queued once per window for the report channels, the scheduled daily and weekly reports
(marked due in ``alerts.due`` until they are queued, so a failure is retried), and ``gpuledger report --send``.

The report is built by ``gpuledger.reporting``, its recommendations by ``gpuledger.recommending``, the message by
``alerts.report``; delivery is ``gpuledger.delivering``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerts import due
from alerts.errors import NoChannel
from alerts.outbox import channel_key
from alerts.report import report_message
from analysis.errors import AnalysisError
from analysis.window import Window
from gpuledger import recommending, reporting
from gpuledger.delivering import channels, configured, flush, outbox
from gpuledger.settings import Settings
from warehouse.errors import WarehouseError
from warehouse.lake import Lake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedReport:
    key: str
    window: Window
    queued: list[str]
    """Channels a new message was queued for (empty: the key was queued or sent before)."""
    report: dict[str, Any] = field(repr=False, default_factory=dict)


def queue_report(
    lake: Lake,
    settings: Settings,
    *,
    kind: str,
    start: str | None,
    end: str | None,
    now: dt.datetime,
) -> QueuedReport:
    """Build the report for the window and queue it for the report channels, keyed by kind and window (so the same
    report is queued once however often this runs)."""
    names = configured(settings, list(settings.reports.channels))
    if not names:
        raise NoChannel()
    report = reporting.fleet_report(lake, settings, start=start, end=end, now=now)
    window = Window(
        dt.datetime.fromisoformat(report["window"]["start"]), dt.datetime.fromisoformat(report["window"]["end"])
    )
    key = f"report:{kind}:{window.start.isoformat()}/{window.end.isoformat()}"
    box = outbox(lake, settings)
    if all(box.known(channel_key(key, name)) for name in names):
        return QueuedReport(key, window, [], report)
    recs = top_recommendations(lake, settings, window, now)
    label = {"daily": "daily report", "weekly": "weekly report"}.get(kind, "report")
    days = f"{window.start:%Y-%m-%d}" if kind == "daily" else f"{window.start:%Y-%m-%d} to {window.end:%Y-%m-%d}"
    rendered = report_message(report, recs, title=f"gpuledger {label}: {days}", top_n=settings.reports.top_n)
    added = box.enqueue(rendered.entries(key, names, []), now)
    return QueuedReport(key, window, [e.channel for e in added], report)


def top_recommendations(lake: Lake, settings: Settings, window: Window, now: dt.datetime) -> list[dict[str, Any]]:
    """The changes of the window's plan (``gpuledger recommend``'s), in rank order, each with what it banks (the
    node-hours it removes x their price) and its own figure if applied alone. A report is not held back when they
    cannot be built: the failure is logged as an error and the report goes out without them."""
    try:
        result = recommending.recommendations(
            lake, settings, start=window.start.isoformat(), end=window.end.isoformat(), now=now, refresh=False
        )
    except (AnalysisError, WarehouseError) as exc:
        log.error("recommendations for %s failed (%s); the report goes without them", window.start.isoformat(), exc)
        return []
    applied = recommending.plan(result).applied
    return [
        {
            "kind": a.rec.kind,
            "change": a.rec.change,
            "savings_usd_month": a.savings_usd_month,
            "savings_usd_month_if_applied_alone": a.rec.savings_usd_month,
            "confidence": a.rec.confidence,
            "expected_savings_usd_month": a.expected_savings_usd_month,
            "price_source": a.rec.price_source,
        }
        for a in applied
    ]


def run_scheduled_report(lake: Lake, settings: Settings, kind: str, fired_at: dt.datetime) -> QueuedReport:
    """The ``daily``/``weekly`` job: remember it is due (so a failure is retried by the outbox job), queue it,
    forget it, deliver."""
    window = due.period_window(kind, fired_at, settings.scheduler.timezone)
    marker = due.mark_due(lake, kind, window)
    queued = queue_report(
        lake, settings, kind=kind, start=window.start.isoformat(), end=window.end.isoformat(), now=fired_at
    )
    due.forget_due(lake, marker)
    return queued


def retry_due_reports(lake: Lake, settings: Settings, now: dt.datetime) -> int:
    """Build and queue scheduled reports whose job failed before they were queued; returns how many now are.
    One still failing a week after its window ended is given up, with an error in the log."""
    done = 0
    for report in due.due_reports(lake):
        if report.given_up(now):
            log.error("the %s report for %s could not be built for a week: given up", report.kind, report.start)
            due.forget_due(lake, report.marker)
            continue
        try:
            queue_report(lake, settings, kind=report.kind, start=report.start, end=report.end, now=now)
        except Exception as exc:  # each is retried at the next tick; say so loudly
            log.error("the %s report for %s still cannot be built (%s); retrying later", report.kind, report.start, exc)
            continue
        due.forget_due(lake, report.marker)
        done += 1
    return done


@dataclass(frozen=True)
class SendOutcome:
    report: dict[str, Any]
    key: str
    delivered: list[str]
    """Channels that have the report now (delivered by this run or an earlier one)."""
    queued: dict[str, str]
    """Channel -> why it is still queued."""
    outbox: str


def send_report(
    lake: Lake, settings: Settings, *, start: str | None, end: str | None, now: Callable[[], dt.datetime]
) -> SendOutcome:
    """``gpuledger report --send``: queue the report for the window (once per window) and deliver the outbox."""
    targets = channels(settings)
    queued = queue_report(lake, settings, kind="adhoc", start=start, end=end, now=now())
    flush(lake, settings, now, targets=targets)
    box = outbox(lake, settings)
    delivered, waiting = box.delivery(queued.key, configured(settings, list(settings.reports.channels)))
    return SendOutcome(queued.report, queued.key, delivered, waiting, str(box.root / "pending"))
