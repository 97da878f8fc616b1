"""``gpuledger schedule``: the alert, report and outbox jobs on their schedules, run by ``alerts.schedule.Runner``
with its catch-up state kept in the warehouse (``SCHEDULE_STATE``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from alerts.errors import NoChannel
from alerts.outbox import Channel
from alerts.schedule import Job, Runner
from gpuledger.alerting import evaluate
from gpuledger.delivering import channels, flush
from gpuledger.report_sending import retry_due_reports, run_scheduled_report
from gpuledger.settings import Settings
from warehouse.lake import Lake

log = logging.getLogger(__name__)
SCHEDULE_STATE = "schedule"


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


def runner(lake: Lake, settings: Settings) -> Runner:
    """The runner of ``gpuledger schedule`` (``gpuledger server`` runs it in a thread); raises NoChannel when no
    channel is configured."""
    targets = channels(settings)
    if not targets:
        raise NoChannel()

    def read() -> dict[str, Any]:
        return lake.read_state(SCHEDULE_STATE) or {}

    def write(value: dict[str, Any]) -> None:
        lake.write_state(SCHEDULE_STATE, value)

    return Runner(schedule_jobs(lake, settings, targets), settings.scheduler, (read, write))


def run_scheduler(lake: Lake, settings: Settings) -> None:
    """Run ``gpuledger schedule`` until SIGTERM."""
    runner(lake, settings).run_forever()
