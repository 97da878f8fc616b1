"""The cost metrics of ``gpuledger server`` equal what ``gpuledger report`` computes for the same window: computed
directly, rendered and parsed back, and scraped by a real Prometheus from a real server process."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from analysis.states import IDLE_STATES, STATES
from exposition.collector import registry_of, render
from exposition.snapshot import WINDOWS, CostSnapshot, ServerHealth
from gpuledger import exposing, reporting
from gpuledger.settings import Settings
from tests.prometheus_server import free_port, require_binaries
from tests.server_process import ServerProcess, clean_env, sim_template, warehouse  # noqa: F401  (fixtures)
from warehouse.lake import Lake

HOURS_UNIT = 5.01e-5
"""The report rounds GPU-hours to 4 decimals and dollars to 2: a metric equals it when it rounds to it."""
USD_UNIT = 5.01e-3
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def reports(lake: Lake, settings: Settings) -> dict[str, dict[str, Any]]:
    """`gpuledger report --start S --end E` of each metrics window."""
    return {
        label: reporting.fleet_report(
            lake, settings, start=w.start.isoformat(), end=w.end.isoformat(), now=NOW, refresh=False
        )
        for label, w in exposing.windows(lake, NOW).items()
    }


def totals(rows: list[tuple[dict[str, str], float]], key: str | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in rows:
        name = labels[key] if key else ""
        out[name] = out.get(name, 0.0) + value
    return out


def check_against_report(series: dict[str, list[tuple[dict[str, str], float]]], report: dict[str, Any]) -> None:
    """``series``: one window's samples per metric name; equal to the report's states, fleet and idle waste."""
    hours = totals(series["gpuledger_gpu_hours"], "state")
    cost = totals(series["gpuledger_cost_usd"], "state")
    assert set(hours) <= set(STATES)
    for state in STATES:
        assert hours.get(state, 0.0) == pytest.approx(report["states"][state], abs=HOURS_UNIT), state
        assert cost.get(state, 0.0) == pytest.approx(report["states_cost_usd"][state], abs=USD_UNIT), state
    assert sum(hours.values()) == pytest.approx(report["fleet"]["gpu_hours"], abs=HOURS_UNIT)
    assert sum(cost.values()) == pytest.approx(report["fleet"]["cost_usd"], abs=USD_UNIT)
    idle_hours = sum(totals(series["gpuledger_idle_waste_gpu_hours"]).values())
    idle_cost = sum(totals(series["gpuledger_idle_waste_usd"]).values())
    # the report's idle totals add up its rounded states
    assert idle_hours == pytest.approx(report["idle_waste"]["gpu_hours"], abs=HOURS_UNIT * len(IDLE_STATES))
    assert idle_cost == pytest.approx(report["idle_waste"]["cost_usd"], abs=USD_UNIT * len(IDLE_STATES))
    by_namespace = totals(
        [(labels, v) for labels, v in series["gpuledger_idle_waste_usd"] if "namespace" in labels], "namespace"
    )
    for row in report["idle_waste"]["by_namespace"]:
        if row["namespace"] is not None:
            assert by_namespace[row["namespace"]] == pytest.approx(row["idle_cost_usd"], abs=USD_UNIT)
    assert hours["active"] > 0 and idle_hours > 0  # the simulated fleet has both: the comparison is not vacuous


def parsed(text: str) -> dict[str, dict[str, list[tuple[dict[str, str], float]]]]:
    """window -> metric name -> [(labels, value)] of the families that carry a window."""
    out: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = {label: {} for label, _hours in WINDOWS}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            window = sample.labels.get("window")
            if window is not None:
                out[window].setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


@pytest.fixture
def lake(warehouse: Path) -> Lake:  # noqa: F811
    return Lake(warehouse)


@pytest.fixture
def snapshot(lake: Lake) -> CostSnapshot:
    return exposing.snapshot(lake, Settings(), now=NOW)


def test_the_snapshot_equals_the_report_for_each_window(lake: Lake, snapshot: CostSnapshot) -> None:
    expected = reports(lake, Settings())
    assert set(expected) == {"1h", "24h"}
    for label, report in expected.items():
        series = {
            "gpuledger_gpu_hours": [({"state": u.state}, u.gpu_hours) for u in snapshot.usage if u.window == label],
            "gpuledger_cost_usd": [({"state": u.state}, u.cost_usd) for u in snapshot.usage if u.window == label],
            "gpuledger_idle_waste_gpu_hours": [
                ({"namespace": w.namespace or ""}, w.gpu_hours) for w in snapshot.idle_waste if w.window == label
            ],
            "gpuledger_idle_waste_usd": [
                ({"namespace": w.namespace} if w.namespace else {}, w.cost_usd)
                for w in snapshot.idle_waste
                if w.window == label
            ],
        }
        check_against_report(series, report)


def test_the_rendered_families_parse_back_to_the_report(lake: Lake, snapshot: CostSnapshot) -> None:
    text = render(registry_of(lambda: (snapshot, ServerHealth("test", refreshed_at=NOW)))).decode()
    by_window = parsed(text)
    for label, report in reports(lake, Settings()).items():
        check_against_report(by_window[label], report)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    unheld = [s for s in families["gpuledger_gpu_hours"].samples if s.labels["state"] == "unallocated"]
    assert unheld and all("namespace" not in s.labels and "workload" not in s.labels for s in unheld)
    assert all(
        "cluster" in s.labels
        for f in families.values()
        if f.name.startswith("gpuledger_")
        for s in f.samples
        if f.name
        not in (
            "gpuledger_info",
            "gpuledger_metrics_refresh_timestamp_seconds",
            "gpuledger_metrics_refresh_failures",
            "gpuledger_malformed_lines",
        )
    )


def test_the_plan_savings_are_the_recommend_plan(lake: Lake, snapshot: CostSnapshot) -> None:
    from gpuledger import recommending

    plan = recommending.plan(
        recommending.recommendations(lake, Settings(), start=None, end=None, now=NOW, refresh=False)
    )
    by_cluster: dict[str, float] = {}
    for p in snapshot.plan_savings:
        by_cluster[p.cluster] = by_cluster.get(p.cluster, 0.0) + p.usd_month
    assert by_cluster == pytest.approx({cp.cluster: cp.savings_usd_month for cp in plan.clusters})
    assert plan.savings_usd_month > 0  # the simulated fleet has a plan: the comparison is not vacuous


def test_an_empty_warehouse_has_no_cost_series(tmp_path: Path) -> None:
    empty = exposing.snapshot(Lake(tmp_path / "empty", create=True), Settings(), now=NOW)
    assert (empty.usage, empty.idle_waste, empty.plan_savings, empty.newest_minute) == ((), (), (), {})


class ScrapingPrometheus:
    """A real ``prometheus`` scraping ``target`` every second, with the scrape config written here."""

    def __init__(self, root: Path, target: str) -> None:
        binary, _promtool = require_binaries()
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: gpuledger-server\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = root / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = requests.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": promql}, timeout=10)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                result = self.query(promql)
                if result:
                    return result
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus had no answer to {promql} within {timeout_s:g} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def served(warehouse: Path, tmp_path: Path) -> Iterator[ServerProcess]:  # noqa: F811
    server = ServerProcess(["--warehouse", str(warehouse), "--no-dashboard"], tmp_path, free_port(), clean_env())
    yield server
    server.kill()


def test_prometheus_scrapes_the_numbers_of_the_report(served: ServerProcess, warehouse: Path, tmp_path: Path) -> None:  # noqa: F811
    served.wait_for("/readyz")
    prometheus = ScrapingPrometheus(tmp_path / "prometheus", f"127.0.0.1:{served.port}")
    try:
        prometheus.wait_for('gpuledger_gpu_hours{window="24h"}')  # one scrape is stored whole
        expected = reports(Lake(warehouse), Settings())
        for label, report in expected.items():
            series: dict[str, list[tuple[dict[str, str], float]]] = {}
            for name in (
                "gpuledger_gpu_hours",
                "gpuledger_cost_usd",
                "gpuledger_idle_waste_gpu_hours",
                "gpuledger_idle_waste_usd",
            ):
                series[name] = [
                    (r["metric"], float(r["value"][1])) for r in prometheus.query(f'{name}{{window="{label}"}}')
                ]
            check_against_report(series, report)
        by_state = prometheus.query('sum by (state) (gpuledger_cost_usd{window="24h"})')
        assert {r["metric"]["state"]: float(r["value"][1]) for r in by_state} == pytest.approx(
            expected["24h"]["states_cost_usd"], abs=USD_UNIT
        )
        (info,) = prometheus.query("gpuledger_info")
        assert info["metric"]["job"] == "gpuledger-server" and info["metric"]["version"]
    finally:
        prometheus.stop()
    shutil.rmtree(tmp_path / "prometheus", ignore_errors=True)


def test_the_data_health_families_equal_the_report(tmp_path: Path, settings: Settings) -> None:
    """A p5en with 2 of its 8 GPUs reporting (silent GPUs), a GPU on a node the warehouse knows nothing of (priced by
    its model: a fallback), and lines a collector could not read."""
    lake = Lake(tmp_path / "health", create=True)
    from tests.conftest import T0, sample_rows
    from tests.test_node_gpu_count import partly_reporting_p5en
    from warehouse.ingest import append
    from warehouse.malformed import count_malformed
    from warehouse.schema import GPU_SAMPLES

    partly_reporting_p5en(lake)
    with lake.writing():
        append(lake, GPU_SAMPLES, sample_rows("GPU-z", range(90), node="node-unknown", util=80.0))
        count_malformed(lake, source="dcgm-exporter", lines=3, scrapes=1, now=T0)
        count_malformed(lake, source="dcgm-exporter", lines=2, scrapes=1, now=T0)
    reporting.ensure_fresh(lake, settings)
    now = T0 + dt.timedelta(hours=2)
    snap = exposing.snapshot(lake, settings, now=now)
    hour = exposing.windows(lake, now)["1h"]
    report = reporting.fleet_report(
        lake, settings, start=hour.start.isoformat(), end=hour.end.isoformat(), now=now, refresh=False
    )
    (silent,) = report["partly_reporting_nodes"]
    assert (
        [(s.cluster, s.node, s.gpus) for s in snap.silent_gpus]
        == [("c1", "node-1", silent["silent_gpus"])]
        == [("c1", "node-1", 6)]
    )
    fallbacks = {f.price_source: f.gpu_hours for f in snap.price_fallbacks if f.window == "1h"}
    expected = {s["price_source"]: s["gpu_hours"] for s in report["fleet"]["price_sources"] if s["price_fallback"]}
    assert expected and fallbacks == pytest.approx(expected, abs=HOURS_UNIT)
    assert snap.malformed_lines == {"dcgm-exporter": 5}
    assert snap.node_last_sample == {
        ("c1", "node-1"): T0 + dt.timedelta(minutes=89),
        ("c1", "node-unknown"): T0 + dt.timedelta(minutes=89),
    }
    text = render(registry_of(lambda: (snap, ServerHealth("test", refreshed_at=now)))).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("gpuledger_malformed_lines_total", (("source", "dcgm-exporter"),))] == 5
    assert (
        samples[("gpuledger_silent_gpus", (("cluster", "c1"), ("gpu_model", "NVIDIA H200"), ("node", "node-1")))] == 6
    )
