"""The price catalog (analysis.pricing.catalog, analysis.pricing.shipped): golden GPU-hour prices worked by hand,
and the property that every node gets a positive price with a source."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from analysis.pricing.catalog import PriceCatalog
from analysis.pricing.frames import NODE_PRICE_COLUMNS, catalog_frame, price_nodes
from analysis.pricing.overrides import PriceOverrides
from collector.fleet import FILLER, POOLS, REGION
from tests.pricing_nodes import AWS_OD, CATALOG, DEFAULT, H100, nodes, one


def test_sanity_points_hold_in_the_shipped_catalog() -> None:
    frame = catalog_frame(CATALOG)

    def entry(itype: str, region: str) -> dict:
        return frame.filter((pl.col("instance_type") == itype) & (pl.col("region") == region)).row(0, named=True)

    p5 = entry("p5.48xlarge", "us-east-1")
    assert (p5["on_demand_usd_per_hour"], p5["spot_savings_pct"], p5["interruption_bucket"]) == (55.04, 52, 4)
    p4d = entry("p4d.24xlarge", "us-east-1")
    assert (p4d["on_demand_usd_per_hour"], p4d["spot_savings_pct"], p4d["interruption_bucket"]) == (21.957642, 67, 2)
    a3 = entry("a3-highgpu-8g", "us-central1")
    assert round(a3["on_demand_usd_per_hour"], 2) == 88.49
    assert round(a3["spot_usd_per_hour"], 4) == 50.6095
    assert (a3["gpu_model"], a3["gpu_count"], a3["cloud"]) == (H100, 8, "gcp")
    assert frame["as_of"].is_not_null().all()


def test_p5_on_demand_gpu_hour_price() -> None:
    row = one(instance_type="p5.48xlarge", gpu_model=H100, gpu_count=8)
    assert row["usd_per_gpu_hour"] == pytest.approx(6.88)  # 55.04 USD/node-hour / 8 GPUs
    assert row["usd_per_node_hour"] == pytest.approx(55.04)
    assert row["price_source"] == AWS_OD
    assert row["price_fallback"] is False
    assert row["interruption_bucket"] is None  # on-demand: no interruption risk


def test_p4d_spot_gpu_hour_price_is_estimated_from_the_spot_advisor() -> None:
    row = one(instance_type="p4d.24xlarge", capacity_type="spot", gpu_model="NVIDIA A100-SXM4-40GB", gpu_count=8)
    # 21.957642 x (1 - 67/100) = 7.24602186 USD/node-hour; / 8 GPUs = 0.9057527325
    assert row["usd_per_gpu_hour"] == pytest.approx(21.957642 * 0.33 / 8)
    assert row["usd_per_gpu_hour"] == pytest.approx(0.9057527325)
    assert row["price_source"] == "AWS spot estimate: on-demand x (1 - 67% Spot Advisor savings), 2025-06-28"
    assert row["interruption_bucket"] == 2
    assert row["price_fallback"] is False


def test_p5_spot_is_bucket_4() -> None:
    row = one(instance_type="p5.48xlarge", capacity_type="spot", gpu_model=H100, gpu_count=8)
    assert row["usd_per_gpu_hour"] == pytest.approx(55.04 * 0.48 / 8)  # 3.3024
    assert row["price_source"] == "AWS spot estimate: on-demand x (1 - 52% Spot Advisor savings), 2025-06-28"
    assert row["interruption_bucket"] == 4


def test_gcp_a3_on_demand_and_spot_in_us_central1() -> None:
    od = CATALOG.gpu_hour_price("a3-highgpu-8g", "on-demand", H100, "us-central1")
    spot = CATALOG.gpu_hour_price("a3-highgpu-8g", "spot", H100, "us-central1")
    assert od.usd_per_gpu_hour == pytest.approx(88.4899999025753 / 8)  # 11.06 USD/GPU-hour
    assert spot.usd_per_gpu_hour == pytest.approx(50.6095408219178 / 8)  # 6.33
    assert od.source == "GCP on-demand us-central1, google-cloud-pricing-cost-calculator @fd66b26f, 2026-07-30"
    assert spot.source == "GCP spot us-central1, google-cloud-pricing-cost-calculator @fd66b26f, 2026-07-30"
    assert spot.spot_priced and spot.interruption_bucket is None  # GCP publishes no interruption rates


def test_golden_frame_of_mixed_nodes() -> None:
    frame = nodes(
        {"node": "a", "instance_type": "p5.48xlarge", "gpu_model": H100, "gpu_count": 8},
        {"node": "b", "instance_type": "g6.xlarge", "capacity_type": "spot", "gpu_model": "NVIDIA L4", "gpu_count": 1},
        {"node": "c", "instance_type": "p5.4xlarge", "capacity_type": "spot", "gpu_model": H100, "gpu_count": 1},
        {
            "node": "d",
            "instance_type": "g5.12xlarge",
            "region": "us-west-2",
            "gpu_model": "NVIDIA A10G",
            "gpu_count": 4,
        },
        {"node": "e", "instance_type": None, "region": None, "gpu_model": "Mystery GPU", "gpu_count": 2},
    )
    got = price_nodes(frame, CATALOG).select("node", *NODE_PRICE_COLUMNS)
    expected = pl.DataFrame(
        {
            "node": ["a", "b", "c", "d", "e"],
            "usd_per_gpu_hour": [
                55.04 / 8,  # 6.88
                0.8048 * (1 - 0.49),  # g6.xlarge spot: 49% savings, 1 GPU = 0.410448
                6.88,  # p5.4xlarge: no Spot Advisor data, priced as on-demand
                5.672 / 4,  # g5.12xlarge: 1.418, us-east-1 price stands in for us-west-2
                0.95,  # unknown instance type, unknown model: OpenCost default
            ],
            "usd_per_node_hour": [55.04, 0.8048 * 0.51, 6.88, 5.672, 0.95 * 2],
            "price_source": [
                AWS_OD,
                "AWS spot estimate: on-demand x (1 - 49% Spot Advisor savings), 2025-06-28",
                AWS_OD + "; no spot price known, priced as on-demand",
                AWS_OD + "; region us-west-2 has no shipped price, us-east-1 price used",
                DEFAULT,
            ],
            "price_fallback": [False, False, False, False, True],
            "interruption_bucket": pl.Series([None, 4, None, None, None], dtype=pl.Int8),
        }
    )
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-12)


def test_a_node_without_a_gpu_count_uses_the_catalogs() -> None:
    row = one(instance_type="g6.12xlarge", gpu_count=None)
    assert row["usd_per_gpu_hour"] == pytest.approx(4.6016 / 4)  # catalog: 4 L4 GPUs


def test_every_simulated_fleet_instance_type_is_priced_from_the_catalog() -> None:
    rows = [
        {"node": p.name, "instance_type": p.instance_type, "capacity_type": p.capacity_type, "region": REGION}
        for p in (*POOLS, FILLER)
    ]
    out = price_nodes(nodes(*rows), CATALOG)
    assert not out["price_fallback"].any()
    spot = out.filter(pl.col("capacity_type") == "spot")
    assert spot["interruption_bucket"].is_not_null().all()
    assert spot["price_source"].str.starts_with("AWS spot estimate").all()


KNOWN_TYPES = sorted({itype for itype, _ in CATALOG.entries})
MODELS = [H100, "NVIDIA A100-SXM4-40GB", "NVIDIA L4", "NVIDIA H200", "NVIDIA-H100-80GB-HBM3"]


@st.composite
def node_rows(draw: st.DrawFn) -> dict:
    return {
        "node": draw(st.sampled_from(["n1", "n2", "gpu-node-7"])),
        "instance_type": draw(st.one_of(st.none(), st.sampled_from(KNOWN_TYPES), st.text(max_size=12))),
        "capacity_type": draw(st.sampled_from([None, "on-demand", "spot"])),
        "region": draw(st.sampled_from([None, "us-east-1", "us-west-2", "us-central1", "europe-west4"])),
        "gpu_model": draw(st.one_of(st.none(), st.sampled_from(MODELS), st.text(max_size=12))),
        "gpu_count": draw(st.one_of(st.none(), st.integers(0, 16))),
        "labels": draw(st.sampled_from([None, "{}", "not json", '{"nvidia.com/gpu_type": "a100"}'])),
    }


OVERRIDES = [
    PriceOverrides(),
    PriceOverrides(
        gpu_model_usd_per_gpu_hour={"NVIDIA H200": 3.9},
        instance_type_usd_per_hour={"p5.48xlarge": {"spot": 18.0}, "g6.xlarge": 0.7},
        default_gpu_usd_per_gpu_hour=1.1,
    ),
]


@settings(max_examples=150, deadline=None)
@given(st.lists(node_rows(), min_size=1, max_size=12), st.sampled_from(OVERRIDES))
def test_every_priced_row_has_a_positive_price_and_a_source(rows: list[dict], overrides: PriceOverrides) -> None:
    out = price_nodes(nodes(*rows), PriceCatalog.build(overrides))
    assert out.height == len(rows)
    assert out["usd_per_gpu_hour"].is_not_null().all()
    assert out["usd_per_gpu_hour"].is_not_nan().all()
    assert (out["usd_per_gpu_hour"] > 0).all()
    assert out["price_source"].is_not_null().all()
    assert (out["price_source"].str.len_chars() > 0).all()
    assert out.filter(pl.col("capacity_type") != "spot")["interruption_bucket"].is_null().all()
