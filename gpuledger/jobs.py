"""Wiring the parts together: a source's rows into the warehouse, the rollup with analysis' rules, a report.

Each function is what one CLI command does, without the CLI: tests and the scheduler call them directly.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.pricing import PriceCatalog, prices_table
from collector.agent import AgentStats, NodeAgent, Outcome, Spool
from collector.errors import NotStored
from collector.fleet import plan
from collector.metrics import LiveMetrics, serve
from collector.prometheus.client import PrometheusClient
from collector.prometheus.follow import Follower, FollowStep
from collector.prometheus.scraper import PrometheusScraper, ScrapeResult, Store
from collector.rows import Records, Rows
from collector.simulate import FleetTelemetry
from gpuledger.settings import Settings
from warehouse import rollup
from warehouse.ingest import append, append_many
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing
from warehouse.malformed import count_malformed
from warehouse.schema import PRICES, utc_now

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SimulateResult:
    gpus: int
    days: int
    samples_written: int
    allocations_written: int
    rollup: rollup.RollupResult


def simulate(
    lake: Lake,
    settings: Settings,
    *,
    gpus: int,
    days: int,
    seed: int,
    end: dt.datetime,
    progress: Progress | None = None,
    rollup_progress: Progress | None = None,
) -> SimulateResult:
    """Simulate a fleet into the warehouse, day by day, store the price catalog it is priced with (the `prices`
    table), then bring the minute rollup up to date."""
    fleet = plan(gpus, days, seed, end)
    telemetry = FleetTelemetry(fleet)
    samples = allocations = 0
    with lake.writing():
        for i, batch in enumerate(telemetry.days()):
            written = ingest(lake, Rows(batch.samples, batch.allocations, batch.nodes))
            samples += written.samples
            allocations += written.allocations
            if progress:
                progress(i + 1, days)
        append(lake, PRICES, prices_table(PriceCatalog.build(settings.price_overrides())))
        result = refresh(lake, settings, rollup_progress)
    return SimulateResult(fleet.gpu_count, days, samples, allocations, result)


def refresh(
    lake: Lake, settings: Settings, progress: Progress | None = None, runner: rollup.Runner | None = None
) -> rollup.RollupResult:
    """The minute rollup and daily summaries, in this process or by ``runner`` (``gpuledger.distributed_rollup``)."""
    with diagnosing(lake):
        return rollup.refresh(
            lake, settings.state_rules, settings.rollup, progress, summaries=settings.summaries.all(), runner=runner
        )


@dataclass(frozen=True)
class IngestResult:
    samples: int
    allocations: int
    nodes: int


def ingest(lake: Lake, rows: Rows) -> IngestResult:
    """Append one source's rows to the warehouse (each table idempotently), and add the lines its answers had that
    could not be read to the warehouse's running count; the rollup is refreshed separately."""
    with lake.writing():
        samples, allocations, nodes = append_many(lake, rows.batches())
        if rows.malformed_lines:
            sources = set(rows.samples.column("source").to_pylist()) or {"unknown"}
            count_malformed(
                lake,
                source=", ".join(sorted(str(s) for s in sources)),
                lines=rows.malformed_lines,
                scrapes=rows.malformed_scrapes,
                now=utc_now(),
            )
    return IngestResult(samples.rows_written, allocations.rows_written, nodes.rows_written)


def run_agent(
    lake_root: Path,
    read: Callable[[], Rows | Records],
    settings: Settings,
    *,
    interval_s: float,
    duration_s: float | None = None,
    once: bool = False,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
    on_sample: Callable[[Rows | Records], None] | None = None,
    on_serving: Callable[[str, int], None] | None = None,
) -> AgentStats:
    """`gpuledger collect`: sample with ``read`` until SIGTERM/SIGINT (or the duration), storing into the warehouse.

    The warehouse is opened on every flush, so a warehouse that disappears or turns read-only sends batches to the
    spool instead of stopping the agent. An unusable spool or a /metrics port that cannot be bound stops it before
    the first sample; ``on_serving(addr, port)`` is called once /metrics is bound. With ``once``, a sample that was
    not stored raises NotStored (the job was not done, even when the batch waits in the spool).
    """
    spool = Spool(settings.spool_dir, int(settings.spool_max_mib * (1 << 20)))
    spool.prepare()
    live = LiveMetrics() if metrics_port is not None else None

    def store(rows: Rows) -> IngestResult:
        return ingest(Lake(lake_root, create=True), rows)

    def sampled(rows: Rows | Records) -> None:
        if live is not None:
            live.update(rows)
        if on_sample is not None:
            on_sample(rows)

    agent = NodeAgent(
        read,
        store,
        spool,
        interval_s=interval_s,
        flush_every_s=settings.flush_every_s,
        on_sample=sampled,
    )
    server = serve(live, metrics_port, metrics_addr) if live is not None and metrics_port is not None else None
    if server is not None and on_serving is not None:
        on_serving(str(server.server_address[0]), server.server_port)
    previous = {sig: signal.signal(sig, lambda *_: agent.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = agent.run(duration_s=duration_s, once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.shutdown()
            server.server_close()
    if once and stats.last_batch in (Outcome.SPOOLED, Outcome.REJECTED, Outcome.LOST):
        kept = {Outcome.SPOOLED: spool.directory, Outcome.REJECTED: spool.bad_dir}.get(stats.last_batch)
        rejected = stats.last_batch is Outcome.REJECTED
        raise NotStored(lake_root, stats.last_error or "unknown error", kept, rejected=rejected)
    return stats


def scrape(
    lake: Lake,
    settings: Settings,
    *,
    url: str,
    start: dt.datetime,
    end: dt.datetime,
    step_s: int,
    progress: Progress | None = None,
) -> ScrapeResult:
    """`gpuledger scrape`: copy [start, end) from Prometheus (resuming where the last run stopped), then roll up."""
    scraper = _scraper(lake, settings, url, step_s)
    result = scraper.scrape(start, end, progress=progress)
    if result.chunks:
        refresh(lake, settings)
    return result


def _scraper(lake: Lake, settings: Settings, url: str, step_s: int) -> PrometheusScraper:
    client = PrometheusClient(
        url, timeout_s=settings.prometheus_timeout_s, max_body_mib=settings.prometheus_max_body_mib
    )
    return PrometheusScraper(
        client,
        cluster=settings.cluster,
        store=scrape_store(lake),
        read_state=lake.read_state,
        step_s=step_s,
        settle_s=settings.prometheus_settle_s,
        in_flight=settings.prometheus_queries_in_flight,
    )


def follow(
    lake: Lake,
    settings: Settings,
    *,
    url: str,
    start: dt.datetime,
    step_s: int,
    stop: threading.Event,
    on_step: Callable[[FollowStep], None] | None = None,
    refresh_rollup: bool = False,
) -> None:
    """`gpuledger scrape --follow`: scrape each interval of ``url`` as it closes until ``stop`` is set, from the
    warehouse's watermark when it holds one (whatever ``start`` says: no gap after a restart), else from ``start``.
    With ``refresh_rollup``, the rollup is brought up to date after each step that stored rows. Never sets signal
    handlers (the caller owns them) and never raises for a Prometheus or a disk that fails (see
    ``collector.prometheus.follow``)."""
    scraper = _scraper(lake, settings, url, step_s)
    done = scraper.done_spans()
    if done:
        start = min(start, dt.datetime.fromtimestamp(done[-1][1], dt.UTC))

    def after_store(_result: ScrapeResult) -> None:
        if refresh_rollup:
            with lake.writing():
                refresh(lake, settings)

    Follower(scraper, start=start, stop=stop, after_store=after_store, on_step=on_step).run()


def run_exporter(
    read: Callable[[], Rows | Records],
    *,
    interval_s: float,
    metrics_port: int,
    metrics_addr: str = "127.0.0.1",
    stop: threading.Event | None = None,
    duration_s: float | None = None,
    on_serving: Callable[[str, int], None] | None = None,
) -> int:
    """`gpuledger collect --no-warehouse`: sample with ``read`` every ``interval_s`` and serve the newest readings on
    /metrics, storing nothing (Prometheus scrapes them; `gpuledger scrape --follow` brings them to the warehouse).
    Runs until SIGTERM/SIGINT (or ``stop``, or the duration); returns the samples taken. A reading that fails is
    logged and the last good values keep being served."""
    stop = stop or threading.Event()
    live = LiveMetrics()
    server = serve(live, metrics_port, metrics_addr)
    if on_serving is not None:
        on_serving(str(server.server_address[0]), server.server_port)
    in_main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    )
    taken = 0
    began = time.monotonic()
    try:
        while not stop.is_set():
            tick = time.monotonic()
            try:
                live.update(read())
                taken += 1
            except Exception as exc:  # a GPU or the kubelet failing one reading must not stop the exporter
                log.error("collect: a reading failed (the last values keep being served): %s", exc)
            if duration_s is not None and time.monotonic() - began >= duration_s:
                break
            stop.wait(max(0.0, interval_s - (time.monotonic() - tick)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        server.server_close()
    return taken


def scrape_store(lake: Lake) -> Store:
    """A scrape's store: one chunk's rows into ``lake``, then the state document that records the chunk done, both
    under the writer lock."""

    def store(rows: Rows, state_name: str, state: dict[str, Any]) -> IngestResult:
        with lake.writing():
            written = ingest(lake, rows)
            lake.write_state(state_name, state)
        return written

    return store


@contextmanager
def removed_on_failure(path: Path) -> Iterator[None]:
    """Remove the folders a failing command made for ``path`` (the first missing one up from it), so a failed
    command leaves nothing it created behind; never a folder that existed before, nor one holding a stored part."""
    made = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    try:
        yield
    except BaseException:
        if made is not None and made.is_dir() and not any(made.rglob("*.parquet")):
            shutil.rmtree(made, ignore_errors=True)
        raise
