"""A node's GPU count is the hardware's (issue 13, point 2): instance type, then GFD's label, then the GPUs seen; GPUs
that never report are no_data on their node, listed in the report and the data-health page, and alerted on."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from alerts.render import to_markdown
from alerts.rules import Conditions, findings
from analysis.gpu_count import GFD_LABEL, INSTANCE_TYPE, SEEN, node_gpu_count
from analysis.pricing import InvalidGpuCount, PriceCatalog, PriceOverrides, price_nodes
from collector.fleet import plan
from collector.prometheus.kube_state import node_row
from collector.simulate import FleetTelemetry
from gpuledger import alerting, reporting
from gpuledger.settings import Settings
from tests.conftest import T0, sample_rows
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES, NODES

P5EN_USD_PER_HOUR = 63.296  # analysis/data/aws_nvidia_gpu_instance_types.csv, us-east-1 on-demand
H200 = "NVIDIA H200"


def one(catalog: PriceCatalog, **node: object) -> dict:
    row = {"instance_type": None, "capacity_type": "on-demand", "gpu_model": H200, "gpu_count": None} | node
    return price_nodes(pl.DataFrame([row]), catalog).row(0, named=True)


def partly_reporting_p5en(lake: Lake) -> None:
    """A p5en.48xlarge (8 H200s) whose exporter showed 2 GPUs, both idle and unallocated for 90 minutes; its nodes
    row says 2 GPUs, as the scraper records a node without GFD's count label."""
    with lake.writing():
        for gpu in ("GPU-a", "GPU-b"):
            append(lake, GPU_SAMPLES, sample_rows(gpu, range(90), util=0.0, fb_used=0))
        append(
            lake,
            NODES,
            pl.DataFrame(
                [
                    {
                        "date": T0.date(),
                        "cluster": "c1",
                        "node": "node-1",
                        "instance_type": "p5en.48xlarge",
                        "capacity_type": "on-demand",
                        "region": "us-east-1",
                        "gpu_model": H200,
                        "gpu_count": 2,
                    }
                ],
                schema={c: pl.from_arrow(NODES.schema.empty_table()).schema[c] for c in NODES.columns},  # type: ignore[union-attr]
            ).to_arrow(),
        )


def test_p5en_with_two_gpus_reporting_is_priced_per_eight_and_its_silent_gpus_are_no_data(
    lake: Lake, settings: Settings
) -> None:
    partly_reporting_p5en(lake)
    report = reporting.fleet_report(lake, settings, start=T0.isoformat(), end=None, now=T0 + dt.timedelta(hours=2))
    per_gpu = P5EN_USD_PER_HOUR / 8  # 7.912 USD per GPU-hour, not 63.296 / 2 = 31.648
    # 2 GPUs x 1.5 h unallocated = 3 GPU-hours of idle waste: 3 x 7.912 = $23.74 (it was 3 x 31.648 = $94.94)
    assert report["idle_waste"]["cost_usd"] == pytest.approx(round(3 * per_gpu, 2)) == 23.74
    # the 6 silent GPUs: 6 x 1.5 h = 9 GPU-hours of no_data, paid: 9 x 7.912 = $71.21
    assert report["states"]["no_data"] == pytest.approx(9.0)
    assert report["states_cost_usd"]["no_data"] == pytest.approx(71.21)
    # the states add up to the node's 8 GPUs for 1.5 h, and the fleet cost to its bill: 63.296 x 1.5 = $94.94
    assert sum(report["states"].values()) == pytest.approx(report["fleet"]["gpu_hours"]) == pytest.approx(12.0)
    assert report["fleet"]["cost_usd"] == pytest.approx(round(P5EN_USD_PER_HOUR * 1.5, 2)) == 94.94
    assert report["fleet"]["gpus"] == 2 and report["fleet"]["gpus_not_reporting"] == 6
    [node] = report["partly_reporting_nodes"]
    assert node["text"] == "node node-1: 8 GPUs, 2 reporting"
    assert (node["gpus"], node["gpu_count_basis"], node["reporting"], node["silent_gpus"]) == (8, INSTANCE_TYPE, 2, 6)
    assert (node["silent_gpu_hours"], node["cost_usd"]) == (9.0, 71.21)
    text = to_markdown(report)
    assert "- GPUs: **2** reporting, and **6** more that never reported on 1 node" in text
    assert "| node node-1: 8 GPUs, 2 reporting | c1 | instance type p5en.48xlarge | 6 | 9.0 | $71.21 |" in text


def test_the_price_says_what_it_divides_by() -> None:
    catalog = PriceCatalog.build()
    row = one(catalog, instance_type="p5en.48xlarge", gpu_count=2)
    assert row["usd_per_gpu_hour"] == pytest.approx(P5EN_USD_PER_HOUR / 8)
    assert (row["node_gpus"], row["gpu_count_basis"]) == (8, INSTANCE_TYPE)
    counted = catalog.node_gpu_count("p5en.48xlarge", None, 2)
    assert counted.divisor("p5en.48xlarge") == "node price / 8 GPUs (instance type p5en.48xlarge)"


def test_gfd_label_is_the_count_when_the_instance_type_is_unknown(fixtures: Path) -> None:
    labels = (fixtures / "mig-k8s/h100-mig-mixed-gfd-node-labels.json").read_text()  # nvidia.com/gpu.count: "1"
    row = one(PriceCatalog.build(), labels=labels, gpu_model="NVIDIA H100 80GB HBM3", gpu_count=None)
    assert (row["node_gpus"], row["gpu_count_basis"]) == (1, GFD_LABEL)
    assert row["usd_per_node_hour"] == pytest.approx(0.95)  # OpenCost's default x 1 GPU
    assert node_gpu_count(None, json.loads(labels), None).count == 1


def test_gfd_label_beats_the_gpus_seen_in_the_scraper_path() -> None:
    # kube-state-metrics exports the label sanitized; DCGM saw 2 of the node's 4 GPUs
    row = node_row("c1", "on-prem-1", T0.date(), {"label_nvidia_com_gpu_count": "4"}, "NVIDIA L4", 2)
    priced = one(PriceCatalog.build(), **{k: row[k] for k in ("instance_type", "gpu_model", "gpu_count", "labels")})
    assert (priced["node_gpus"], priced["gpu_count_basis"]) == (4, GFD_LABEL)


def test_seen_gpus_are_the_last_resort_and_a_users_count_beats_them() -> None:
    row = one(PriceCatalog.build(), instance_type="on-prem.box", gpu_count=3)
    assert (row["node_gpus"], row["gpu_count_basis"]) == (3, SEEN)
    assert row["usd_per_node_hour"] == pytest.approx(0.95 * 3)
    mine = PriceCatalog.build(PriceOverrides(instance_type_gpu_count={"on-prem.box": 4}))
    assert (one(mine, instance_type="on-prem.box", gpu_count=3)["node_gpus"], "instance type") == (4, INSTANCE_TYPE)
    assert node_gpu_count(None, {}, None).count is None
    with pytest.raises(InvalidGpuCount, match=r"^invalid GPU count for instance type x: 0 .* instance_type_gpu_count$"):
        PriceOverrides(instance_type_gpu_count={"x": 0})


def test_the_alert_rule_fires_on_a_node_with_silent_gpus(lake: Lake, settings: Settings) -> None:
    partly_reporting_p5en(lake)
    reporting.ensure_fresh(lake, settings)
    c = alerting.read_conditions(lake, settings, T0 + dt.timedelta(hours=2))
    found = findings(c, settings.alerts)
    [finding] = found["gpus_not_reporting"]
    assert finding.subject == "c1/node-1"
    assert finding.text == (
        "c1/node-1: 8 GPUs (instance type p5en.48xlarge), 2 reporting: 9.0 GPU-hours unobserved ($71.21) "
        "since 2026-11-02 00:00 UTC; check its dcgm-exporter or agent"
    )
    longer = findings(c, settings.alerts.model_copy(update={"silent_gpu_minutes": 120}))
    assert longer["gpus_not_reporting"] == []  # silent for 90 minutes only
    assert "gpus_not_reporting" not in findings(Conditions(), settings.alerts)  # not evaluated


def test_the_simulated_fleet_plants_one_partly_reporting_node() -> None:
    end = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    fleet = plan(64, 1, 42, end)
    assert fleet.partial is not None and plan(64, 1, 42, end).partial == fleet.partial
    node, shown = fleet.partial
    assert fleet.nodes[node].pool.instance_type == "p5.48xlarge" and shown == 2
    day = FleetTelemetry(fleet).day(0)
    seen = pl.from_arrow(day.samples.select(["node", "gpu_uuid"]))
    assert isinstance(seen, pl.DataFrame)
    assert seen.filter(pl.col("node") == fleet.nodes[node].name)["gpu_uuid"].n_unique() == 2
    assert seen["gpu_uuid"].n_unique() == 64 - 6
    nodes = pl.from_arrow(day.nodes)
    assert isinstance(nodes, pl.DataFrame)
    assert nodes.filter(pl.col("node") == fleet.nodes[node].name)["gpu_count"].to_list() == [2]
    assert plan(16, 1, 42, end).partial is None  # small fleets keep every GPU reporting


def test_the_data_health_page_lists_the_node(lake: Lake, settings: Settings) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboards import context
    from gpuledger.viewing import Viewing

    partly_reporting_p5en(lake)
    reporting.ensure_fresh(lake, settings)
    context.configure(lake.root, Viewing(settings))
    try:
        at = AppTest.from_file(
            str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py"), default_timeout=60
        )
        at.run()
        at.switch_page("views/data_health.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.subheader[0].value == "Nodes with GPUs that never report"
        assert at.warning[0].value.startswith("node node-1: 8 GPUs, 2 reporting. ")
    finally:
        context.reset()
