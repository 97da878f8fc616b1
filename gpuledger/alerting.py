"""Alerting jobs: read the warehouse for the alert conditions, evaluate the rules, queue and deliver messages.

Each function is one job of ``gpuledger schedule`` (or of ``gpuledger report --send``): reading happens here, the
conditions are computed by ``analysis.conditions``, the rules and their state by ``alerts.rules``, rendering by
``alerts.report``, delivery by ``alerts.outbox`` and ``alerts.channels``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from alerts import due, rules
from alerts.channels import SlackWebhook, SmtpChannel
from alerts.errors import NoChannel
from alerts.outbox import Channel, Entry, FlushResult, Outbox, RetryPolicy
from alerts.report import Rendered, alert_message, report_message
from alerts.schedule import Job, Runner
from alerts.secrets import read_secret
from analysis import conditions, usage
from analysis.errors import AnalysisError
from analysis.window import Window
from gpuledger import jobs, recommending, reporting
from gpuledger.settings import Settings
from warehouse.errors import WarehouseError
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing
from warehouse.schema import GPU_MINUTES, GPU_SAMPLES

log = logging.getLogger("gpuledger.alerting")
SCHEDULE_STATE = "schedule"


# ------------------------------------------------------------------------------------------------------ channels


def channels(settings: Settings) -> dict[str, Channel]:
    """The configured channels, with their secrets read now (from the environment or a file)."""
    out: dict[str, Channel] = {}
    timeout = settings.delivery.timeout_s
    if settings.slack is not None:
        url = read_secret(
            "Slack webhook URL",
            settings.slack.webhook_url_env,
            settings.slack.webhook_url_file,
            required=True,
            setting="[slack] webhook_url_env",
        )
        assert url is not None
        out["slack"] = SlackWebhook(url, timeout_s=timeout)
    if settings.email is not None:
        e = settings.email
        password = read_secret(
            "SMTP password",
            e.password_env,
            e.password_file,
            required=e.username is not None,
            setting="[email] password_env",
        )
        out["email"] = SmtpChannel(
            host=e.host,
            port=e.port,
            security=e.security,
            sender=e.sender,
            recipients=e.recipients,
            username=e.username,
            password=password,
            ca_file=e.ca_file,
            timeout_s=timeout,
        )
    return out


def outbox(lake: Lake, settings: Settings) -> Outbox:
    return Outbox(lake.root, keep_sent_days=settings.delivery.keep_sent_days)


def retry_policy(settings: Settings) -> RetryPolicy:
    d = settings.delivery
    return RetryPolicy(attempts=d.attempts, backoff_s=d.backoff_s, max_backoff_s=d.max_backoff_s)


def flush(
    lake: Lake, settings: Settings, now: Callable[[], dt.datetime], *, targets: dict[str, Channel] | None = None
) -> FlushResult:
    """Deliver every queued message that is due."""
    return outbox(lake, settings).flush(
        targets if targets is not None else channels(settings), now, retry_policy(settings)
    )


def _entries(key: str, rendered: Rendered, names: list[str], covers: list[list[str]]) -> list[Entry]:
    out = []
    for name in names:
        payload = rendered.slack if name == "slack" else rendered.email
        out.append(Entry(key=f"{key}@{name}", channel=name, title=rendered.title, payload=payload, covers=covers))
    return out


def _targets(settings: Settings, wanted: list[str]) -> list[str]:
    configured = [name for name, section in (("slack", settings.slack), ("email", settings.email)) if section]
    return [name for name in wanted if name in configured]


# ------------------------------------------------------------------------------------------------------- reports


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
    names = _targets(settings, list(settings.reports.channels))
    if not names:
        raise NoChannel()
    report = reporting.fleet_report(lake, settings, start=start, end=end, now=now)
    window = Window(
        dt.datetime.fromisoformat(report["window"]["start"]), dt.datetime.fromisoformat(report["window"]["end"])
    )
    key = f"report:{kind}:{window.start.isoformat()}/{window.end.isoformat()}"
    box = outbox(lake, settings)
    if all(box.known(f"{key}@{name}") for name in names):
        return QueuedReport(key, window, [], report)
    recs = top_recommendations(lake, settings, window, now)
    label = {"daily": "daily report", "weekly": "weekly report"}.get(kind, "report")
    days = f"{window.start:%Y-%m-%d}" if kind == "daily" else f"{window.start:%Y-%m-%d} to {window.end:%Y-%m-%d}"
    rendered = report_message(report, recs, title=f"gpuledger {label}: {days}", top_n=settings.reports.top_n)
    added = box.enqueue(_entries(key, rendered, names, []), now)
    return QueuedReport(key, window, [e.channel for e in added], report)


def run_scheduled_report(lake: Lake, settings: Settings, kind: str, fired_at: dt.datetime) -> QueuedReport:
    """The ``daily``/``weekly`` job: remember it is due (so a failure is retried by the outbox job), queue it,
    forget it, deliver."""
    window = due.period_window(kind, fired_at, settings.scheduler.timezone)
    reports = due.DueReports.from_json(lake.read_state(due.STATE_NAME))
    marker = reports.mark(kind, window)
    lake.write_state(due.STATE_NAME, reports.to_json())
    queued = queue_report(
        lake, settings, kind=kind, start=window.start.isoformat(), end=window.end.isoformat(), now=fired_at
    )
    _forget_due(lake, marker)
    return queued


def retry_due_reports(lake: Lake, settings: Settings, now: dt.datetime) -> int:
    """Build and queue scheduled reports whose job failed before they were queued; returns how many now are.
    One still failing a week after its window ended is given up, with an error in the log."""
    done = 0
    for report in due.DueReports.from_json(lake.read_state(due.STATE_NAME)).pending():
        if report.given_up(now):
            log.error("the %s report for %s could not be built for a week: given up", report.kind, report.start)
            _forget_due(lake, report.marker)
            continue
        try:
            queue_report(lake, settings, kind=report.kind, start=report.start, end=report.end, now=now)
        except Exception as exc:  # each is retried at the next tick; say so loudly
            log.error("the %s report for %s still cannot be built (%s); retrying later", report.kind, report.start, exc)
            continue
        _forget_due(lake, report.marker)
        done += 1
    return done


def _forget_due(lake: Lake, marker: str) -> None:
    reports = due.DueReports.from_json(lake.read_state(due.STATE_NAME))
    reports.forget(marker)
    lake.write_state(due.STATE_NAME, reports.to_json())


def top_recommendations(lake: Lake, settings: Settings, window: Window, now: dt.datetime) -> list[dict[str, Any]]:
    """The ranked recommendations for the report's window (``gpuledger recommend``'s). A report is not held back
    when they cannot be built: the failure is logged as an error and the report goes out without them."""
    try:
        result = recommending.recommendations(
            lake, settings, start=window.start.isoformat(), end=window.end.isoformat(), now=now, refresh=False
        )
    except (AnalysisError, WarehouseError) as exc:
        log.error("recommendations for %s failed (%s); the report goes without them", window.start.isoformat(), exc)
        return []
    return [
        {"kind": r.kind, "change": r.change, "savings_usd_month": r.savings_usd_month, "price_source": r.price_source}
        for r in result.items
    ]


# -------------------------------------------------------------------------------------------------------- alerts


def priced_groups(lake: Lake, settings: Settings, window: Window) -> pl.DataFrame:
    """The window's minute groups priced as the report prices them (``gpuledger.reporting.priced_usage``)."""
    return reporting.priced_usage(lake, settings, window).groups


def read_conditions(lake: Lake, settings: Settings, now: dt.datetime) -> rules.Conditions:
    """Everything the enabled rules need, read for the windows ending at ``now``."""
    r = settings.alerts
    lookback = Window(now - dt.timedelta(hours=r.lookback_hours), now)
    minutes = usage.in_window(lake.scan(GPU_MINUTES, start=lookback.start, end=lookback.end), lookback)
    streaks = conditions.idle_streaks(minutes).collect() if r.idle_hours > 0 else None
    silences = (
        conditions.node_silences(minutes, lake.series_spans(GPU_SAMPLES), lookback.start, now)
        if r.node_silent_minutes > 0
        else None
    )
    groups = priced_groups(lake, settings, lookback) if r.price_fallback else None
    fallbacks = conditions.price_fallbacks(groups) if groups is not None else None
    namespaces = None
    if r.namespace_util_below_pct > 0:
        ns_window = Window(now - dt.timedelta(hours=r.namespace_window_hours), now)
        ns_groups = groups if ns_window == lookback and groups is not None else priced_groups(lake, settings, ns_window)
        namespaces = conditions.namespace_utilization(ns_groups)
    spend = None
    if r.spend_increase_pct > 0:
        day = now.astimezone(dt.UTC).date() - dt.timedelta(days=1)
        start = dt.datetime.combine(day - dt.timedelta(days=r.spend_trailing_days), dt.time(), tzinfo=dt.UTC)
        spend_window = Window(start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
        daily = conditions.daily_spend(priced_groups(lake, settings, spend_window))
        spend = conditions.spend_change(daily, day, r.spend_trailing_days)
    return rules.Conditions(
        idle_streaks=streaks,
        namespaces=namespaces,
        namespace_window_hours=r.namespace_window_hours,
        spend=spend,
        spend_evaluated=r.spend_increase_pct > 0,
        silences=silences,
        fallbacks=fallbacks,
    )


@dataclass(frozen=True)
class Evaluation:
    found: dict[str, list[rules.Finding]]
    notified: list[rules.Finding]
    queued: list[str]
    """Outbox keys queued by this evaluation."""


def evaluate(lake: Lake, settings: Settings, now: dt.datetime, *, refresh: bool = True) -> Evaluation:
    """Evaluate every rule at ``now``, queue one message per rule for the subjects that start firing, then save the
    alert state (the outbox entries name their subjects, so a crash in between re-sends nothing)."""
    if refresh:
        jobs.refresh(lake, settings)
    with diagnosing(lake):
        found = rules.findings(read_conditions(lake, settings, now), settings.alerts)
    box = outbox(lake, settings)
    state = rules.AlertState.from_json(lake.read_state(rules.STATE_NAME))
    since = dt.datetime.fromisoformat(state.saved_at) if state.saved_at else None
    for entry, (rule, subject) in box.covers_since(since):
        state.absorb(rule, subject, entry.created_at)
    notify = rules.decide(found, state, now, dt.timedelta(hours=settings.alerts.cooldown_hours))
    names = _targets(settings, list(settings.alerts.channels))
    queued: list[str] = []
    by_rule: dict[str, list[rules.Finding]] = {}
    for item in notify:
        by_rule.setdefault(item.rule, []).append(item)
    for rule, items in by_rule.items():
        if not names:
            log.warning("alert %s fired for %d subjects but no channel is configured", rule, len(items))
            continue
        key = rules.message_key(rule, items, now)
        rendered = alert_message(rule, items, now=now, thresholds=_thresholds(settings, rule))
        added = box.enqueue(_entries(key, rendered, names, [[rule, f.subject] for f in items]), now)
        queued += [e.key for e in added]
    lake.write_state(rules.STATE_NAME, state.to_json())
    return Evaluation(found, notify, queued)


def _thresholds(settings: Settings, rule: str) -> str:
    r = settings.alerts
    return {
        "idle_gpu": f"idle_hours = {r.idle_hours:g}",
        "namespace_utilization": f"namespace_util_below_pct = {r.namespace_util_below_pct:g} over "
        f"{r.namespace_window_hours:g} h (namespaces with at least {r.namespace_min_gpu_hours:g} GPU-hours)",
        "daily_spend": f"spend_increase_pct = {r.spend_increase_pct:g} against {r.spend_trailing_days} days",
        "node_silent": f"node_silent_minutes = {r.node_silent_minutes:g}",
        "price_fallback": "price_fallback = true",
    }.get(rule, "") + f"; cooldown_hours = {r.cooldown_hours:g}"


# ------------------------------------------------------------------------------------------------------ schedule


def _wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def schedule_jobs(lake: Lake, settings: Settings, targets: dict[str, Channel]) -> list[Job]:
    """The jobs of ``gpuledger schedule``: alert evaluation, the daily and weekly reports (each delivers what it
    queued at once), and the outbox (retries queued messages and reports that could not be built)."""

    def deliver() -> None:
        flush(lake, settings, _wall, targets=targets)

    def alerts_job(fired: dt.datetime) -> None:
        result = evaluate(lake, settings, fired)
        log.info("alerts evaluated at %s: %d new, %d messages queued", fired, len(result.notified), len(result.queued))
        deliver()

    def report_job(kind: str) -> Callable[[dt.datetime], None]:
        def run(fired: dt.datetime) -> None:
            queued = run_scheduled_report(lake, settings, kind, fired)
            log.info("%s report %s queued for %s", kind, queued.key, ", ".join(queued.queued) or "nobody (sent before)")
            deliver()

        return run

    def outbox_job(_fired: dt.datetime) -> None:
        retry_due_reports(lake, settings, _wall())
        deliver()

    jobs = []
    if settings.alerts.cron.strip():
        jobs.append(Job("alerts", alerts_job, cron=settings.alerts.cron))
    for kind in ("daily", "weekly"):
        cron = getattr(settings.reports, kind).strip()
        if cron:
            jobs.append(Job(f"{kind}-report", report_job(kind), cron=cron))
    jobs.append(Job("outbox", outbox_job, every_s=settings.scheduler.outbox_every_s, run_at_start=True))
    return jobs


def run_scheduler(lake: Lake, settings: Settings) -> None:
    """Run ``gpuledger schedule`` until SIGTERM."""
    targets = channels(settings)
    if not targets:
        raise NoChannel()

    def read() -> dict[str, Any]:
        return lake.read_state(SCHEDULE_STATE) or {}

    def write(value: dict[str, Any]) -> None:
        lake.write_state(SCHEDULE_STATE, value)

    Runner(schedule_jobs(lake, settings, targets), settings.scheduler, (read, write)).run_forever()


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
    delivered, waiting = [], {}
    for name in _targets(settings, list(settings.reports.channels)):
        found = box.status(f"{queued.key}@{name}")
        if found is not None and found[0] == "sent":
            delivered.append(name)
        elif found is not None and found[0] == "dead":
            waiting[name] = f"rejected, kept in {box.root / 'dead'}: {found[1].last_error}"
        else:
            error = found[1].last_error if found else None
            waiting[name] = error or "not tried yet (another gpuledger process is delivering the outbox)"
    return SendOutcome(queued.report, queued.key, delivered, waiting, str(box.root / "pending"))
