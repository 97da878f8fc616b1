"""`gpuledger scrape` against a real Prometheus (the Debian ``prometheus`` binary, backfilled with ``promtool``) that
answers but holds no DCGM series: one line naming what it does hold, exit 2, nothing stored, no watermark.

The history is tests/prometheus_server.py's cluster without its DCGM series: kube-state-metrics only, plus an
``up`` series for each scrape job, as a Prometheus that never scraped dcgm-exporter holds it.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from collector.errors import NoDcgmSeries
from collector.prometheus.client import PrometheusClient
from collector.prometheus.scraper import PrometheusScraper
from gpuledger.jobs import scrape_store
from tests.prometheus_server import (
    FixtureSeries,
    History,
    PrometheusServer,
    create_blocks,
    history_end,
    make_history,
    require_binaries,
)
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES, NODES


@pytest.fixture(scope="module")
def kube_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[History, Path]:
    require_binaries()
    full = make_history(history_end(), hours=1)
    series = [s for s in full.series if not s.name.startswith("DCGM_")]
    times = list(full.times)
    for job, instance in (("kube-state-metrics", "10.0.3.4:8080"), ("node-exporter", "10.0.1.23:9100")):
        series.append(FixtureSeries("up", {"job": job, "instance": instance}, dict.fromkeys(times, 1.0)))
    history = dataclasses.replace(full, series=series, holdings=[])
    root = tmp_path_factory.mktemp("prometheus-no-dcgm")
    history.write_openmetrics(root / "history.om")
    create_blocks(root / "history.om", root / "tsdb")
    return history, root / "tsdb"


@pytest.fixture
def server(kube_only: tuple[History, Path], tmp_path: Path) -> Iterator[PrometheusServer]:
    data = tmp_path / "prometheus"
    shutil.copytree(kube_only[1], data)
    started = PrometheusServer(data).start()
    yield started
    started.stop()


def expected_line(url: str, history: History) -> str:
    window = f"{history.start_dt.isoformat()} to {history.end_dt.isoformat()}"
    return (
        f"Prometheus at {url} holds no DCGM series (DCGM_FI_*) from {window}; its jobs: kube-state-metrics, "
        "node-exporter; its metrics include: kube_job_owner, kube_node_info, kube_node_labels, "
        "kube_pod_container_resource_requests, kube_pod_init_container_resource_requests, ...: point --prometheus at "
        "the Prometheus that scrapes dcgm-exporter, or add dcgm-exporter to its scrape targets (nothing was stored and "
        "the window is not marked done)"
    )


def test_the_scraper_stores_nothing_and_keeps_no_watermark(
    server: PrometheusServer, kube_only: tuple[History, Path], tmp_path: Path
) -> None:
    history, _ = kube_only
    lake = Lake(tmp_path / "wh", create=True)
    client = PrometheusClient(server.url, env={})
    scraper = PrometheusScraper(client, cluster="c1", store=scrape_store(lake), read_state=lake.read_state)
    with pytest.raises(NoDcgmSeries) as empty:
        scraper.scrape(history.start_dt, history.end_dt)
    assert str(empty.value) == expected_line(server.url, history)
    assert lake.read_state(scraper.state_name) is None
    assert scraper.done_spans() == []
    assert lake.scan(GPU_SAMPLES).collect().height == 0 and lake.scan(NODES).collect().height == 0


def test_the_scrape_command_exits_2_with_one_line(
    cli: Callable[..., Result], server: PrometheusServer, kube_only: tuple[History, Path], tmp_path: Path
) -> None:
    history, _ = kube_only
    wh = tmp_path / "wh"
    args = ["scrape", "--prometheus", server.url, "--warehouse", str(wh)]
    result = cli(*args, "--start", history.start_dt.isoformat(), "--end", history.end_dt.isoformat())
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: {expected_line(server.url, history)}\n")
    assert result.stderr.count("Error:") == 1
    assert not wh.exists()  # the failed scrape leaves no warehouse it created (and so no watermark)
