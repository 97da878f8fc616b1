"""The whole in-cluster install on loopback (README "Run it in a cluster"): two live node agents
(`collect --no-warehouse` over the NVML stand-in), a real Prometheus scraping them and the server with the jobs of
deploy/prometheus/scrape-config.yaml, and one `gpuledger server` following that Prometheus into an empty warehouse,
rolling it up, serving the dashboard and its cost metrics, which the same Prometheus scrapes back.

The scrape config is the shipped file with two changes a loopback test needs: the Kubernetes pod discovery is
replaced by static targets carrying the ``__meta_kubernetes_pod_*`` labels that discovery would set (so the file's
relabelling decides what is scraped, decoys included), and the intervals are 1 s.

What must hold: Prometheus scrapes exactly the agents' and the server's metrics ports; the warehouse holds what the
agents sampled at every step Prometheus has, with Prometheus' values, once each; the server's GPU-hours, dollars and
price fallbacks equal `gpuledger report` over the same windows of that warehouse, and Prometheus holds the same
numbers; the dashboard answers; SIGTERM ends the server with 0.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests
import yaml

from gpuledger import exposing, reporting
from gpuledger.settings import Settings
from tests.live_agents import Agent, start_agents
from tests.prometheus_server import PrometheusServer, free_port, require_binaries
from tests.server_process import ServerProcess, clean_env
from tests.test_follow_e2e import prometheus_values
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "scrape-config.yaml"
CLUSTER = "c1"
HOURS_UNIT = 5.01e-5
"""The report rounds GPU-hours to 4 decimals and dollars to 2 (as in tests/test_cost_metrics.py)."""
USD_UNIT = 5.01e-3
COMPONENT = "__meta_kubernetes_pod_label_app_kubernetes_io_component"
PORT_NAME = "__meta_kubernetes_pod_container_port_name"


def pod_target(address: str, component: str, port_name: str) -> dict[str, Any]:
    """A static target labelled as Kubernetes pod discovery labels a pod's container port."""
    return {"targets": [address], "labels": {COMPONENT: component, PORT_NAME: port_name}}


def prometheus_config(agents: list[Agent], server_port: int, unused_port: int) -> str:
    """deploy/prometheus/scrape-config.yaml with static pod targets for its discovery, and 1 s intervals."""
    shipped = yaml.safe_load(SCRAPE_CONFIG.read_text())
    decoy = f"127.0.0.1:{unused_port}"
    targets = {
        "gpuledger-agent": [pod_target(a.target, "agent", "metrics") for a in agents]
        + [pod_target(decoy, "agent", "healthz"), pod_target(decoy, "report", "metrics")],
        "gpuledger-server": [
            pod_target(f"127.0.0.1:{server_port}", "server", "metrics"),
            pod_target(decoy, "agent", "metrics-other"),
        ],
    }
    jobs = []
    for job in shipped["scrape_configs"]:
        assert [sd["role"] for sd in job.pop("kubernetes_sd_configs")] == ["pod"]
        jobs.append(
            {**job, "scrape_interval": "1s", "scrape_timeout": "1s", "static_configs": targets[job["job_name"]]}
        )
    return yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs})


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    require_binaries()
    started = start_agents(tmp_path, [1, 2])
    yield started
    for agent in started:
        agent.stop()


@pytest.fixture
def stack(tmp_path: Path, agents: list[Agent]) -> Iterator[tuple[PrometheusServer, ServerProcess, int]]:
    """Prometheus, the server (started, not yet answering) and the dashboard's port."""
    server_port, dashboard_port = free_port(), free_port()
    data = tmp_path / "prometheus-data"
    data.mkdir()
    prometheus = PrometheusServer(data, config_text=prometheus_config(agents, server_port, free_port())).start()
    env = clean_env(
        GPULEDGER_CLUSTER=CLUSTER,
        GPULEDGER_PROMETHEUS_SETTLE_S="2",
        GPULEDGER_METRICS_EVERY_S="1",
        GPULEDGER_ROLLUP_EVERY_S="1",
    )
    args = ["--warehouse", str(tmp_path / "wh"), "--prometheus", prometheus.url, "--no-schedule"]
    args += ["--dashboard-port", str(dashboard_port), "--step", "1", "--start", "-20s"]
    server = ServerProcess(args, tmp_path, server_port, env)
    try:
        yield prometheus, server, dashboard_port
    finally:
        server.kill()
        prometheus.stop()


def query(prometheus: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=10)
    answer.raise_for_status()
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def served(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of the server's ``name`` samples that carry ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in server.samples().items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def wait(what: str, check: Any, server: ServerProcess, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.output()[-3000:]
        try:
            got = check()
        except (requests.RequestException, KeyError, ValueError):
            got = None
        if got:
            return got
        time.sleep(0.25)
    pytest.fail(f"{what} within {timeout_s:g} s: {server.output()[-3000:]}")


def test_agents_prometheus_and_the_server_agree_end_to_end(
    tmp_path: Path, agents: list[Agent], stack: tuple[PrometheusServer, ServerProcess, int]
) -> None:
    prometheus, server, dashboard_port = stack
    server.wait_for("/healthz")

    # Prometheus scrapes exactly what the shipped relabelling keeps
    def active_targets() -> dict[str, list[str]] | None:
        data = requests.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]
        up: dict[str, list[str]] = {}
        for target in data["activeTargets"]:
            up.setdefault(target["labels"]["job"], [])
            if target["health"] == "up":
                up[target["labels"]["job"]].append(target["scrapeUrl"])
        if sum(map(len, up.values())) < len(agents) + 1:
            return None
        assert len(data["droppedTargets"]) == 3, data["droppedTargets"]
        return {job: sorted(urls) for job, urls in up.items()}

    targets = wait("Prometheus did not scrape the agents and the server", active_targets, server)
    assert targets["gpuledger-agent"] == sorted(a.metrics_url for a in agents)
    assert targets["gpuledger-server"] == [f"{server.url}/metrics"]

    # the server follows Prometheus into the warehouse and its metrics count every agent's GPUs
    gpus = sum(a.gpus for a in agents)
    wait(
        "the server's metrics never counted the agents' GPUs",
        lambda: (
            served(server, "gpuledger_gpu_hours", window="1h", cluster=CLUSTER) > 0
            and Lake(tmp_path / "wh").scan(GPU_SAMPLES).select("gpu_uuid").collect()["gpu_uuid"].n_unique() == gpus
        ),
        server,
    )
    time.sleep(4)  # a few more steps sampled, scraped and followed

    # the agents stop; the follower passes their last sample, the rollup and the metrics catch up, and stay
    for agent in agents:
        agent.stop()
    stopped = time.time()
    watermark = "gpuledger_scrape_watermark_timestamp_seconds"
    wait("the follower did not pass the agents' last sample", lambda: served(server, watermark) > stopped + 2, server)
    refreshed = time.time()
    wait(
        "the metrics were not refreshed after the last write",
        lambda: served(server, "gpuledger_metrics_refresh_timestamp_seconds") > refreshed + 1,
        server,
    )
    samples = server.samples()  # one read: every comparison below is against the same refresh

    lake = Lake(tmp_path / "wh")
    stored = (
        lake.scan(GPU_SAMPLES)
        .select("gpu_uuid", "node", "ts", "util_pct")
        .collect()
        .with_columns(pl.col("ts").dt.epoch("s").alias("t"))
    )
    assert stored.height == stored.unique(["gpu_uuid", "ts"]).height, "a sample was stored twice"
    assert sorted(stored["node"].unique().to_list()) == sorted(a.node for a in agents)
    first, last = int(stored["t"].min()), int(stored["t"].max())
    expected = prometheus_values(prometheus.url, first, last + 1)
    got = {(r["gpu_uuid"], r["t"]): float(r["util_pct"]) for r in stored.iter_rows(named=True)}
    assert got == expected

    # the cost metrics equal `gpuledger report` over the same windows of that warehouse
    def value(name: str, **labels: str) -> float:
        return sum(
            v
            for (n, ls), v in samples.items()
            if n == name and set(labels.items()) <= set(ls) and ("cluster", CLUSTER) in ls
        )

    now = dt.datetime.now(dt.UTC)  # the windows end at the newest minute, not at the clock
    windows = exposing.windows(lake, now)
    assert set(windows) == {"1h", "24h"}
    for label, window in windows.items():
        report = reporting.fleet_report(
            lake, Settings(), start=window.start.isoformat(), end=window.end.isoformat(), now=now, refresh=False
        )
        hours = value("gpuledger_gpu_hours", window=label)
        assert hours == pytest.approx(report["fleet"]["gpu_hours"], abs=HOURS_UNIT), label
        assert value("gpuledger_cost_usd", window=label) == pytest.approx(report["fleet"]["cost_usd"], abs=USD_UNIT)
        for state, state_hours in report["states"].items():
            assert value("gpuledger_gpu_hours", window=label, state=state) == pytest.approx(
                state_hours, abs=HOURS_UNIT
            ), (label, state)
        # the stand-in nodes have no instance type: every GPU-hour is priced by a fallback, and says so
        assert value("gpuledger_price_fallback_gpu_hours", window=label) == pytest.approx(hours, abs=1e-9)
    # a GPU-minute is a minute a GPU has a sample in (README "Definitions"): 3 GPUs over a few seconds
    gpu_minutes = stored.select("gpu_uuid", pl.col("ts").dt.truncate("1m")).unique().height
    assert value("gpuledger_gpu_hours", window="1h") == pytest.approx(gpu_minutes / 60, abs=1e-9)

    # Prometheus scraped the same numbers back from the server
    promql = f'sum(gpuledger_gpu_hours{{window="1h",cluster="{CLUSTER}"}})'
    wait(
        "Prometheus does not hold the server's GPU-hours",
        lambda: (
            (r := query(prometheus, promql))
            and float(r[0]["value"][1]) == pytest.approx(value("gpuledger_gpu_hours", window="1h"))
        ),
        server,
    )

    # the dashboard answers (on the loopback port the pod's oauth2-proxy forwards to)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    wait(
        "the dashboard did not answer",
        lambda: requests.get(f"{dashboard}/_stcore/health", timeout=5).text == "ok",
        server,
    )
    assert requests.get(dashboard, timeout=10).status_code == 200

    assert server.terminate() == 0, server.output()[-3000:]
