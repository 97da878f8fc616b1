"""The scheduler: crontab semantics, time zones, misfires across restarts, a cron job fired in real time, and
`gpuledger schedule` as a real subprocess delivering a report exactly once across a restart."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.config import Scheduler
from alerts.schedule import Job, Runner, ScheduleError, cron_trigger, latest_fire, timezone
from tests.alert_servers import SECRET_PATH, Webhook
from tests.conftest import REPO, allocation_rows, sample_rows
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES

UTC = timezone("UTC")
FRIDAY = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 9 * * 1", "2026-11-23T09:00:00+00:00"),  # crontab 1 = Monday (APScheduler 3 alone would say Tuesday)
        ("0 9 * * 0", "2026-11-22T09:00:00+00:00"),  # 0 = Sunday
        ("0 9 * * 7", "2026-11-22T09:00:00+00:00"),  # 7 = Sunday too
        ("0 9 * * 1-5", "2026-11-23T09:00:00+00:00"),
        ("0 13 * * 5-1", "2026-11-20T13:00:00+00:00"),  # a range through the weekend
        ("0 9 * * sat", "2026-11-21T09:00:00+00:00"),
        ("30 12 * * *", "2026-11-20T12:30:00+00:00"),
        ("15 0 12 * * *", "2026-11-20T12:00:15+00:00"),  # six fields: seconds first
    ],
)
def test_crontab_semantics(expr: str, expected: str) -> None:
    assert cron_trigger(expr, UTC).get_next_fire_time(None, FRIDAY).isoformat() == expected  # type: ignore[union-attr]


def test_cron_reads_the_configured_time_zone() -> None:
    berlin = cron_trigger("0 9 * * 1", timezone("Europe/Berlin"))
    fire = berlin.get_next_fire_time(None, FRIDAY)
    assert fire is not None and fire.astimezone(dt.UTC).isoformat() == "2026-11-23T08:00:00+00:00"  # CET = UTC+1
    summer = berlin.get_next_fire_time(None, dt.datetime(2026, 6, 5, tzinfo=dt.UTC))
    assert summer is not None and summer.astimezone(dt.UTC).hour == 7  # CEST = UTC+2


def test_bad_expressions_are_one_line_errors() -> None:
    with pytest.raises(ScheduleError) as bad:
        cron_trigger("0 9 * *", UTC)
    assert (
        str(bad.value)
        == "cron expression '0 9 * *' needs 5 fields (minute hour day month weekday) or 6 (seconds first)"
    )
    with pytest.raises(ScheduleError, match=r"^cron weekday '9' is not 0-7"):
        cron_trigger("0 9 * * 9", UTC)
    with pytest.raises(ScheduleError, match=r"^cron expression '0 25 \* \* \*' is not valid"):
        cron_trigger("0 25 * * *", UTC)
    with pytest.raises(ScheduleError, match=r"^unknown time zone 'Mars/Olympus'"):
        timezone("Mars/Olympus")


def test_latest_fire() -> None:
    hourly = cron_trigger("0 * * * *", UTC)
    start = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
    assert latest_fire(hourly, start, start + dt.timedelta(hours=3, minutes=5)) == start + dt.timedelta(hours=3)
    assert latest_fire(hourly, start, start + dt.timedelta(minutes=59)) is None


class Memory:
    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data or {}

    def read(self) -> dict[str, Any]:
        return dict(self.data)

    def write(self, value: dict[str, Any]) -> None:
        self.data = value


def test_a_cron_job_fires_in_real_time() -> None:
    fired: list[dt.datetime] = []
    memory = Memory()
    runner = Runner(
        [Job("tick", fired.append, cron="* * * * * *")],
        Scheduler(misfire_grace_s=5),
        (memory.read, memory.write),
    )
    thread = threading.Thread(target=runner.run_forever, kwargs={"install_signals": False})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(fired) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert len(fired) >= 2
    assert all(f.microsecond == 0 and f.tzinfo is not None for f in fired)  # the scheduled second, not "now"
    assert fired[1] > fired[0]
    assert memory.data["last_fire"]["tick"] == fired[-1].isoformat()


def test_a_run_missed_while_stopped_runs_once_within_the_grace_time() -> None:
    now = dt.datetime(2026, 11, 23, 9, 20, tzinfo=dt.UTC)
    ran: list[dt.datetime] = []
    state = Memory({"last_fire": {"weekly": "2026-11-16T09:00:00+00:00", "hourly": "2026-11-23T06:00:00+00:00"}})
    jobs = [Job("weekly", ran.append, cron="0 9 * * 1"), Job("hourly", ran.append, cron="0 * * * *")]
    runner = Runner(jobs, Scheduler(misfire_grace_s=3600, timezone="UTC"), (state.read, state.write), clock=lambda: now)
    assert runner.catch_up() == ["weekly", "hourly"]
    assert ran == [dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)] * 2  # hourly: 07, 08 and 09 coalesced into one
    late = Runner(jobs, Scheduler(misfire_grace_s=600), (state.read, state.write), clock=lambda: now)
    state.data = {"last_fire": {"weekly": "2026-11-16T09:00:00+00:00"}}
    assert late.catch_up() == []  # 20 minutes late is past a 10-minute grace


def test_a_failing_job_is_logged_and_the_scheduler_keeps_going(caplog: Any) -> None:
    memory = Memory()

    def boom(_fired: dt.datetime) -> None:
        raise RuntimeError("warehouse unreachable")

    runner = Runner([Job("boom", boom, cron="0 * * * *")], Scheduler(), (memory.read, memory.write))
    runner._run(runner.jobs[0], FRIDAY)
    assert "job boom (run for 2026-11-20T12:00:00+00:00) failed: RuntimeError: warehouse unreachable" in caplog.text


# --------------------------------------------------------------------------------------- `gpuledger schedule`


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def yesterday_fleet(root: Path) -> None:
    """One GPU sampled all of yesterday (UTC), so the daily report fired today has data."""
    lake = Lake(root, create=True)
    start = dt.datetime.combine(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    with lake.writing():
        append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(1440), start=start, util=[0.0] * 600 + [70.0] * 840))
        append(lake, GPU_ALLOCATIONS, allocation_rows("GPU-a", range(1440), start=start))


def start_scheduler(config: Path, hook: Webhook, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    env["GPULEDGER_SLACK_WEBHOOK_URL"] = hook.url
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gpuledger.cli", "-v", "schedule", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; scheduler log:\n{log.read_text()}"
        time.sleep(0.1)


@pytest.mark.slow
def test_gpuledger_schedule_delivers_exactly_once_across_restarts(tmp_path: Path, webhook: Webhook) -> None:
    root = tmp_path / "wh"
    yesterday_fleet(root)
    config = tmp_path / "gpuledger.toml"
    config.write_text(
        f"warehouse = '{root}'\n"
        "[slack]\n"
        "[alerts]\ncron = ''\n"
        "[reports]\ndaily = '* * * * * *'\nweekly = ''\nchannels = ['slack']\n"  # the daily report, every second
        "[scheduler]\ntimezone = 'UTC'\noutbox_every_s = 0.5\nmisfire_grace_s = 60\n"
        "[delivery]\nattempts = 2\nbackoff_s = 0.05\nmax_backoff_s = 0.2\ntimeout_s = 1\n"
    )
    log = tmp_path / "schedule.log"
    webhook.mode = "error"

    first = start_scheduler(config, webhook, log)
    try:
        wait_for(lambda: webhook.requests >= 4, "retries against the failing webhook", log)
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0, log.read_text()
    finally:
        first.kill()
    assert "scheduler stopped" in log.read_text()
    assert webhook.accepted == []

    webhook.mode = "ok"
    second = start_scheduler(config, webhook, log)
    try:
        wait_for(lambda: len(webhook.accepted) >= 1, "the queued report to be delivered", log)
        time.sleep(1.5)  # more daily fires and outbox ticks: the report is in the ledger, nothing more is sent
        second.kill()  # a crash this time
        second.wait(10)
    finally:
        second.kill()

    third = start_scheduler(config, webhook, log)
    try:
        wait_for(lambda: log.read_text().count("scheduler started") >= 3, "the third start", log)
        time.sleep(2.0)
        third.send_signal(signal.SIGTERM)
        assert third.wait(20) == 0, log.read_text()
    finally:
        third.kill()

    assert len(webhook.accepted) == 1
    header = webhook.accepted[0]["blocks"][0]["text"]["text"]
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    assert header == f"gpuledger daily report: {yesterday}"
    text = log.read_text()
    assert "could not deliver report:daily:" in text  # the failures were loud
    assert SECRET_PATH not in text


def test_schedule_errors_are_one_line(tmp_path: Path, cli: Callable[..., Any], webhook: Webhook) -> None:
    root = tmp_path / "wh"
    Lake(root, create=True)
    config = tmp_path / "gpuledger.toml"
    config.write_text(f"warehouse = '{root}'\n[slack]\n[reports]\nweekly = '0 9 * * mon-fri/x'\n")
    result = cli("schedule", "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: no Slack webhook URL: set the environment variable GPULEDGER_SLACK_WEBHOOK_URL or "
        "GPULEDGER_SLACK_WEBHOOK_URL_FILE (a file path)\n"
    )
    secret = tmp_path / "hook"
    secret.write_text(webhook.url)
    config.write_text(config.read_text().replace("[slack]\n", f"[slack]\nwebhook_url_file = '{secret}'\n"))
    result = cli("schedule", "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr == ("Error: cron weekday 'mon-fri/x' is not valid: use 0-7 (0 and 7 are Sunday) or mon..sun\n")
    assert SECRET_PATH not in result.output
