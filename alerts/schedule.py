"""The scheduler of ``gpuledger schedule``: APScheduler 3.x with cron triggers, misfire grace, coalescing, SIGTERM.

Cron expressions are standard crontab: five fields (minute hour day month weekday, weekday 0 or 7 = Sunday), or six
with seconds first; they are read in the configured time zone. Jobs run one at a time (a single worker thread), so
jobs never race on the warehouse state. A job that fails logs one loud line and is retried by its own means (the
outbox, the list of due reports): the scheduler itself keeps running.

APScheduler's own misfire handling covers a busy worker; across a restart it knows nothing, so the last run of each
cron job is kept in the warehouse (``_state/schedule.json``) and, on start, a run missed while the scheduler was down
runs once (coalesced) when it is no more than ``misfire_grace_s`` late.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import signal
import threading
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from alerts.config import Scheduler as SchedulerSettings
from alerts.errors import AlertsError

log = logging.getLogger("gpuledger.schedule")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
StateIO = tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]
"""(read, write) of the scheduler's small state document."""


class ScheduleError(AlertsError):
    """A cron expression or time zone that cannot be used; the message says which and how to write it."""


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[dt.datetime], object]
    """Called with the fire time it stands for (a cron job's scheduled time, else now)."""
    cron: str | None = None
    every_s: float | None = None
    run_at_start: bool = False


def timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin") from None


def cron_trigger(expr: str, tz: zoneinfo.ZoneInfo) -> CronTrigger:
    """A trigger from a crontab expression (5 fields, or 6 with seconds first), weekdays as crontab counts them."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ScheduleError(
            f"cron expression {expr!r} needs 5 fields (minute hour day month weekday) or 6 (seconds first)"
        )
    second, minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekdays(weekday),
            timezone=tz,
        )
    except ValueError as exc:
        raise ScheduleError(f"cron expression {expr!r} is not valid ({exc})") from None


def _weekdays(field: str) -> str:
    """Crontab weekdays (0-7, Sunday = 0 or 7; ranges and steps) as APScheduler's names (APScheduler 3 counts
    0 = Monday, so numbers are never passed through)."""
    if field in ("*", "?"):
        return "*"
    days: list[str] = []
    for item in field.lower().split(","):
        match = re.fullmatch(r"(\*|\d|[a-z]{3})(?:-(\d|[a-z]{3}))?(?:/(\d+))?", item)
        if not match:
            raise ScheduleError(f"cron weekday {field!r} is not valid: use 0-7 (0 and 7 are Sunday) or mon..sun")
        first, last, step = match.groups()
        if first == "*":
            lo, hi = 0, 6
        else:
            lo = _day_number(first)
            hi = _day_number(last) if last else (6 if step else lo)
        if last and hi < lo:
            hi += 7
        days += [WEEKDAYS[n % 7] for n in range(lo, hi + 1, int(step or 1))]
    return ",".join(dict.fromkeys(days))


def _day_number(token: str) -> int:
    if token.isdigit():
        if int(token) > 7:
            raise ScheduleError(f"cron weekday {token!r} is not 0-7 (0 and 7 are Sunday) or sun..sat")
        return int(token) % 7
    if token not in WEEKDAYS:
        raise ScheduleError(f"cron weekday {token!r} is not one of sun, mon, tue, wed, thu, fri, sat")
    return WEEKDAYS.index(token)


def latest_fire(trigger: CronTrigger, after: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The last fire time of ``trigger`` in (after, now], or None."""
    latest = None
    fire = trigger.get_next_fire_time(after, after)
    if fire is not None and fire <= after:
        fire = trigger.get_next_fire_time(fire, after + dt.timedelta(microseconds=1))
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(microseconds=1))
    return latest


class Runner:
    """Builds the APScheduler scheduler for ``jobs`` and runs it until SIGTERM/SIGINT (or ``stop``)."""

    def __init__(
        self,
        jobs: list[Job],
        settings: SchedulerSettings,
        state: StateIO,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings
        self.tz = timezone(settings.timezone)
        self.jobs = jobs
        self.triggers = {j.name: cron_trigger(j.cron, self.tz) for j in jobs if j.cron}
        self.read_state, self.write_state = state
        self.clock = clock
        self.stop = threading.Event()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={
                "coalesce": settings.coalesce,
                "misfire_grace_time": settings.misfire_grace_s,
                "max_instances": 1,
            },
            timezone=self.tz,
        )

    def _call(self, job: Job) -> None:
        now = self.clock()
        fired = now
        trigger = self.triggers.get(job.name)
        if trigger is not None:
            fired = latest_fire(trigger, now - dt.timedelta(seconds=self.settings.misfire_grace_s), now) or now
        self._run(job, fired)

    def _run(self, job: Job, fired: dt.datetime) -> None:
        try:
            job.run(fired.astimezone(dt.UTC))
        except Exception as exc:
            log.error("job %s (run for %s) failed: %s: %s", job.name, fired.isoformat(), type(exc).__name__, exc)
            log.debug("job %s failed", job.name, exc_info=True)
        finally:
            if job.cron:
                state = self.read_state()
                state.setdefault("last_fire", {})[job.name] = fired.astimezone(dt.UTC).isoformat()
                self.write_state(state)

    def catch_up(self) -> list[str]:
        """Run once each cron job whose fire time passed while no scheduler ran, if within the grace time."""
        now = self.clock()
        ran = []
        last = self.read_state().get("last_fire", {})
        for job in self.jobs:
            if job.name not in self.triggers or job.name not in last:
                continue
            missed = latest_fire(self.triggers[job.name], dt.datetime.fromisoformat(last[job.name]), now)
            if missed is None:
                continue
            if (now - missed).total_seconds() > self.settings.misfire_grace_s:
                log.warning("job %s missed its run at %s, beyond the grace time: skipped", job.name, missed)
                continue
            log.info("job %s missed its run at %s while stopped: running it now", job.name, missed.isoformat())
            self._run(job, missed)
            ran.append(job.name)
        return ran

    def start(self) -> None:
        for job in self.jobs:
            if job.cron:
                trigger: CronTrigger | IntervalTrigger = self.triggers[job.name]
            elif job.every_s:
                trigger = IntervalTrigger(seconds=job.every_s, timezone=self.tz)
            else:
                raise ScheduleError(f"job {job.name} has neither a cron expression nor an interval")
            extra = {"next_run_time": self.clock()} if job.run_at_start else {}
            self.scheduler.add_job(self._call, trigger, args=[job], id=job.name, name=job.name, **extra)
        self.scheduler.start()
        described = ", ".join(
            f"{j.name} ({j.cron} {self.settings.timezone})" if j.cron else f"{j.name} (every {j.every_s:g} s)"
            for j in self.jobs
        )
        log.info("scheduler started: %s", described)

    def run_forever(self, *, install_signals: bool = True) -> None:
        """Start, run missed jobs, and block until SIGTERM or SIGINT; then finish the running job and stop."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _frame: self._signalled(signum))
        self.catch_up()
        self.start()
        while not self.stop.wait(0.5):
            pass
        log.info("stopping: waiting for the running job to finish")
        self.scheduler.shutdown(wait=True)
        log.info("scheduler stopped")

    def _signalled(self, signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        self.stop.set()
