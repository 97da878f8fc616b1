"""Every reader of a node's GPU count takes the hardware's (issue 13, point 2, ``analysis.gpu_count``): the dashboard's
GPU-hours by state over time hold the silent GPUs' no_data, so the chart adds up to the state totals the same page
shows, and the recommendations count a p5en.48xlarge whose exporter shows 2 GPUs as an 8-GPU node."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import yaml

from analysis import report, silent_gpus, timeline
from analysis.filters import Filters
from analysis.gpu_count import GFD_LABEL, INSTANCE_TYPE
from analysis.recommend import Context, node_facts
from analysis.states import STATES
from analysis.window import Window
from gpuledger import reporting, viewing
from gpuledger.settings import Settings
from tests.conftest import T0
from tests.recommend_inputs import CATALOG, H100, Fleet, price, recommendations_of
from tests.test_node_gpu_count import H200, P5EN_USD_PER_HOUR, partly_reporting_p5en
from warehouse.lake import Lake

HOUR = dt.timedelta(hours=1)


def states_over_time(buckets: pl.DataFrame) -> dict[str, float]:
    """The Overview chart's GPU-hours per state, summed over its buckets."""
    chart = timeline.state_timeline(buckets)
    return {s: float(chart.filter(pl.col("state") == s)["gpu_hours"].sum()) for s in STATES}


@pytest.mark.parametrize("hours", [None, 3])  # the default window (stored hours) and a short one (15m, from minutes)
def test_the_states_over_time_add_up_to_the_state_totals(lake: Lake, settings: Settings, hours: int | None) -> None:
    partly_reporting_p5en(lake)  # 8 GPUs, 2 reporting for 90 minutes: 12 GPU-hours, 9 of them silent no_data
    reporting.ensure_fresh(lake, settings)
    newest = reporting.newest_minute(lake)
    window = viewing.window_of(settings, None, None, newest) if hours is None else Window(T0, T0 + hours * HOUR)
    view = viewing.fleet_view(lake, settings, window)
    assert view.every == ("1h" if hours is None else "15m")
    states = report.build(view.inputs)["states"]
    assert states["no_data"] == pytest.approx(9.0)
    assert states_over_time(view.buckets) == pytest.approx(states)
    assert sum(states_over_time(view.buckets).values()) == pytest.approx(12.0)
    assert timeline.gpu_count(view.buckets) == 2  # the silent GPUs are no_data, not GPUs seen
    assert timeline.gpus(view.buckets)["gpu_uuid"].to_list() == ["GPU-a", "GPU-b"]
    assert timeline.gaps(view.buckets, view.every).height == 0
    narrowed = Filters.of(clusters=["c1"]).apply(view.buckets)  # the dashboard's filters keep them on their node
    assert states_over_time(narrowed) == pytest.approx(states)


def test_a_silent_span_is_cut_at_the_bucket_edges() -> None:
    utc = dt.UTC
    reporting_days = pl.DataFrame(
        {
            "cluster": ["c1"],
            "node": ["n1"],
            "date": [dt.date(2026, 11, 2)],
            "gpu_model": [H200],
            "reporting": [2],
            "first_minute": [dt.datetime(2026, 11, 2, 0, 30, tzinfo=utc)],
            "last_minute": [dt.datetime(2026, 11, 2, 2, 14, tzinfo=utc)],
        }
    )
    node_prices = pl.DataFrame(
        {
            "cluster": ["c1"],
            "node": ["n1"],
            "date": [dt.date(2026, 11, 2)],
            "instance_type": ["p5en.48xlarge"],
            "node_gpus": [8],
            "gpu_count_basis": [INSTANCE_TYPE],
            "usd_per_gpu_hour": [7.912],
        }
    )
    silent = silent_gpus.silent_days(reporting_days, node_prices)
    buckets = pl.DataFrame(
        {
            "bucket": [dt.datetime(2026, 11, 2, 0, tzinfo=utc)],
            "cluster": ["c1"],
            "node": ["n1"],
            "gpu_uuid": ["GPU-a"],
            "gpu_index": [0],
            "mig_instance_id": [None],
            "mig_profile": [None],
            "gpu_model": [H200],
            "namespace": [None],
            "state": ["unallocated"],
            "gpu_hours": [0.5],
            "busy_weighted": [0.0],
            "busy_share": [0.5],
        },
        schema_overrides={"mig_instance_id": pl.Int32, "mig_profile": pl.String, "namespace": pl.String},
    )
    rows = silent_gpus.no_data_buckets(silent, buckets, "1h")
    assert rows.schema == buckets.schema
    # 6 silent GPUs x (30, 60, 15) minutes of 00:30-02:15
    assert rows.select("bucket", "state", "gpu_hours").rows() == [
        (dt.datetime(2026, 11, 2, 0, tzinfo=utc), "no_data", 3.0),
        (dt.datetime(2026, 11, 2, 1, tzinfo=utc), "no_data", 6.0),
        (dt.datetime(2026, 11, 2, 2, tzinfo=utc), "no_data", 1.5),
    ]
    assert rows["gpu_hours"].sum() == pytest.approx(silent["silent_gpu_hours"].sum())
    assert rows["gpu_uuid"].is_null().all() and rows["namespace"].is_null().all()
    quarter = silent_gpus.no_data_buckets(silent, buckets, "15m")
    assert quarter.height == 7 and quarter["gpu_hours"].sum() == pytest.approx(10.5)  # 00:30 to 02:15
    daily = silent_gpus.no_data_buckets(silent, buckets, "1d")
    assert daily["gpu_hours"].to_list() == [10.5]
    both = silent_gpus.with_silent_buckets(buckets, silent, "1h")
    assert states_over_time(both)["no_data"] == pytest.approx(10.5) and timeline.gpu_count(both) == 1


def test_the_overview_chart_holds_the_silent_gpus(lake: Lake, settings: Settings) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboards import context

    partly_reporting_p5en(lake)
    reporting.ensure_fresh(lake, settings)
    context.configure(lake.root, viewing.Viewing(settings))
    try:
        at = AppTest.from_file(
            str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py"), default_timeout=60
        )
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        [chart] = at.get("vega_lite_chart")
        [dataset] = chart.proto.datasets  # the frame altair drew, as Arrow IPC
        points = pl.from_arrow(pa.ipc.open_stream(dataset.data.data).read_all())
        assert isinstance(points, pl.DataFrame)
        drawn = dict(points.group_by("state").agg(pl.col("gpu_hours").sum()).iter_rows())
        shown = {row[0]: row[1] for row in at.dataframe[0].value.itertuples(index=False)}  # the "By state" table
        assert drawn == pytest.approx(shown) and drawn["no_data"] == pytest.approx(9.0)
        for page in ("views/gpus.py", "views/data_health.py"):
            at.switch_page(page)
            at.run()
            assert not at.exception, (page, [e.value for e in at.exception])
    finally:
        context.reset()


P5EN = "p5en.48xlarge"


def test_node_facts_count_the_hardware_not_the_gpus_seen() -> None:
    f = Fleet(10)
    f.node("n1", P5EN, "on-demand", H200, 2, "h200")  # its exporter shows 2 of its 8 GPUs
    f.gpu("n1", "GPU-0", util=90.0, mem_gib=60, total_gib=141, pod=("ml", "train-0", "pytorch", "train"))
    inputs = f.inputs()
    facts = Context(inputs).facts
    assert facts.select("node", "gpu_count", "gpu_count_basis").rows() == [("n1", 8, INSTANCE_TYPE)]
    unpriced = inputs.nodes.drop("node_gpus", "gpu_count_basis")  # the same rule when the caller did not price them
    assert node_facts(unpriced, CATALOG).select("gpu_count", "gpu_count_basis").rows() == [(8, INSTANCE_TYPE)]
    gfd = unpriced.with_columns(
        pl.lit(None, pl.String).alias("instance_type"), pl.lit('{"nvidia.com/gpu.count": "4"}').alias("labels")
    )
    assert node_facts(gfd, CATALOG).select("gpu_count", "gpu_count_basis").rows() == [(4, GFD_LABEL)]


def test_autoscaling_counts_eight_gpus_per_p5en_that_shows_two() -> None:
    f = Fleet(10)
    for n in ("n1", "n2"):
        f.node(n, P5EN, "on-demand", H200, 2, "h200")
    for i in range(2):
        f.gpu("n1", f"GPU-a{i}", util=95.0, mem_gib=60, total_gib=141, pod=("ml", "train-0", "pytorch", f"t-{i}"))
        f.gpu("n2", f"GPU-b{i}", util=0.0, mem_gib=0.3, total_gib=141)
    (r,) = recommendations_of("autoscaling", f.inputs())
    assert r.evidence["gpus_per_node"] == 8 and r.evidence["gpu_count_basis"] == INSTANCE_TYPE
    assert (r.evidence["min_nodes"], r.evidence["max_nodes"]) == (1, 1)  # ceil(2/8), ceil(2 x 1.2 / 8)
    # 2 nodes observed for 10 h, 1 needed: 10 node-hours x 8 GPUs x its GPU-hour price (node price / 8) x 730 / 10
    assert r.savings_usd_month == pytest.approx(10 * 8 * price(P5EN, "on-demand", H200) * 73, rel=1e-6)
    assert price(P5EN, "on-demand", H200) * 8 == pytest.approx(P5EN_USD_PER_HOUR)  # 8 GPU-hours: the node-hour
    nodepool, _ = r.manifests
    assert nodepool.obj["spec"]["limits"] == {"nvidia.com/gpu": "8"}


def test_mig_partitions_a_node_of_eight_gpus_that_shows_two() -> None:
    f = Fleet(24)
    f.node("n1", "p5.48xlarge", "spot", H100, 2, "h100-serve")  # its exporter shows 2 of its 8 GPUs
    for i in range(2):
        f.gpu(
            "n1",
            f"GPU-{i}",
            util=5.0,
            mem_gib=8,
            total_gib=80,
            pod=("serve", f"embed-7d9f8b6c5d-{i}x2k4", "embed", "embed"),
        )
    (r,) = recommendations_of("mig", f.inputs())
    cm, _ = r.manifests
    config = yaml.safe_load(cm.obj["data"]["config.yaml"])["mig-configs"]["gpuledger-h100-serve"]
    assert config == [
        {"devices": [0], "mig-enabled": True, "mig-devices": {"1g.10gb": 2}},
        {"devices": [1, 2, 3, 4, 5, 6, 7], "mig-enabled": False},
    ]
