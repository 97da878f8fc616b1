"""The Grafana dashboard (deploy/grafana/gpuledger.json): built by deploy/grafana/build.py with Grafana's
foundation SDK, laid out soundly, and every query answered by a real Prometheus.

The Prometheus holds a history written here: gpuledger server's cost families (README "Cost metrics for
Prometheus") for two clusters, and dcgm-exporter's utilization and memory families, backfilled with promtool.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from tests.prometheus_server import PrometheusServer, create_blocks, history_end, require_binaries

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT / "deploy" / "grafana" / "build.py"
COMMITTED = ROOT / "deploy" / "grafana" / "gpuledger.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

CONTRACT = {
    "gpuledger_gpu_hours",
    "gpuledger_cost_usd",
    "gpuledger_idle_waste_gpu_hours",
    "gpuledger_idle_waste_usd",
    "gpuledger_plan_monthly_savings_usd",
    "gpuledger_silent_gpus",
    "gpuledger_node_last_sample_timestamp_seconds",
    "gpuledger_price_fallback_gpu_hours",
    "gpuledger_malformed_lines_total",
    "gpuledger_scrape_last_success_timestamp_seconds",
    "gpuledger_scrape_failures_total",
    "gpuledger_scrape_watermark_timestamp_seconds",
    "gpuledger_metrics_refresh_timestamp_seconds",
    "gpuledger_newest_minute_timestamp_seconds",
    "gpuledger_info",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
}
"""The metric names the dashboard may read: common.md contract item 4 and three of dcgm-exporter's."""
UNITS = {"currencyUSD", "h", "percent", "mbytes", "s", "none"}

CLUSTERS = ("prod-east", "prod-west")
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
PRICE = {H100: 4.0, A100: 2.0}
STEP_S = 60
HOURS = 3
RATE_INTERVAL = "4m"
"""Grafana's $__rate_interval for a 1-minute scrape interval: four scrapes."""


def load_builder() -> ModuleType:
    pytest.importorskip(
        "grafana_foundation_sdk", reason="grafana-foundation-sdk is not installed (pip install -e '.[dev]')"
    )
    spec = importlib.util.spec_from_file_location("gpuledger_grafana_build", BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(COMMITTED.read_text())
    return loaded


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, the rows' nested ones (of collapsed rows) included."""
    out = []
    for p in d["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def queries(d: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for p in panels(d):
        for t in p.get("targets", []):
            yield p, t


# ----------------------------------------------------------------------------------------------------- the JSON


def test_committed_json_is_what_the_builder_builds() -> None:
    assert COMMITTED.read_text() == load_builder().render(), "run: python deploy/grafana/build.py"


def test_the_sdk_reads_the_dashboard_back_unchanged(dashboard: dict[str, Any]) -> None:
    """The SDK's typed model decodes every panel and query of the JSON and encodes them back to the same JSON."""
    pytest.importorskip(
        "grafana_foundation_sdk", reason="grafana-foundation-sdk is not installed (pip install -e '.[dev]')"
    )
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    from grafana_foundation_sdk.models.dashboard import Panel
    from grafana_foundation_sdk.models.prometheus import Dataquery

    decoded = Dashboard.from_json(dashboard)
    assert json.loads(JSONEncoder(sort_keys=True).encode(decoded)) == dashboard
    typed = [p for p in decoded.panels or [] if isinstance(p, Panel)]
    assert len(typed) == sum(p["type"] != "row" for p in dashboard["panels"])
    for p in typed:  # each panel's options and queries decoded by its plugin's types, not left as plain dicts
        assert p.options is None or type(p.options).__module__ == f"grafana_foundation_sdk.models.{p.type_val}", p.title
        assert p.targets and all(isinstance(t, Dataquery) for t in p.targets), p.title


def test_ids_are_unique_and_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], int] = {}
    for p in panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{p['title']!r} overlaps panel {taken[(x, y)]}"
                taken[(x, y)] = p["id"]


def test_every_panel_and_query_reads_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["cluster"]["query"] == "label_values(gpuledger_cost_usd, cluster)"
    assert variables["cluster"]["datasource"] == DATASOURCE
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE, p["title"]


def test_one_row_per_question(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "What does the fleet cost, and how much of it is wasted?",
        "Who wastes it?",
        "Which GPU models cost what?",
        "Is the fleet busy? (dcgm-exporter)",
        "Can I trust these numbers?",
    ]


def test_queries_read_only_the_served_metric_names(dashboard: dict[str, Any]) -> None:
    used = set()
    for p, t in queries(dashboard):
        names = set(re.findall(r"\b(?:gpuledger_[a-z_]+|DCGM_[A-Z_]+)\b", t["expr"]))
        assert names, p["title"]
        used |= names
        if any(n.startswith("gpuledger_") and n != "gpuledger_info" and "malformed" not in n for n in names):
            assert '$cluster"' in t["expr"] or "metrics_refresh" in t["expr"], f"{p['title']}: no cluster filter"
    assert used <= CONTRACT, used - CONTRACT
    assert used == CONTRACT, f"families no panel shows: {CONTRACT - used}"


# ----------------------------------------------------------------------------------------------------- the history


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    values: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    cluster: str
    state: str
    namespace: str | None
    workload: str | None
    gpu_model: str
    gpu_hours_24h: float


USAGE = [
    u
    for cluster, scale in ((CLUSTERS[0], 1.0), (CLUSTERS[1], 0.5))
    for u in (
        Usage(cluster, "active", "team-a", "trainer", H100, 96.0 * scale),
        Usage(cluster, "idle_held", "team-a", "trainer", H100, 12.0 * scale),
        Usage(cluster, "idle_allocated", "research", "notebook", H100, 20.0 * scale),
        Usage(cluster, "active", "ml", "infer", A100, 40.0 * scale),
        Usage(cluster, "idle_held", "ml", "batch-eval", A100, 8.0 * scale),
        Usage(cluster, "unallocated", None, None, A100, 16.0 * scale),
        Usage(cluster, "no_data", None, None, H100, 4.0 * scale),
    )
]
IDLE = ("idle_held", "idle_allocated", "unallocated")


def _labels(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def make_series(times: list[int]) -> list[Series]:
    out: list[Series] = []

    def add(name: str, labels: dict[str, str], value: Any) -> None:
        s = Series(name, labels)
        for i, t in enumerate(times):
            s.values[t] = float(value(i, t))
        out.append(s)

    windows = {"24h": 1.0, "1h": 1 / 16}
    for u in USAGE:
        for window, share in windows.items():
            key = _labels(cluster=u.cluster, window=window, state=u.state, namespace=u.namespace, workload=u.workload)
            key["gpu_model"] = u.gpu_model
            add("gpuledger_gpu_hours", key, lambda i, t, u=u, s=share: u.gpu_hours_24h * s)
            add("gpuledger_cost_usd", key, lambda i, t, u=u, s=share: u.gpu_hours_24h * s * PRICE[u.gpu_model])
    idle: dict[tuple[str, str | None, str | None, str], float] = {}
    for u in USAGE:
        if u.state in IDLE:
            k = (u.cluster, u.namespace, u.workload, u.gpu_model)
            idle[k] = idle.get(k, 0.0) + u.gpu_hours_24h
    for (cluster, namespace, workload, model), hours in idle.items():
        for window, share in windows.items():
            key = _labels(cluster=cluster, window=window, namespace=namespace, workload=workload, gpu_model=model)
            add("gpuledger_idle_waste_gpu_hours", key, lambda i, t, h=hours, s=share: h * s)
            add("gpuledger_idle_waste_usd", key, lambda i, t, h=hours, s=share, m=model: h * s * PRICE[m])
    for cluster in CLUSTERS:
        for kind, usd in (("mig", 1500.0), ("spot", 2250.5)):
            add("gpuledger_plan_monthly_savings_usd", {"cluster": cluster, "kind": kind}, lambda i, t, v=usd: v)
        add(
            "gpuledger_silent_gpus", {"cluster": cluster, "node": f"{cluster}-gpu-2", "gpu_model": H100}, lambda i, t: 1
        )
        for node, age in ((f"{cluster}-gpu-1", 60), (f"{cluster}-gpu-2", 2400)):
            add(
                "gpuledger_node_last_sample_timestamp_seconds",
                {"cluster": cluster, "node": node},
                lambda i, t, a=age: t - a,
            )
        for window, hours in (("24h", 6.0), ("1h", 0.25)):
            key = {"cluster": cluster, "window": window, "price_source": "gpu_prices"}
            add("gpuledger_price_fallback_gpu_hours", key, lambda i, t, h=hours: h)
        add("gpuledger_scrape_last_success_timestamp_seconds", {"cluster": cluster}, lambda i, t: t - 30)
        add("gpuledger_scrape_failures_total", {"cluster": cluster}, lambda i, t: i // 20)
        add("gpuledger_scrape_watermark_timestamp_seconds", {"cluster": cluster}, lambda i, t: t - 120)
        add("gpuledger_newest_minute_timestamp_seconds", {"cluster": cluster}, lambda i, t: t - 180)
    for source in ("dcgm-exporter", "prometheus"):
        add("gpuledger_malformed_lines_total", {"source": source}, lambda i, t: i // 7)
    add("gpuledger_metrics_refresh_timestamp_seconds", {}, lambda i, t: t - 20)
    add("gpuledger_info", {"version": "0.1.0"}, lambda i, t: 1)
    gpus = [
        (
            "Hostname",
            "gpu-node-1",
            H100,
            0,
            "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005",
            "team-a",
            "trainer-7d9f8b6c5d-x2k4q",
        ),
        (
            "Hostname",
            "gpu-node-1",
            H100,
            1,
            "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a",
            "gpu-operator",
            "dcgm-exporter-x",
        ),
        (
            "hostname",
            "ip-10-0-1-23.ec2.internal",
            A100,
            0,
            "GPU-5c1f0e6a-2b8d-4c3e-9f7a-8e2d1b0c4a6f",
            "ml",
            "infer-5f7",
        ),
    ]
    for g, (host_label, host, model, index, uuid, namespace, pod) in enumerate(gpus):
        labels = {"gpu": str(index), "UUID": uuid, "modelName": model, host_label: host}
        labels |= {"namespace": namespace, "pod": pod, "job": "nvidia-dcgm-exporter", "instance": f"10.0.0.{g}:9400"}
        total = 81559 if model == H100 else 40960
        add("DCGM_FI_DEV_GPU_UTIL", labels, lambda i, t, g=g: (i * 7 + g * 13) % 101)
        add("DCGM_FI_DEV_FB_USED", labels, lambda i, t, g=g: 1000 + (i * 37 + g * 11) % 3000)
        add("DCGM_FI_DEV_FB_FREE", labels, lambda i, t, g=g, n=total: n - 1000 - (i * 37 + g * 11) % 3000)
    return out


COUNTERS = {"gpuledger_malformed_lines_total", "gpuledger_scrape_failures_total"}


def write_openmetrics(series: list[Series], path: Path) -> None:
    families: dict[str, list[Series]] = {}
    for s in series:
        families.setdefault(s.name, []).append(s)
    with path.open("w") as out:
        for name, members in families.items():
            counter = name in COUNTERS
            out.write(
                f"# TYPE {name.removesuffix('_total') if counter else name} {'counter' if counter else 'gauge'}\n"
            )
            for s in members:
                labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
                for t, v in sorted(s.values.items()):
                    out.write(f"{name}{{{labels}}} {v!r} {t}\n")
        out.write("# EOF\n")


@pytest.fixture(scope="module")
def history_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, int]]:
    require_binaries()
    root = tmp_path_factory.mktemp("grafana-history")
    end = history_end()
    times = list(range(end - HOURS * 3600 + STEP_S, end + 1, STEP_S))
    write_openmetrics(make_series(times), root / "history.om")
    create_blocks(root / "history.om", root / "tsdb")
    server = PrometheusServer(root / "tsdb").start()
    try:
        yield server, end
    finally:
        server.stop()


def substitute(expr: str, cluster: str) -> str:
    """A target's expression as Grafana sends it, with this test's values for the variables."""
    out = (
        expr.replace("$cluster", cluster)
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
    )
    assert "$" not in out, out
    return out


def ask(server: PrometheusServer, end: int, expr: str, *, instant: bool) -> list[dict[str, Any]]:
    if instant:
        answer = requests.get(f"{server.url}/api/v1/query", params={"query": expr, "time": str(end)}, timeout=30)
    else:
        params = {"query": expr, "start": str(end - HOURS * 3600 + STEP_S), "end": str(end), "step": str(STEP_S)}
        answer = requests.get(f"{server.url}/api/v1/query_range", params=params, timeout=30)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


# Grafana sends a multi-value variable with All as a regex alternation.
CLUSTER_CHOICES = (*CLUSTERS, "|".join(CLUSTERS))


@pytest.mark.parametrize("cluster", CLUSTER_CHOICES)
def test_every_query_returns_data(
    history_prometheus: tuple[PrometheusServer, int], dashboard: dict[str, Any], cluster: str
) -> None:
    server, end = history_prometheus
    empty = []
    for p, t in queries(dashboard):
        expr = substitute(t["expr"], cluster)
        result = ask(server, end, expr, instant=bool(t.get("instant")))
        if not result:
            empty.append(f"{p['title']} ({t['refId']}): {expr}")
    assert not empty, "queries with no data:\n" + "\n".join(empty)


def test_cluster_variable_lists_the_clusters(history_prometheus: tuple[PrometheusServer, int]) -> None:
    server, end = history_prometheus
    answer = requests.get(
        f"{server.url}/api/v1/label/cluster/values",
        params={"match[]": "gpuledger_cost_usd", "start": str(end - 3600), "end": str(end)},
        timeout=30,
    ).json()
    assert answer["data"] == sorted(CLUSTERS)


def _stat(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (target,) = next(p for p in panels(dashboard) if p["title"] == title)["targets"]
    return target


def test_headline_numbers_are_the_written_ones(
    history_prometheus: tuple[PrometheusServer, int], dashboard: dict[str, Any]
) -> None:
    server, end = history_prometheus
    mine = [u for u in USAGE if u.cluster == CLUSTERS[0]]
    cost = sum(u.gpu_hours_24h * PRICE[u.gpu_model] for u in mine)
    idle = sum(u.gpu_hours_24h * PRICE[u.gpu_model] for u in mine if u.state in IDLE)

    def value(title: str) -> float:
        (row,) = ask(server, end, substitute(_stat(dashboard, title)["expr"], CLUSTERS[0]), instant=True)
        return float(row["value"][1])

    assert value("GPU cost (24h)") == cost
    assert value("Idle waste (24h)") == idle
    assert value("Waste share (24h)") == pytest.approx(100 * idle / cost)
    assert value("GPU-hours (24h)") == sum(u.gpu_hours_24h for u in mine)
    assert value("Plan savings per month") == 1500.0 + 2250.5
    assert value("Silent GPUs") == 1
    assert value("Scrape lag") == 120
