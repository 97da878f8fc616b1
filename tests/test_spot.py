"""Spot savings net of interruption risk: two candidates worked by hand, the eligibility rules with their reasons,
and the properties that interruptions only ever take savings away."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import spot, usage
from analysis.errors import AnalysisError
from analysis.pricing import PriceCatalog, PriceOverrides, price_nodes
from analysis.spot import (
    BUCKET_MONTHLY_INTERRUPTION,
    NAME_HEURISTIC,
    SpotAssumptions,
    SpotInputError,
    spot_savings,
    usage_candidates,
    workload_kind,
)
from analysis.window import Window
from collector.fleet import POOLS
from warehouse.lake import Lake
from warehouse.schema import GPU_MINUTES, NODES

CATALOG = PriceCatalog.build()
H100 = "NVIDIA H100 80GB HBM3"
WEEK = 168.0  # window hours


def workloads(*rows: dict) -> pl.DataFrame:
    base = {
        "cluster": "train-use1",
        "node_group": "pool",
        "instance_type": "p4d.24xlarge",
        "capacity_type": "on-demand",
        "region": "us-east-1",
        "namespace": "ml",
        "workload": "job",
        "workload_kind": "training",
        "gpu_hours": 100.0,
        "replicas": None,
        "nodes": None,
        "node_hours": None,
        "checkpoint_interval_s": None,
    }
    return pl.DataFrame(
        [base | r for r in rows],
        schema_overrides={
            "replicas": pl.Int64,
            "nodes": pl.Int64,
            "node_hours": pl.Float64,
            "checkpoint_interval_s": pl.Float64,
            "gpu_hours": pl.Float64,
        },
    )


def candidate(catalog: PriceCatalog = CATALOG, window: float = WEEK, **row: object) -> dict:
    result = spot_savings(workloads(row), catalog, window_hours=window)
    assert result.candidates.height == 1
    return result.candidates.row(0, named=True)


def test_checkpointed_job_on_p4d_bucket_2_by_hand() -> None:
    row = candidate(instance_type="p4d.24xlarge", gpu_hours=800.0, checkpoint_interval_s=300.0)
    # prices: on-demand 21.957642 / 8 = 2.74470525 USD/GPU-h; spot 21.957642 x (1 - 0.67) / 8 = 0.9057527325
    assert row["on_demand_usd_per_gpu_hour"] == pytest.approx(2.74470525)
    assert row["spot_usd_per_gpu_hour"] == pytest.approx(0.9057527325)
    # gross = (2.74470525 - 0.9057527325) x 800 GPU-h = 1.8389525175 x 800 = 1471.162014
    assert row["gross_savings_usd"] == pytest.approx(1471.162014)
    # bucket 2 (10-15%) -> m = 12.5% per node-month; L = (300 / 2 + 120 + 300 + 300) s = 870 s = 0.241667 h
    assert (row["interruption_bucket"], row["interruption_risk"]) == (2, "10-15%")
    assert row["interruptions_per_node_month"] == 0.125
    assert (row["progress_lost_s"], row["restart_overhead_s"], row["image_pull_s"], row["warm_up_s"]) == (
        150.0,
        120.0,
        300.0,
        300.0,
    )
    assert row["lost_hours_per_interruption"] == pytest.approx(870 / 3600)
    # 800 GPU-h / 8 = 100 node-hours; 4.76 GPUs at once -> 1 node (estimated), restarted alone
    assert (row["node_hours"], row["nodes"], row["nodes_restarted"]) == (100.0, 1, 1)
    assert row["nodes_basis"] == "estimated: mean GPUs held / GPUs per node, rounded up"
    # interruptions per month = 0.125 x 100 node-hours / 168 h = 0.0744048
    assert row["interruptions_per_month"] == pytest.approx(0.125 * 100 / 168)
    # node price 21.957642 x 0.33 = 7.24602186 USD/node-hour; cost/month = 0.0744048 x 1 x 0.241667 x 7.24602186
    assert row["spot_usd_per_node_hour"] == pytest.approx(7.24602186)
    assert row["interruption_cost_usd_month"] == pytest.approx(0.13029181171874998)
    # the window's cost = 0.1302918 x 168 / 730 = 0.0299850; net = 1471.162014 - 0.0299850 = 1471.1320290
    assert row["interruption_cost_usd"] == pytest.approx(0.029984964888698624)
    assert row["net_savings_usd"] == pytest.approx(1471.1320290351114)
    assert row["net_savings_usd_month"] == pytest.approx(6392.418935688282)
    assert row["eligible"] and row["recommended"]
    assert row["reason"] == "checkpointed job: resumes from its last checkpoint (every 300 s)"
    assert row["spot_price_source"] == "AWS spot estimate: on-demand x (1 - 67% Spot Advisor savings), 2025-06-28"


def test_checkpointed_job_on_p5_bucket_4_by_hand() -> None:
    row = candidate(instance_type="p5.48xlarge", gpu_hours=1344.0, checkpoint_interval_s=1800.0)
    # prices: on-demand 55.04 / 8 = 6.88; spot 55.04 x (1 - 0.52) / 8 = 3.3024 USD/GPU-h
    assert (row["on_demand_usd_per_gpu_hour"], row["spot_usd_per_gpu_hour"]) == pytest.approx((6.88, 3.3024))
    # gross = (6.88 - 3.3024) x 1344 = 3.5776 x 1344 = 4808.2944
    assert row["gross_savings_usd"] == pytest.approx(4808.2944)
    # bucket 4 (>20%) -> m = 25%; L = (1800 / 2 + 120 + 300 + 300) s = 1620 s = 0.45 h
    assert (row["interruption_bucket"], row["interruption_risk"]) == (4, ">20%")
    assert row["lost_hours_per_interruption"] == pytest.approx(0.45)
    # one node all week: 0.25 interruptions x 1 node x 0.45 h x 26.4192 USD/node-hour = 2.97216 per month
    assert row["interruption_cost_usd_month"] == pytest.approx(2.97216)
    assert row["interruption_cost_usd"] == pytest.approx(2.97216 * 168 / 730)
    # net per month = 4808.2944 x 730 / 168 - 2.97216 = 20893.18416 - 2.97216 = 20890.212
    assert row["net_savings_usd"] == pytest.approx(4808.2944 - 2.97216 * 168 / 730)
    assert row["net_savings_usd_month"] == pytest.approx(20890.21184)
    # one p5 node busy all week: 0.25 x (1344 / 8) / 168 = 0.25 interruptions per month
    assert row["interruptions_per_month"] == pytest.approx(0.25)
    assert row["recommended"]


def test_replicated_inference_loses_only_the_restart() -> None:
    row = candidate(
        instance_type="p5.48xlarge", workload_kind="inference", replicas=3, nodes=3, gpu_hours=504.0, node_hours=504.0
    )
    assert row["checkpoint_interval_s"] == 0.0 and row["progress_lost_s"] == 0.0
    # restart 120 + image pull 300 + warm-up 300 = 720 s = 0.2 h, on the interrupted node only
    assert row["lost_hours_per_interruption"] == pytest.approx(0.2)
    assert row["nodes_restarted"] == 1
    # 3 nodes all week: 0.25 x 504 / 168 = 0.75 interruptions/month x 1 x 0.2 h x 26.4192 = 3.96288
    assert row["interruptions_per_month"] == pytest.approx(0.75)
    assert row["interruption_cost_usd_month"] == pytest.approx(3.96288)
    assert row["eligible"]
    assert row["reason"] == "replicated inference (3 replicas on 3 nodes): the others serve while one node is replaced"


def test_two_node_training_job_restarts_both_nodes_by_hand() -> None:
    row = candidate(instance_type="p5.48xlarge", gpu_hours=2688.0, nodes=2, checkpoint_interval_s=1800.0)
    # 16 GPUs x 168 h on 2 p5 nodes: 2688 / 8 = 336 node-hours -> 0.25 x 336 / 168 = 0.5 interruptions per month
    assert (row["node_hours"], row["nodes_basis"]) == (336.0, "given")
    assert row["interruptions_per_month"] == pytest.approx(0.5)
    # any node's interruption restarts both: 0.5 x 2 nodes x 0.45 h x 26.4192 USD/node-hour = 11.88864 per month
    assert row["nodes_restarted"] == 2
    assert row["spot_usd_per_node_hour"] == pytest.approx(26.4192)
    assert row["interruption_cost_usd_month"] == pytest.approx(11.88864)
    # gross = 3.5776 x 2688 x 730 / 168 = 41786.368; net = 41786.368 - 11.88864 = 41774.47936
    assert row["gross_savings_usd_month"] == pytest.approx(41786.368)
    assert row["net_savings_usd_month"] == pytest.approx(41774.47936)
    assert row["reason"] == (
        "checkpointed job: resumes from its last checkpoint (every 1800 s); "
        "on 2 nodes: an interruption of any one restarts all 2"
    )
    # the same GPU-hours as two single-node jobs lose half: each 0.25 x 1 x 0.45 x 26.4192 = 2.97216
    alone = spot_savings(
        workloads(
            *(
                {"workload": w, "instance_type": "p5.48xlarge", "gpu_hours": 1344.0, "checkpoint_interval_s": 1800.0}
                for w in ("a", "b")
            )
        ),
        CATALOG,
        window_hours=WEEK,
    )
    assert alone.interruption_cost_usd_month == pytest.approx(2 * 2.97216)


def test_serving_is_eligible_only_with_replicas_on_more_than_one_node() -> None:
    frame = workloads(
        *(
            {
                "workload": name,
                "instance_type": "g6.12xlarge",
                "gpu_model": "NVIDIA L4",
                "workload_kind": "inference",
                "replicas": 4,
                "nodes": nodes,
                "gpu_hours": 4 * 168.0,
                "node_hours": nodes * 168.0 if nodes else None,
            }
            for name, nodes in (("one-node", 1), ("two-nodes", 2), ("unknown", None))
        )
    )
    out = {r["workload"]: r for r in spot_savings(frame, CATALOG, window_hours=WEEK).candidates.to_dicts()}
    one, two = out["one-node"], out["two-nodes"]
    assert not one["eligible"] and not one["recommended"]
    assert one["reason"] == "4 replicas on 1 node: one interruption takes them all down until a replacement serves"
    assert two["eligible"] and two["recommended"]
    assert two["reason"] == "replicated inference (4 replicas on 2 nodes): the others serve while one node is replaced"
    assert not out["unknown"]["eligible"]
    assert out["unknown"]["reason"] == "node count unknown: inference needs replicas on at least 2 nodes"
    # g6.12xlarge: spot node price 4.6016 x (1 - 0.59) = 1.886656 USD/node-hour, bucket 4 (>20%): 0.25
    assert (two["spot_usd_per_node_hour"], two["interruption_bucket"]) == (pytest.approx(1.886656), 4)
    # two nodes all week: 0.25 x 336 / 168 = 0.5 interruptions per month x 1 node x 0.2 h x 1.886656 = 0.1886656
    assert two["interruptions_per_month"] == pytest.approx(0.5)
    assert two["interruption_cost_usd_month"] == pytest.approx(0.1886656)


def test_notebook_is_not_eligible() -> None:
    row = candidate(workload="jupyter-alice-0", workload_kind="notebook", replicas=1)
    assert not row["eligible"] and not row["recommended"]
    assert row["reason"] == "notebook: an interruption kills the interactive session and its in-memory state"
    assert row["interruption_risk"] == "10-15%"  # the risk is still shown beside the savings
    assert row["gross_savings_usd"] > 0


def test_single_replica_service_is_not_eligible() -> None:
    row = candidate(instance_type="g6.12xlarge", workload="ocr", workload_kind="service", replicas=1)
    assert not row["eligible"]
    assert row["reason"] == "single replica: an interruption (2-minute notice) is an outage until a replacement serves"
    unknown = candidate(instance_type="g6.12xlarge", workload_kind="inference", replicas=None)
    assert not unknown["eligible"]
    assert unknown["reason"] == "replica count unknown: inference needs replicas on at least 2 nodes"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            {"checkpoint_interval_s": None},
            "job: eligible if it checkpoints (300 s assumed, interval unknown)",
        ),
        (
            {"workload_kind": "batch", "checkpointed": True},
            "checkpointed job: resumes from its last checkpoint (300 s assumed, interval unknown)",
        ),
    ],
)
def test_jobs_with_an_unknown_interval_assume_the_default(row: dict, reason: str) -> None:
    got = candidate(**row)
    assert got["eligible"] and got["reason"] == reason
    assert got["checkpoint_interval_s"] == 300.0


def test_other_ineligible_cases() -> None:
    cases: dict[str, tuple[dict[str, object], str]] = {
        "no-ckpt": ({"checkpointed": False}, "job without checkpoints: an interruption loses all its progress"),
        "cron": (
            {"workload_kind": "DaemonSet"},
            "unknown workload kind 'DaemonSet': only training, batch, inference, service and notebook are judged",
        ),
        "small-p5": ({"instance_type": "p5.4xlarge"}, "no spot price known for p5.4xlarge"),
        "onprem": ({"instance_type": "dgx.onprem"}, "no spot price known for dgx.onprem"),
    }
    frame = workloads(*({"workload": name} | row for name, (row, _) in cases.items()))
    out = spot_savings(frame, CATALOG, window_hours=WEEK).candidates
    for name, (_, reason) in cases.items():
        got = out.filter(pl.col("workload") == name).row(0, named=True)
        assert (got["eligible"], got["reason"]) == (False, reason), name


def test_gcp_spot_has_unknown_risk_taken_as_bucket_4() -> None:
    row = candidate(instance_type="a3-highgpu-8g", region="us-central1", gpu_hours=1344.0, checkpoint_interval_s=600)
    assert row["interruption_bucket"] is None
    assert row["interruption_risk"] == "unknown (assumed >20%)"
    # 0.25 / 730 x (1344 / 8 node-hours) x 1 node x (300 + 120 + 300 + 300) / 3600 h x 50.6095408219178 USD/node-h
    expected = 0.25 / 730 * 168 * 1 * (1020 / 3600) * 50.6095408219178
    assert row["interruption_cost_usd"] == pytest.approx(expected)


def test_spot_rows_are_not_candidates_and_the_summary_sums_recommended_rows() -> None:
    frame = workloads(
        {"workload": "a", "instance_type": "p4d.24xlarge", "gpu_hours": 800.0, "checkpoint_interval_s": 300.0},
        {"workload": "b", "instance_type": "p5.48xlarge", "gpu_hours": 1344.0, "checkpoint_interval_s": 1800.0},
        {"workload": "c", "workload_kind": "notebook"},
        {"workload": "d", "capacity_type": "spot"},
    )
    result = spot_savings(frame.lazy(), CATALOG, window_hours=WEEK)
    assert result.candidates["workload"].to_list() == ["b", "a", "c"]  # recommended first, biggest first
    assert result.recommended == 2
    # 20890.21184 (p5 job) + 6392.418935688282 (p4d job); the notebook is not counted
    assert result.savings_usd_month == pytest.approx(20890.21184 + 6392.418935688282)
    assert result.savings_usd_month == pytest.approx(
        result.gross_savings_usd_month - result.interruption_cost_usd_month
    )
    report = result.to_report()
    assert set(report) >= {"candidates", "savings_usd_month"}
    assert report["candidates"][0]["workload"] == "b"


def test_assumptions_state_the_formula() -> None:
    result = spot_savings(workloads({}), CATALOG, window_hours=WEEK)
    text = " ".join(result.assumptions)
    for phrase in (
        "midpoint",
        "checkpoint interval / 2 + restart overhead + image pull + warm-up",
        "restarts all its ranks",
        "spot USD per node-hour",
        "x 730 / window hours",
        "estimate",
    ):
        assert phrase in text
    assert BUCKET_MONTHLY_INTERRUPTION == {0: 0.025, 1: 0.075, 2: 0.125, 3: 0.175, 4: 0.25}


def test_configured_assumptions_change_the_lost_work() -> None:
    result = spot_savings(
        workloads({"checkpoint_interval_s": None}),
        CATALOG,
        window_hours=WEEK,
        assumptions=SpotAssumptions(checkpoint_interval_s=1200, restart_overhead_s=300, image_pull_s=60, warm_up_s=0),
    )
    row = result.candidates.row(0, named=True)
    assert row["lost_hours_per_interruption"] == pytest.approx((600 + 300 + 60 + 0) / 3600)
    assert (row["image_pull_s"], row["warm_up_s"]) == (60.0, 0.0)


def test_overridden_prices_flow_into_spot_savings() -> None:
    catalog = PriceCatalog.build(
        PriceOverrides(instance_type_usd_per_hour={"p4d.24xlarge": {"on-demand": 16.0, "spot": 8.0}})
    )
    row = candidate(catalog, gpu_hours=80.0, checkpoint_interval_s=0.0)
    # (16 - 8) / 8 GPUs = 1 USD/GPU-h saved x 80 GPU-h = 80
    assert row["gross_savings_usd"] == pytest.approx(80.0)
    assert row["spot_price_source"] == "override: instance type p4d.24xlarge (spot)"
    assert row["interruption_bucket"] == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: spot_savings(workloads({}).drop("workload_kind"), CATALOG, window_hours=WEEK),
            "spot savings: the workloads frame lacks the column(s) workload_kind",
        ),
        (
            lambda: spot_savings(workloads({}), CATALOG, window_hours=0),
            "spot savings: window_hours must be a positive number of hours, not 0",
        ),
        (
            lambda: spot_savings(workloads({"gpu_hours": -1.0}), CATALOG, window_hours=WEEK),
            "spot savings: gpu_hours must be >= 0",
        ),
        (
            lambda: SpotAssumptions(restart_overhead_s=-5),
            "spot savings: restart_overhead_s must be a number of seconds >= 0, not -5",
        ),
        (
            lambda: SpotAssumptions(image_pull_s=float("nan")),
            "spot savings: image_pull_s must be a number of seconds >= 0, not nan",
        ),
    ],
)
def test_bad_input_raises_one_line_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(SpotInputError) as info:
        call()
    assert str(info.value) == message
    assert isinstance(info.value, AnalysisError)


# --- properties --------------------------------------------------------------------------------------------------

SPOT_TYPES = ["p4d.24xlarge", "p5.48xlarge", "p5en.48xlarge", "g5.12xlarge", "g6.xlarge", "a3-highgpu-8g"]
KINDS = ["training", "batch", "inference", "service", "notebook"]


@st.composite
def candidate_rows(draw: st.DrawFn) -> dict:
    return {
        "workload": draw(st.text(min_size=1, max_size=5)),
        "instance_type": draw(st.sampled_from(SPOT_TYPES)),
        "region": draw(st.sampled_from([None, "us-east-1", "us-central1"])),
        "workload_kind": draw(st.sampled_from(KINDS)),
        "gpu_hours": draw(st.floats(0, 1e5)),
        "replicas": draw(st.one_of(st.none(), st.integers(1, 8))),
        "checkpoint_interval_s": draw(st.one_of(st.none(), st.floats(0, 86400))),
    }


@settings(max_examples=100, deadline=None)
@given(st.lists(candidate_rows(), min_size=1, max_size=8), st.floats(1, 2000), st.floats(0, 3600))
def test_net_savings_never_exceed_gross(rows: list[dict], window: float, restart: float) -> None:
    result = spot_savings(
        workloads(*rows), CATALOG, window_hours=window, assumptions=SpotAssumptions(restart_overhead_s=restart)
    )
    out = result.candidates
    assert (out["net_savings_usd"] <= out["gross_savings_usd"]).all()
    assert (out["interruption_cost_usd"] >= 0).all()
    assert result.savings_usd_month <= result.gross_savings_usd_month + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(SPOT_TYPES),
    st.sampled_from(["training", "batch"]),
    st.floats(0, 1e5),
    st.floats(0, 86400),
    st.floats(0, 86400),
)
def test_a_longer_checkpoint_interval_never_increases_net_savings(
    itype: str, kind: str, hours: float, a: float, b: float
) -> None:
    short, long = sorted((a, b))
    net = [
        candidate(instance_type=itype, workload_kind=kind, gpu_hours=hours, checkpoint_interval_s=c)["net_savings_usd"]
        for c in (short, long)
    ]
    assert net[1] <= net[0]


def test_no_on_demand_rows_gives_an_empty_result() -> None:
    result = spot_savings(workloads({"capacity_type": "spot"}), CATALOG, window_hours=WEEK)
    assert result.candidates.height == 0
    assert (result.savings_usd_month, result.recommended) == (0.0, 0)


# --- from the report's minute groups ------------------------------------------------------------------------------

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
DAY = Window(T0, T0 + dt.timedelta(days=1))


def test_usage_candidates_from_minute_groups_and_priced_nodes() -> None:
    node_prices = price_nodes(
        pl.DataFrame(
            {
                "date": [T0.date()] * 4,
                "cluster": ["c1"] * 4,
                "node": ["p5-a", "p5-b", "l4-a", "l4-b"],
                "instance_type": ["p5.48xlarge", "p5.48xlarge", "g6.12xlarge", "g6.12xlarge"],
                "capacity_type": ["on-demand"] * 4,
                "region": ["us-east-1"] * 4,
                "gpu_model": [H100, H100, "NVIDIA L4", "NVIDIA L4"],
                "gpu_count": [8, 8, 4, 4],
                "labels": [
                    '{"karpenter.sh/nodepool": "h100-train"}',
                    '{"karpenter.sh/nodepool": "h100-train"}',
                    None,
                    None,
                ],
            }
        ),
        CATALOG,
    )

    def group(node: str, ns: str | None, wl: str | None, state: str, hours: float, first_h: int, last_h: int) -> dict:
        return {
            "cluster": "c1",
            "node": node,
            "date": T0.date(),
            "gpu_model": H100 if node.startswith("p5") else "NVIDIA L4",
            "namespace": ns,
            "workload": wl,
            "state": state,
            "gpu_hours": hours,
            "first_seen": T0 + dt.timedelta(hours=first_h),
            "last_seen": T0 + dt.timedelta(hours=last_h, minutes=-1),
        }

    groups = pl.DataFrame(
        [
            # a training job on both p5 nodes, 16 GPUs for 10 h: 150 h active + 10 h idle, 10 h no data (skipped)
            group("p5-a", "ml-training", "llama-ft-x2k4q", "active", 75.0, 0, 10),
            group("p5-b", "ml-training", "llama-ft-x2k4q", "active", 75.0, 0, 10),
            group("p5-b", "ml-training", "llama-ft-x2k4q", "idle_held", 10.0, 0, 10),
            group("p5-b", "ml-training", "llama-ft-x2k4q", "no_data", 10.0, 0, 10),
            # a service with 3 single-GPU replicas all day on the L4 node: 72 GPU-hours
            group("l4-a", "search", "query-encoder", "active", 72.0, 0, 24),
            # a service with one replica on each L4 node all day
            group("l4-a", "search", "rerank", "active", 24.0, 0, 24),
            group("l4-b", "search", "rerank", "active", 24.0, 0, 24),
            # a notebook on one L4 GPU for 24 h
            group("l4-a", "research", "jupyter-alice-0", "idle_held", 24.0, 0, 24),
            # nobody's GPU time is no one's candidate
            group("l4-a", None, None, "unallocated", 24.0, 0, 24),
        ]
    )
    got = usage_candidates(groups, node_prices, DAY, checkpoint_intervals_s={"ml-training/*": 900})
    rows = {r["workload"]: r for r in got.to_dicts()}
    assert set(rows) == {"llama-ft-x2k4q", "query-encoder", "rerank", "jupyter-alice-0"}
    train = rows["llama-ft-x2k4q"]
    assert (train["node_group"], train["gpu_hours"], train["workload_kind"]) == ("h100-train", 160.0, "training")
    assert train["replicas"] == 16  # 160 GPU-hours over 10 h = 16 GPUs at once
    assert train["checkpoint_interval_s"] == 900.0
    # 10 h on each p5 node = 20 node-hours over 10 h running: 2 nodes at once
    assert (train["nodes"], train["node_hours"], train["nodes_basis"]) == (
        2,
        20.0,
        "measured: node-hours / hours running",
    )
    service = rows["query-encoder"]
    assert (service["node_group"], service["workload_kind"], service["replicas"]) == ("g6.12xlarge", "inference", 3)
    assert service["kind_basis"] == "name heuristic (no owner known)"
    assert (service["nodes"], service["node_hours"]) == (1, 24.0)
    assert (rows["rerank"]["replicas"], rows["rerank"]["nodes"], rows["rerank"]["node_hours"]) == (2, 2, 48.0)
    assert (rows["jupyter-alice-0"]["workload_kind"], rows["jupyter-alice-0"]["replicas"]) == ("notebook", 1)

    section = spot.report(groups, node_prices, CATALOG, DAY, workload_kinds={"search/*": "service"})
    by_name = {c["workload"]: c for c in section["candidates"]}
    assert by_name["query-encoder"]["kind_basis"] == "configured (search/*)"
    assert by_name["llama-ft-x2k4q"]["recommended"] and by_name["llama-ft-x2k4q"]["nodes_restarted"] == 2
    assert not by_name["query-encoder"]["eligible"]
    assert by_name["query-encoder"]["reason"] == (
        "3 replicas on 1 node: one interruption takes them all down until a replacement serves"
    )
    assert by_name["rerank"]["eligible"] and by_name["rerank"]["nodes_restarted"] == 1
    assert section["assumption_values"] == {
        "checkpoint_interval_s": 300.0,
        "restart_overhead_s": 120.0,
        "image_pull_s": 300.0,
        "warm_up_s": 300.0,
        "min_serving_nodes": 2,
    }
    assert not by_name["jupyter-alice-0"]["eligible"]
    recommended = [c["net_savings_usd_month"] for c in section["candidates"] if c["recommended"]]
    assert section["savings_usd_month"] == pytest.approx(sum(recommended), abs=0.01)


def test_usage_candidates_take_the_kind_from_the_stored_owner_kind() -> None:
    node_prices = price_nodes(
        pl.DataFrame(
            {
                "date": [T0.date()] * 2,
                "cluster": ["c1"] * 2,
                "node": ["l4-a", "l4-b"],
                "instance_type": ["g6.12xlarge"] * 2,
                "capacity_type": ["on-demand"] * 2,
                "region": ["us-east-1"] * 2,
                "gpu_model": ["NVIDIA L4"] * 2,
                "gpu_count": [4, 4],
                "labels": [None, None],
            }
        ),
        CATALOG,
    )
    groups = pl.DataFrame(
        [
            {
                "cluster": "c1",
                "node": node,
                "date": T0.date(),
                "gpu_model": "NVIDIA L4",
                "namespace": ns,
                "workload": wl,
                "state": "active",
                "gpu_hours": 24.0,
                "first_seen": T0,
                "last_seen": T0 + dt.timedelta(hours=24, minutes=-1),
            }
            for node in ("l4-a", "l4-b")
            for ns, wl in (("data", "embed-api"), ("research", "lab-bob"), ("search", "rerank"))
        ]
    )
    owners = pl.DataFrame(
        {
            "cluster": ["c1", "c1", "c1", "c1"],
            "namespace": ["data", "data", "research", "other"],
            "workload": ["embed-api", "embed-api", "lab-bob", "rerank"],
            # two kinds for one workload: the first by name, as the recommendations' owner_kinds picks it
            "owner_kind": ["Job", "CronJob", "Notebook", "Deployment"],
        }
    )
    got = {r["workload"]: r for r in usage_candidates(groups, node_prices, DAY, owners=owners).to_dicts()}
    assert (got["embed-api"]["workload_kind"], got["embed-api"]["kind_basis"]) == ("batch", "owner kind CronJob")
    assert (got["lab-bob"]["workload_kind"], got["lab-bob"]["kind_basis"]) == ("notebook", "owner kind Notebook")
    # another namespace's owner is not this workload's
    assert (got["rerank"]["workload_kind"], got["rerank"]["kind_basis"]) == ("inference", NAME_HEURISTIC)
    section = spot.report(groups, node_prices, CATALOG, DAY, owners=owners, workload_kinds={"data/*": "service"})
    by_name = {c["workload"]: c for c in section["candidates"]}
    assert by_name["embed-api"]["kind_basis"] == "configured (data/*)"  # a configured pattern still wins
    assert by_name["lab-bob"]["reason"].startswith("notebook:")  # by name alone it would be replicated inference
    guessed = {r["workload"]: r for r in usage_candidates(groups, node_prices, DAY).to_dicts()}
    assert {r["kind_basis"] for r in guessed.values()} == {NAME_HEURISTIC}
    assert guessed["lab-bob"]["workload_kind"] == "inference"


def test_workload_kind_patterns() -> None:
    assert workload_kind("ml-training", "moe-pretrain-abcde") == ("training", "name heuristic (no owner known)")
    assert workload_kind("data-platform", "nightly-embeddings")[0] == "batch"
    assert workload_kind("research", "finetune-q8z2x")[0] == "training"
    assert workload_kind("llm-serving", "chat-70b")[0] == "inference"
    assert workload_kind("x", "y", {"x/*": "Notebook"}) == ("notebook", "configured (x/*)")
    with pytest.raises(SpotInputError, match="workload kind 'cronjob' for pattern 'x/\\*' is not one of"):
        workload_kind("x", "y", {"x/*": "cronjob"})


def test_spot_report_on_a_simulated_fleet(sim_warehouse: Path) -> None:
    lake = Lake(sim_warehouse)
    window = Window(dt.datetime(2026, 11, 17, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    minutes = lake.scan(GPU_MINUTES)
    groups = usage.minute_groups(minutes, window, usage.mig_parent_gpus(minutes, window)).collect()
    node_prices = price_nodes(lake.scan(NODES), CATALOG)
    owners = usage.workload_owners(minutes, window, []).collect()
    section = spot.report(groups, node_prices, CATALOG, window, owners=owners)
    candidates = pl.DataFrame(section["candidates"])
    assert candidates.height > 0
    # the simulator stores every pod's owner: no candidate's kind is guessed from its name
    assert candidates["kind_basis"].str.starts_with("owner kind ").all()
    assert "owner kind PyTorchJob" in candidates.filter(pl.col("workload_kind") == "training")["kind_basis"]
    spot_pools = {p.instance_type for p in POOLS if p.capacity_type == "spot"} - {
        p.instance_type for p in POOLS if p.capacity_type == "on-demand"
    }
    assert not set(candidates["instance_type"]) & spot_pools  # the fleet's spot pools are not candidates
    training = candidates.filter(pl.col("workload_kind") == "training")
    assert training.height > 0 and training["recommended"].all()
    assert set(training["instance_type"]) <= {"p5.48xlarge", "p5en.48xlarge", "p4de.24xlarge"}
    assert section["savings_usd_month"] > 0
    assert section["savings_usd_month"] == pytest.approx(
        candidates.filter(pl.col("recommended"))["net_savings_usd_month"].sum(), abs=0.01
    )
    assert candidates["on_demand_price_source"].str.starts_with("AWS on-demand us-east-1").all()
