"""The follower (``collector.prometheus.follow``): step after step over a real Prometheus holding a backfilled
history, with the clock injected; Prometheus killed and started again on the same port and data; a full disk; a
server answering 5xx or 401; the backoff; a prompt stop."""

from __future__ import annotations

import datetime as dt
import errno
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from collector.prometheus.client import PrometheusClient
from collector.prometheus.follow import Follower, FollowStep
from collector.prometheus.scraper import PrometheusScraper
from collector.rows import Rows
from gpuledger.jobs import IngestResult, scrape_store
from tests import prometheus_server
from tests.prometheus_server import (
    Answer,
    History,
    PrometheusServer,
    StubServer,
    free_port,
)
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

history = prometheus_server.history
tsdb_template = prometheus_server.tsdb_template
start_prometheus = prometheus_server.start_prometheus
prometheus = prometheus_server.prometheus
SETTLE_S = 120


class Clock:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.at, dt.UTC)


def follower(
    url: str,
    lake: Lake,
    clock: Clock,
    *,
    store: Callable[[Rows, str, dict[str, Any]], IngestResult] | None = None,
    stop: threading.Event | None = None,
    waits: list[float] | None = None,
    start: int | None = None,
) -> Follower:
    client = PrometheusClient(url, tries=2, backoff_s=0.01, timeout_s=5, sleep=lambda _s: None)
    scraper = PrometheusScraper(
        client,
        cluster="c1",
        store=store or scrape_store(lake),
        read_state=lake.read_state,
        clock=clock,
        settle_s=SETTLE_S,
    )
    begin = clock() if start is None else Clock(start)()
    waited = waits if waits is not None else []
    return Follower(scraper, start=begin, stop=stop or threading.Event(), wait=waited.append, jitter=lambda: 0.0)


def samples(lake: Lake) -> pl.DataFrame:
    return lake.scan(GPU_SAMPLES).collect().drop("ingested_at", strict=False).sort("gpu_uuid", "mig_instance_id", "ts")


def one_shot(url: str, root: Path, start: int, end: int) -> pl.DataFrame:
    """The same window scraped at once into a warehouse of its own: what following must add up to."""
    lake = Lake(root, create=True)
    client = PrometheusClient(url)
    clock = Clock(end + SETTLE_S)
    scraper = PrometheusScraper(client, cluster="c1", store=scrape_store(lake), read_state=lake.read_state, clock=clock)
    scraper.scrape(Clock(start)(), Clock(end)())
    return samples(lake)


def test_steps_follow_the_clock_and_survive_a_prometheus_restart(
    tmp_path: Path, history: History, start_prometheus: Callable[[], PrometheusServer]
) -> None:
    server = start_prometheus()
    lake = Lake(tmp_path / "wh", create=True)
    clock = Clock(history.start + SETTLE_S)
    follow = follower(server.url, lake, clock, start=history.start)
    steps: list[FollowStep] = []
    for minutes in (30, 31, 32):
        clock.at = history.start + SETTLE_S + minutes * 60
        steps.append(follow.step())
    assert [s.ok for s in steps] == [True, True, True]
    assert [s.watermark for s in steps] == [Clock(history.start + m * 60)() for m in (30, 31, 32)]
    assert steps[1].samples > 0 and steps[1].points > 0
    assert all(0 < s.next_in_s <= 60 for s in steps)

    server.kill()
    clock.at += 600
    down = follow.step()
    assert not down.ok and down.samples == 0
    assert down.error is not None and "cannot be reached" in down.error and server.url in down.error
    assert down.watermark == steps[-1].watermark  # nothing was recorded done while it was down

    restarted = PrometheusServer(server.data_dir, server.port).start()  # the same port and data, as after a restart
    try:
        clock.at += 60
        back = follow.step()
        assert back.ok
        assert back.watermark == Clock(history.start + 43 * 60)()
        assert follow.scraper.done_spans() == [(history.start, history.start + 43 * 60)]
        expected = one_shot(server.url, tmp_path / "once", history.start, history.start + 43 * 60)
    finally:
        restarted.stop()
    assert_frame_equal(samples(lake), expected)


def test_a_full_disk_stops_writing_says_so_and_resumes(
    tmp_path: Path, history: History, prometheus: PrometheusServer, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC is injected at the store boundary (mounting a small filesystem needs privileges the tests do not
    assume): the step stores nothing and records nothing done; the next step, with space again, fetches it all."""
    lake = Lake(tmp_path / "wh", create=True)
    real = scrape_store(lake)
    full = {"on": True}

    def store(rows: Rows, name: str, state: dict[str, Any]) -> IngestResult:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(lake.root / "gpu_samples"))
        return real(rows, name, state)

    clock = Clock(history.start + SETTLE_S + 20 * 60)
    waits: list[float] = []
    follow = follower(prometheus.url, lake, clock, store=store, waits=waits, start=history.start)
    with caplog.at_level(logging.WARNING, logger="collector.prometheus.follow"):
        failed = [follow.step(), follow.step()]
    assert [s.ok for s in failed] == [False, False]
    assert (
        failed[0].error
        == f"the warehouse disk is full ({lake.root / 'gpu_samples'}): nothing is written until space is freed"
    )
    assert [s.next_in_s for s in failed] == [1.0, 2.0]
    assert len([r for r in caplog.records if "disk is full" in r.message]) == 1  # said once, not at every try
    assert follow.scraper.done_spans() == []

    full["on"] = False
    with caplog.at_level(logging.WARNING, logger="collector.prometheus.follow"):
        resumed = follow.step()
    assert resumed.ok and "resumed" in caplog.text
    assert follow.failures == 0
    assert_frame_equal(samples(lake), one_shot(prometheus.url, tmp_path / "once", history.start, history.start + 1200))


def test_5xx_backs_off_doubling_to_the_cap(tmp_path: Path) -> None:
    with StubServer([Answer(503, "busy")]) as stub:
        follow = follower(stub.url, Lake(tmp_path / "wh", create=True), Clock(1_800_000_000), start=1_799_990_000)
        follow.max_backoff_s = 8.0
        pauses = [follow.step().next_in_s for _ in range(6)]
    assert pauses == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_rejected_request_is_said_at_every_try(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with StubServer([Answer(401, "{}")]) as stub:
        follow = follower(stub.url, Lake(tmp_path / "wh", create=True), Clock(1_800_000_000), start=1_799_990_000)
        with caplog.at_level(logging.WARNING, logger="collector.prometheus.follow"):
            steps = [follow.step() for _ in range(3)]
    assert not any(s.ok for s in steps)
    assert len([r for r in caplog.records if "HTTP 401" in r.message]) == 3


def test_stop_ends_the_loop_between_steps(tmp_path: Path) -> None:
    stop = threading.Event()
    seen: list[FollowStep] = []
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: every step fails fast
    client = PrometheusClient(url, tries=1, timeout_s=2)
    lake = Lake(tmp_path / "wh", create=True)
    scraper = PrometheusScraper(client, cluster="c1", store=scrape_store(lake), read_state=lake.read_state)

    def on_step(step: FollowStep) -> None:
        seen.append(step)
        if len(seen) == 2:
            stop.set()

    loop = Follower(
        scraper, start=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), stop=stop, on_step=on_step, backoff_s=0.01
    )
    thread = threading.Thread(target=loop.run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(seen) == 2 and not any(s.ok for s in seen)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["collect", "--source", "nvml", "--no-warehouse"],
            "Error: --no-warehouse only serves /metrics: pass --metrics-port PORT (and not --once)\n",
        ),
        (
            ["collect", "--source", "nvml", "--no-warehouse", "--warehouse", "wh", "--metrics-port", "9400"],
            "Error: --warehouse and --no-warehouse are alternatives: pass one\n",
        ),
        (
            ["scrape", "--prometheus", "http://127.0.0.1:9", "--warehouse", "wh", "--follow", "--end", "-1m"],
            "Error: --follow runs until stopped: drop --end\n",
        ),
    ],
)
def test_follow_and_exporter_only_usage_errors(args: list[str], error: str) -> None:
    from click.testing import CliRunner

    from gpuledger.cli import main

    result = CliRunner().invoke(main, args)
    assert (result.exit_code, result.output) == (2, error)
