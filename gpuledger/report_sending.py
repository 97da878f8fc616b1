"""Sending reports: the fleet report to the platform channels and each team's own report to its channels, queued
once per window and destination; the scheduled daily and weekly reports (marked due in ``alerts.due`` until they
are queued, so a failure is retried), and ``gpuledger report --send``.

The fleet report is built by ``gpuledger.reporting``, a team's from the same inputs narrowed to its namespaces
(``reporting.team_report_inputs``, ``analysis.team_scope``); the recommendations by ``gpuledger.recommending``, the
message by ``alerts.report``; delivery is ``gpuledger.delivering``, who gets what ``alerts.routing``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerts import due, routing
from alerts.errors import NoChannel
from alerts.outbox import Outbox, channel_key
from alerts.report import report_message
from alerts.routing import Destination
from analysis import report, team_scope
from analysis.errors import AnalysisError
from analysis.recommend.plan import Applied
from analysis.window import Window
from gpuledger import delivering, recommending, reporting
from gpuledger.delivering import channels, flush, outbox
from gpuledger.settings import Settings
from warehouse.errors import WarehouseError
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing

log = logging.getLogger(__name__)
LABELS = {"daily": "daily report", "weekly": "weekly report"}


@dataclass(frozen=True)
class QueuedReport:
    key: str
    window: Window
    queued: list[str]
    """Destinations a new message was queued for (empty: the key was queued or sent to each before)."""
    report: dict[str, Any] = field(repr=False, default_factory=dict)
    """The fleet report."""
    team_reports: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)
    """Team -> its own report, for the teams a message was queued for by this call."""
    failed: dict[str, str] = field(default_factory=dict)
    """Team -> why its report could not be built (nothing queued for it: the report is still due)."""


def queue_report(
    lake: Lake,
    settings: Settings,
    *,
    kind: str,
    start: str | None,
    end: str | None,
    now: dt.datetime,
) -> QueuedReport:
    """Build the window's reports and queue them, keyed by kind and window (so each is queued once however often this
    runs): the fleet report for the platform channels, each team's for its own. A team whose report cannot be built
    does not hold back the others: ``failed`` says which, and why."""
    wanted = list(settings.reports.channels)
    to_platform = delivering.platform(settings, wanted)
    to_teams = delivering.teams(settings, wanted)
    if not to_platform and not to_teams:
        raise NoChannel()
    fleet = reporting.fleet_report(lake, settings, start=start, end=end, now=now)
    window = Window(
        dt.datetime.fromisoformat(fleet["window"]["start"]), dt.datetime.fromisoformat(fleet["window"]["end"])
    )
    key = f"report:{kind}:{window.start.isoformat()}/{window.end.isoformat()}"
    box = outbox(lake, settings)
    to_platform = _unsent(box, key, to_platform)
    to_teams = {team: dests for team, d in to_teams.items() if (dests := _unsent(box, key, d))}
    if not to_platform and not to_teams:
        return QueuedReport(key, window, [], fleet)
    applied = plan_items(lake, settings, window, now)
    label = LABELS.get(kind, "report")
    days = f"{window.start:%Y-%m-%d}" if kind == "daily" else f"{window.start:%Y-%m-%d} to {window.end:%Y-%m-%d}"
    top_n = settings.reports.top_n
    queued: list[str] = []
    if to_platform:
        rendered = report_message(fleet, _rows(applied), title=f"gpuledger {label}: {days}", top_n=top_n)
        queued += _enqueue(box, routing.entries(rendered, key, to_platform, []), now)
    built: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    if to_teams:
        inputs, owned = _team_inputs(lake, settings, window, now)
        for team, dests in to_teams.items():
            namespaces = owned.get(team, [])
            try:
                with diagnosing(lake):
                    team_report = report.build(reporting.team_report_inputs(lake, settings, inputs, team))
            except (AnalysisError, WarehouseError) as exc:
                log.error("the %s report of team %s could not be built: %s", kind, team, exc)
                failures[team] = str(exc)
                continue
            recs = _rows([a for a in applied if team_scope.is_teams(a.rec, namespaces)])
            title = f"gpuledger {label} for team {team}: {days}"
            rendered = report_message(team_report, recs, title=title, top_n=top_n)
            queued += _enqueue(box, routing.entries(rendered, key, dests, []), now)
            built[team] = team_report
    return QueuedReport(key, window, queued, fleet, built, failures)


def _unsent(box: Outbox, key: str, destinations: list[Destination]) -> list[Destination]:
    return [d for d in destinations if not box.known(channel_key(key, d.name))]


def _enqueue(box: Outbox, entries: list[Any], now: dt.datetime) -> list[str]:
    return [e.channel for e in box.enqueue(entries, now)]


def _team_inputs(
    lake: Lake, settings: Settings, window: Window, now: dt.datetime
) -> tuple[report.ReportInputs, dict[str, list[str]]]:
    """The window's report inputs (as the fleet report's) and each team's namespaces among those that held GPUs."""
    with diagnosing(lake):
        inputs = reporting.report_inputs(lake, settings, window, now=now)
    return inputs, team_scope.team_namespaces(inputs.groups["namespace"].unique().to_list(), settings.teams)


def plan_items(lake: Lake, settings: Settings, window: Window, now: dt.datetime) -> list[Applied]:
    """The changes of the window's plan (``gpuledger recommend``'s), in rank order. A report is not held back when
    they cannot be built: the failure is logged as an error and the report goes out without them."""
    try:
        result = recommending.recommendations(
            lake, settings, start=window.start.isoformat(), end=window.end.isoformat(), now=now, refresh=False
        )
    except (AnalysisError, WarehouseError) as exc:
        log.error("recommendations for %s failed (%s); the report goes without them", window.start.isoformat(), exc)
        return []
    return list(recommending.plan(result).applied)


def top_recommendations(lake: Lake, settings: Settings, window: Window, now: dt.datetime) -> list[dict[str, Any]]:
    """The changes of the window's plan in rank order, each with what it banks (the node-hours it removes x their
    price) and its own figure if applied alone."""
    return _rows(plan_items(lake, settings, window, now))


def _rows(applied: list[Applied]) -> list[dict[str, Any]]:
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
    if queued.failed:
        log.error("the %s report of team(s) %s is retried later", kind, ", ".join(queued.failed))
    else:
        due.forget_due(lake, marker)
    return queued


def retry_due_reports(lake: Lake, settings: Settings, now: dt.datetime) -> int:
    """Build and queue scheduled reports whose job failed before they were queued (all of them, or some team's);
    returns how many now are. One still failing a week after its window ended is given up, with an error in the
    log."""
    done = 0
    for pending in due.due_reports(lake):
        if pending.given_up(now):
            log.error("the %s report for %s could not be built for a week: given up", pending.kind, pending.start)
            due.forget_due(lake, pending.marker)
            continue
        try:
            queued = queue_report(lake, settings, kind=pending.kind, start=pending.start, end=pending.end, now=now)
        except Exception as exc:  # each is retried at the next tick; say so loudly
            log.error(
                "the %s report for %s still cannot be built (%s); retrying later", pending.kind, pending.start, exc
            )
            continue
        if queued.failed:
            log.error("the %s report for %s of team(s) %s: retrying later", pending.kind, pending.start, queued.failed)
            continue
        due.forget_due(lake, pending.marker)
        done += 1
    return done


@dataclass(frozen=True)
class SendOutcome:
    report: dict[str, Any]
    key: str
    delivered: list[str]
    """Destinations that have their report now (delivered by this run or an earlier one)."""
    queued: dict[str, str]
    """Destination -> why it is still queued."""
    outbox: str


def send_report(
    lake: Lake, settings: Settings, *, start: str | None, end: str | None, now: Callable[[], dt.datetime]
) -> SendOutcome:
    """``gpuledger report --send``: queue the window's reports (once per window and destination: the fleet's to the
    platform, each team's to its own) and deliver the outbox."""
    targets = channels(settings)
    queued = queue_report(lake, settings, kind="adhoc", start=start, end=end, now=now())
    flush(lake, settings, now, targets=targets)
    box = outbox(lake, settings)
    wanted = list(settings.reports.channels)
    names = [d.name for d in delivering.platform(settings, wanted)]
    names += [d.name for dests in delivering.teams(settings, wanted).values() for d in dests]
    delivered, waiting = box.delivery(queued.key, names)
    for team, error in queued.failed.items():
        for d in delivering.teams(settings, wanted)[team]:
            waiting[d.name] = f"its report could not be built ({error})"
    return SendOutcome(queued.report, queued.key, delivered, waiting, str(box.root / "pending"))
