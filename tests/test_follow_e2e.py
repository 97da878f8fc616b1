"""The fleet-wide data path end to end: two live node agents (`collect --no-warehouse` over the NVML stand-in), a
real Prometheus scraping them every second, and `gpuledger scrape --follow` writing the warehouse, killed with
SIGKILL halfway and started again, then stopped with SIGTERM.

What must hold (README "From a Prometheus that already scrapes dcgm-exporter"): the warehouse holds every GPU of
both agents at every step Prometheus has a sample for, with the values Prometheus answers for those steps, once
each, and the spans recorded done are one contiguous span (the kill lost nothing, the restart doubled nothing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import requests

from tests.live_agents import Agent, scraping_prometheus, start_agents
from tests.prometheus_server import PrometheusServer, require_binaries
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

pytestmark = pytest.mark.slow
STEP_S = 1
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    require_binaries()
    started = start_agents(tmp_path, [1, 2])
    yield started
    for agent in started:
        agent.stop()


@pytest.fixture
def prometheus(tmp_path: Path, agents: list[Agent]) -> Iterator[PrometheusServer]:
    server = scraping_prometheus(tmp_path, agents).start()
    yield server
    server.stop()


def follower(url: str, warehouse: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GPULEDGER_CLUSTER": "c1",
        "GPULEDGER_PROMETHEUS_SETTLE_S": "2",
    }
    command = [sys.executable, "-m", "gpuledger.cli", "-v", "scrape", "--prometheus", url]
    command += ["--warehouse", str(warehouse), "--follow", "--step", str(STEP_S), "--start", "-20s"]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=warehouse.parent)


def done_spans(warehouse: Path) -> list[list[int]]:
    if not (warehouse / "_state").exists():
        return []
    states = [Lake(warehouse).read_state(p.stem) for p in (warehouse / "_state").glob("prometheus-*.json")]
    return [span for state in states if state for span in state["done"]]


def wait_for_progress(warehouse: Path, beyond: int, process: subprocess.Popen[bytes], log: Path) -> int:
    """Wait until a done span ends after ``beyond`` (epoch s); returns the newest end."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        ends = [end for _, end in done_spans(warehouse)]
        if ends and max(ends) > beyond:
            return max(ends)
        time.sleep(0.2)
    raise AssertionError(f"the follower stored nothing past {beyond}: {log.read_text(errors='replace')[-3000:]}")


def prometheus_values(url: str, start: int, end: int) -> dict[tuple[str, int], float]:
    """What Prometheus holds for DCGM_FI_DEV_GPU_UTIL at each step of [start, end), as the scraper asks for it."""
    params = {
        "query": f"last_over_time(DCGM_FI_DEV_GPU_UTIL[{STEP_S * 1000 - 1}ms])",
        "start": str(start),
        "end": str(end - STEP_S),
        "step": str(STEP_S),
    }
    result = requests.get(f"{url}/api/v1/query_range", params=params, timeout=10).json()["data"]["result"]
    return {(s["metric"]["UUID"], int(t)): float(v) for s in result if "pod" not in s["metric"] for t, v in s["values"]}


def test_follow_writes_what_the_agents_sampled_through_a_kill_and_a_restart(
    tmp_path: Path, agents: list[Agent], prometheus: PrometheusServer
) -> None:
    warehouse = tmp_path / "wh"
    log = tmp_path / "follow.log"
    first = follower(prometheus.url, warehouse, log)
    try:
        reached = wait_for_progress(warehouse, 0, first, log)
        wait_for_progress(warehouse, reached + 2, first, log)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    killed_at = max(end for _, end in done_spans(warehouse))
    time.sleep(3)  # steps close while no follower runs: the restart must fetch them

    second = follower(prometheus.url, warehouse, log)
    try:
        wait_for_progress(warehouse, killed_at + 4, second, log)
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=30)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    assert "stopped following" in log.read_text()

    spans = done_spans(warehouse)
    assert len(spans) == 1, f"the done spans have a gap: {spans}"
    ((start, end),) = spans
    assert end > killed_at + 4

    stored = (
        Lake(warehouse)
        .scan(GPU_SAMPLES)
        .select("gpu_uuid", "node", "ts", "util_pct")
        .collect()
        .with_columns(pl.col("ts").dt.epoch("s").alias("t"))
    )
    assert stored.height == stored.unique(["gpu_uuid", "ts"]).height, "a sample was stored twice"
    assert sorted(stored["node"].unique().to_list()) == ["gpu-node-0", "gpu-node-1"]
    assert stored["gpu_uuid"].n_unique() == sum(a.gpus for a in agents)

    expected = prometheus_values(prometheus.url, start, end)
    assert expected, "Prometheus holds no sample of the agents in the span done"
    got = {(r["gpu_uuid"], r["t"]): float(r["util_pct"]) for r in stored.iter_rows(named=True)}
    assert set(got) == set(expected), (
        f"missing {sorted(set(expected) - set(got))[:5]}, extra {sorted(set(got) - set(expected))[:5]}"
    )
    assert got == expected
    # at Prometheus' resolution: from the first step Prometheus had scraped on (the span starts before it did),
    # every GPU has a sample at (nearly) every step, one per step at most
    first = min(t for _, t in expected)
    for uuid, rows in stored.group_by("gpu_uuid"):
        steps = rows["t"].to_list()
        assert len(steps) == len(set(steps))
        assert len(steps) >= 0.8 * (end - first) / STEP_S, f"{uuid}: {len(steps)} samples over {end - first} s"
