"""Benchmark 5b: the process CPU of one follow step, the newest minute of a ``gpus``-GPU cluster, against its target.

What ``gpuledger scrape --follow`` does each minute: a history of ``gpus`` GPUs (:func:`bench.scrape.write_history`:
8 per node, the DCGM fields the scraper reads, every fourth GPU held by a pod, kube-state-metrics series) is
backfilled with ``promtool`` and served by the ``prometheus`` binary; a warehouse is filled by scraping all of it
but its last ``repeats`` minutes, so its watermark stands just before them. Then each measured repeat scrapes the
next minute with the clock just past it, so exactly one step is planned, fetched, mapped and stored (warehouse
append and watermark included), like a follower's step. The figure is ``time.process_time`` of that
``PrometheusScraper.scrape``, best of ``repeats``; the baseline is the process CPU of ``requests.get(...).content``
of the very same requests (what any client spends to have the bytes), measured right after each step.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import requests

from bench.common import Progress, Result, Target
from bench.scrape import ENDS_BEFORE_NOW_S, STEP_S, _Recording, write_history
from collector.prometheus.client import PrometheusClient
from collector.prometheus.scraper import PrometheusScraper
from gpuledger.jobs import scrape_store
from warehouse.lake import Lake

TARGET_CPU_S = 1.0
HOURS = 1
"""History before the measured minutes: enough for every series to be there, small enough to backfill quickly."""


def run(*, gpus: int, workdir: Path, progress: Progress, repeats: int = 3) -> list[Result]:
    from tests.prometheus_server import PROMETHEUS, PROMTOOL, PrometheusServer, create_blocks

    if PROMETHEUS is None or PROMTOOL is None:
        progress.note(
            "follow_step: skipped, the prometheus and promtool binaries are not installed (apt-get install prometheus)"
        )
        return []
    end = int(time.time() // STEP_S) * STEP_S - ENDS_BEFORE_NOW_S
    root = Path(tempfile.mkdtemp(dir=workdir, prefix="follow-"))
    with progress.step(f"follow_step: backfilling {gpus} GPUs x {HOURS} h into Prometheus"):
        write_history(root / "history.om", gpus=gpus, hours=HOURS, end=end)
        create_blocks(root / "history.om", root / "tsdb")
        (root / "history.om").unlink()
    server = PrometheusServer(root / "tsdb").start()
    try:
        ours, bare, points = _measure(server.url, end, root, progress, repeats)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    progress.note(
        f"follow_step: {points:,} points a step; scraper CPU "
        + ", ".join(f"{t:.3f}" for t in ours)
        + " s; raw download CPU "
        + ", ".join(f"{t:.3f}" for t in bare)
        + " s"
    )
    note = (
        f"{gpus} GPUs, the newest {STEP_S} s step into a warehouse at its watermark, process CPU, best of "
        f"{repeats}; baseline: requests.get of the same queries"
    )
    return [
        Result(
            "follow_step_cpu_s",
            min(ours),
            "s",
            baseline=min(bare),
            target=Target("<=", TARGET_CPU_S),
            note=note,
        )
    ]


def _measure(url: str, end: int, root: Path, progress: Progress, repeats: int) -> tuple[list[float], list[float], int]:
    first = end - HOURS * 3600 + STEP_S
    steps = [end - STEP_S * i for i in reversed(range(repeats))]  # the last ``repeats`` minutes, oldest first
    lake = Lake(root / "warehouse", create=True)
    now = {"t": steps[0]}

    def scraper(session: requests.Session) -> PrometheusScraper:
        return PrometheusScraper(
            PrometheusClient(url, session=session, env={}),
            cluster="bench",
            store=scrape_store(lake),
            read_state=lake.read_state,
            clock=lambda: _at(now["t"]),
            step_s=STEP_S,
            settle_s=0,
        )

    with progress.step("follow_step: the history before the measured minutes into the warehouse"):
        scraper(requests.Session()).scrape(_at(first), _at(steps[0]))
    ours: list[float] = []
    bare: list[float] = []
    points = 0
    with progress.step(f"follow_step: one step at a time, best of {repeats}") as update:
        for i, step in enumerate(steps):
            now["t"] = step + STEP_S
            session = _Recording()
            following = scraper(session)
            started = time.process_time()
            result = following.scrape(_at(first), _at(step + STEP_S))
            ours.append(time.process_time() - started)
            if result.chunks != 1 or result.watermark != _at(step + STEP_S):
                raise AssertionError(f"follow_step: expected one chunk up to {step + STEP_S}, got {result}")
            points = result.points
            raw = requests.Session()
            started = time.process_time()
            for target, params in session.sent:
                response = raw.get(target, params=params, timeout=120)
                response.raise_for_status()
                _ = response.content
            bare.append(time.process_time() - started)
            update(f"step {i + 1}/{repeats}: scraper {ours[-1]:.3f} s CPU, raw {bare[-1]:.3f} s CPU")
    return ours, bare, points


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
