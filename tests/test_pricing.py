"""The price catalog: golden GPU-hour prices worked by hand, the precedence of overrides, the custom CSV loader and
its errors, the warehouse `prices` table, and the property that every node gets a positive price with a source."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from analysis.errors import AnalysisError
from analysis.pricing import (
    PRICE_COLUMNS,
    CustomPricingCsvError,
    InvalidPriceOverride,
    PriceCatalog,
    PriceOverrides,
    UnknownCapacityType,
    catalog_frame,
    gpu_model_key,
    load_custom_pricing_csv,
    model_prices,
    price_nodes,
    prices_table,
)
from collector.fleet import FILLER, POOLS, REGION
from warehouse.ingest import append, conform
from warehouse.lake import Lake
from warehouse.schema import NODES, PRICES
from warehouse.views import connect

CATALOG = PriceCatalog.build()
H100 = "NVIDIA H100 80GB HBM3"
AWS_OD = "AWS on-demand us-east-1, karpenter-provider-aws @1d927085, 2026-07-20"
DEFAULT = "fallback: OpenCost default 0.95 USD/GPU-hour"


def nodes(*rows: dict) -> pl.DataFrame:
    """Rows of the warehouse `nodes` table (its schema; missing columns null)."""
    base = {
        "date": dt.date(2026, 11, 2),
        "cluster": "c1",
        "node": "n",
        "instance_type": None,
        "capacity_type": "on-demand",
        "region": "us-east-1",
        "zone": None,
        "gpu_model": None,
        "gpu_count": None,
        "mig_strategy": "none",
        "labels": None,
    }
    table = conform(NODES, pl.DataFrame([base | r for r in rows], infer_schema_length=None).to_arrow())
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def one(catalog: PriceCatalog = CATALOG, **row: object) -> dict:
    return price_nodes(nodes(row), catalog).row(0, named=True)


# --- sanity points of shared/data/SOURCES.md --------------------------------------------------------------------


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


# --- golden GPU-hour prices --------------------------------------------------------------------------------------


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
    got = price_nodes(frame, CATALOG).select("node", *PRICE_COLUMNS)
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


def test_price_nodes_keeps_rows_and_columns_and_takes_lazy_frames() -> None:
    frame = nodes(
        {"node": "x", "instance_type": "p4de.24xlarge", "gpu_count": 8},
        {"node": "y", "instance_type": "p5.48xlarge", "gpu_count": 8},
        {"node": "z", "instance_type": "p4de.24xlarge", "gpu_count": 8},
    )
    out = price_nodes(frame.lazy(), CATALOG)
    assert out.columns[: len(frame.columns)] == frame.columns
    assert out["node"].to_list() == ["x", "y", "z"]
    assert out["usd_per_gpu_hour"].to_list() == pytest.approx([27.44705 / 8, 6.88, 27.44705 / 8])
    again = price_nodes(out, CATALOG)  # re-pricing replaces the price columns
    assert_frame_equal(again, out)


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


# --- overrides and precedence ------------------------------------------------------------------------------------


def test_instance_type_override_beats_the_catalog() -> None:
    catalog = PriceCatalog.build(PriceOverrides(instance_type_usd_per_hour={"p5.48xlarge": 40.0}))
    row = one(catalog, instance_type="p5.48xlarge", gpu_model=H100, gpu_count=8)
    assert row["usd_per_gpu_hour"] == pytest.approx(5.0)  # 40 / 8
    assert row["price_source"] == "override: instance type p5.48xlarge"
    assert row["price_fallback"] is False


def test_instance_type_override_with_spot_and_the_spot_note() -> None:
    both = PriceCatalog.build(
        PriceOverrides(instance_type_usd_per_hour={"p5.48xlarge": {"on-demand": 40.0, "spot": 20.0}})
    )
    spot = one(both, instance_type="p5.48xlarge", capacity_type="spot", gpu_count=8)
    assert spot["usd_per_gpu_hour"] == pytest.approx(2.5)  # 20 / 8
    assert spot["price_source"] == "override: instance type p5.48xlarge (spot)"
    assert spot["interruption_bucket"] == 4  # risk is the instance type's, whoever sets the price
    only_od = PriceCatalog.build(PriceOverrides(instance_type_usd_per_hour={"p5.48xlarge": 40.0}))
    row = one(only_od, instance_type="p5.48xlarge", capacity_type="spot", gpu_count=8)
    assert row["usd_per_gpu_hour"] == pytest.approx(5.0)
    assert row["price_source"] == "override: instance type p5.48xlarge (on-demand price; no spot price configured)"


def test_gpu_model_fallback_for_an_unknown_instance_type() -> None:
    catalog = PriceCatalog.build(PriceOverrides(gpu_model_usd_per_gpu_hour={H100: 4.25}))
    row = one(catalog, instance_type="dgx-h100.onprem", gpu_model=H100, gpu_count=8)
    assert row["usd_per_gpu_hour"] == pytest.approx(4.25)
    assert row["usd_per_node_hour"] == pytest.approx(34.0)  # 4.25 x 8
    assert row["price_fallback"] is True
    assert row["price_source"] == f"fallback: configured price for {H100}"
    label_form = one(catalog, instance_type=None, gpu_model="NVIDIA-H100-80GB-HBM3", gpu_count=8)
    assert label_form["usd_per_gpu_hour"] == pytest.approx(4.25)
    # a known instance type still wins over the model price
    assert one(catalog, instance_type="p5.48xlarge", gpu_model=H100, gpu_count=8)["usd_per_gpu_hour"] == 6.88


def test_unknown_model_gets_the_opencost_default_never_nan() -> None:
    row = one(instance_type="mystery.big", gpu_model="Acme Tensor 9000", gpu_count=4)
    assert row["usd_per_gpu_hour"] == 0.95  # opencost configs/default.json "GPU"
    assert row["price_source"] == DEFAULT
    assert row["price_fallback"] is True
    configured = PriceCatalog.build(PriceOverrides(default_gpu_usd_per_gpu_hour=1.5))
    row = one(configured, instance_type="mystery.big", gpu_model="Acme Tensor 9000", gpu_count=4)
    assert (row["usd_per_gpu_hour"], row["price_source"]) == (1.5, "fallback: configured default 1.5 USD/GPU-hour")


def test_gpu_model_keys_ignore_case_separators_and_vendor() -> None:
    assert gpu_model_key("NVIDIA H100 80GB HBM3") == gpu_model_key("NVIDIA-H100-80GB-HBM3") == "h100 80gb hbm3"
    assert gpu_model_key("Quadro_RTX_4000") == gpu_model_key("quadro rtx 4000")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"instance_type_usd_per_hour": {"p5.48xlarge": -1.0}},
            "invalid price override for instance type p5.48xlarge: -1.0 is not a positive number of USD per hour; "
            "fix it in the price settings",
        ),
        (
            {"gpu_model_usd_per_gpu_hour": {H100: float("nan")}},
            f"invalid price override for GPU model {H100}: nan is not a positive number of USD per hour; "
            "fix it in the price settings",
        ),
        (
            {"instance_type_usd_per_hour": {"p5.48xlarge": {"reserved": 30.0}}},
            "unknown capacity type 'reserved' in the price override for instance type p5.48xlarge: "
            "use one of on-demand, spot",
        ),
        (
            {"default_gpu_usd_per_gpu_hour": 0.0},
            "invalid price override for the default GPU price: 0.0 is not a positive number of USD per hour; "
            "fix it in the price settings",
        ),
    ],
)
def test_malformed_overrides_raise_one_line_errors(value: dict, message: str) -> None:
    with pytest.raises(AnalysisError) as info:
        PriceOverrides(**value)
    assert str(info.value) == message
    assert isinstance(info.value, InvalidPriceOverride | UnknownCapacityType)


def test_unknown_capacity_type_of_a_node() -> None:
    with pytest.raises(UnknownCapacityType, match="unknown capacity type 'reserved' in a node to price"):
        CATALOG.gpu_hour_price("p5.48xlarge", "reserved", H100, "us-east-1")
    frame = nodes({"instance_type": "p5.48xlarge"}).with_columns(pl.lit("preemptible").alias("capacity_type"))
    with pytest.raises(UnknownCapacityType, match="'preemptible' in the nodes' capacity_type column"):
        price_nodes(frame, CATALOG)


def test_unknown_capacity_type_is_priced_as_on_demand_with_a_note() -> None:
    row = one(instance_type="p5.48xlarge", capacity_type=None, gpu_count=8)
    assert row["usd_per_gpu_hour"] == 6.88
    assert row["price_source"] == AWS_OD + "; capacity type unknown, priced as on-demand"


# --- the custom pricing CSV --------------------------------------------------------------------------------------

HEADER = "EndTimestamp,InstanceID,Region,AssetClass,InstanceIDField,InstanceType,MarketPriceHourly,Version\n"


def write(tmp_path: Path, body: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


def test_custom_csv_node_row_and_gpu_row(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "2026-01-01 00:00:00 UTC,g6.12xlarge,,node,metadata.labels.node.kubernetes.io/instance-type,,4.0,\n"
        "2026-01-01 00:00:00 UTC,L4,,gpu,nvidia.com/gpu.product,,0.25,\n",
    )
    catalog = PriceCatalog.build(PriceOverrides(custom_prices=load_custom_pricing_csv(path)))
    row = one(catalog, instance_type="g6.12xlarge", gpu_model="NVIDIA L4", gpu_count=4)
    # node 4.0 USD/h + GPU 0.25 x 4 GPUs = 5.0 USD/node-hour; / 4 GPUs = 1.25 USD/GPU-hour
    assert row["usd_per_gpu_hour"] == pytest.approx(1.25)
    assert row["price_source"] == (
        "custom CSV prices.csv line 2 (node metadata.labels.node.kubernetes.io/instance-type=g6.12xlarge)"
        " + prices.csv line 3 (GPU nvidia.com/gpu.product=L4)"
    )
    assert row["price_fallback"] is False


def test_custom_csv_matches_node_name_region_and_class(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# on-prem pricing\n"
        ",gpu-node-7,,node,metadata.name,,12.0,\n"
        ",,us-east-1,node,,p4de.24xlarge,16.0,\n"
        ",,us-east-1,node,,p4de.24xlarge,20.0,\n"
        ",,eu-west-1,node,,p4de.24xlarge,99.0,\n",
    )
    catalog = PriceCatalog.build(PriceOverrides(custom_prices=load_custom_pricing_csv(path)))
    by_name = one(catalog, node="gpu-node-7", instance_type="unknown.metal", gpu_count=4)
    assert by_name["usd_per_gpu_hour"] == pytest.approx(3.0)  # 12 / 4
    assert by_name["price_source"] == "custom CSV prices.csv line 3 (node metadata.name=gpu-node-7)"
    by_class = one(catalog, node="other", instance_type="p4de.24xlarge", gpu_count=8)
    assert by_class["usd_per_gpu_hour"] == pytest.approx(2.25)  # mean(16, 20) = 18 USD/node-hour / 8
    assert by_class["price_source"] == "custom CSV prices.csv line 4, prices.csv line 5 (instance type p4de.24xlarge)"
    elsewhere = one(catalog, node="other", instance_type="p4de.24xlarge", region="ap-south-1", gpu_count=8)
    assert elsewhere["price_source"].startswith("AWS on-demand")  # no CSV row for ap-south-1: the catalog


def test_instance_type_override_beats_the_custom_csv(tmp_path: Path) -> None:
    path = write(tmp_path, ",p5.48xlarge,,node,metadata.labels.node.kubernetes.io/instance-type,,30.0,\n")
    csv_only = PriceCatalog.build(PriceOverrides(custom_prices=load_custom_pricing_csv(path)))
    assert one(csv_only, instance_type="p5.48xlarge", gpu_count=8)["usd_per_gpu_hour"] == pytest.approx(3.75)
    both = PriceCatalog.build(
        PriceOverrides(instance_type_usd_per_hour={"p5.48xlarge": 40.0}, custom_prices=load_custom_pricing_csv(path))
    )
    assert one(both, instance_type="p5.48xlarge", gpu_count=8)["usd_per_gpu_hour"] == pytest.approx(5.0)


def test_custom_csv_gpu_row_alone_is_a_per_gpu_fallback(tmp_path: Path) -> None:
    path = write(tmp_path, ",Quadro_RTX_4000,,gpu,nvidia.com/gpu_type,,0.75,\n")
    catalog = PriceCatalog.build(PriceOverrides(custom_prices=load_custom_pricing_csv(path)))
    row = one(catalog, instance_type=None, gpu_model="Quadro RTX 4000", gpu_count=2)
    assert row["usd_per_gpu_hour"] == pytest.approx(0.75)
    assert row["price_fallback"] is True
    assert row["price_source"] == (
        "fallback: custom CSV prices.csv line 2 GPU price for nvidia.com/gpu_type=Quadro_RTX_4000"
    )
    labelled = one(catalog, instance_type=None, gpu_model=None, labels='{"nvidia.com/gpu_type": "quadro_rtx_4000"}')
    assert labelled["usd_per_gpu_hour"] == pytest.approx(0.75)


def test_opencost_example_csvs_load(shared: Path) -> None:
    rows = load_custom_pricing_csv(shared / "data/prices/opencost/pricing_schema.csv")
    assert [(r.asset_class, r.instance_id, r.usd_per_hour, r.origin) for r in rows] == [
        ("node", "gke-standard-cluster-1-pool-1-91dc432d-cg69", 0.1337, "pricing_schema.csv line 2"),
        ("gpu", "Quadro_RTX_4000", 0.75, "pricing_schema.csv line 3"),
        ("gpu", "Quadro_RTX_4001", 0.80, "pricing_schema.csv line 4"),
    ]
    mixed = load_custom_pricing_csv(shared / "data/prices/opencost/pricing_schema_mixed_gpu_ondemand.csv")
    catalog = PriceCatalog.build(PriceOverrides(custom_prices=mixed))
    row = one(
        catalog,
        instance_type=None,
        gpu_count=1,
        labels='{"TestClusterUsage": "OnDemand", "nvidia.com/gpu_type": "a100-ondemand"}',
    )
    assert row["usd_per_gpu_hour"] == pytest.approx(0.90411 + 0.5)  # node row + GPU row x 1 GPU


@pytest.mark.parametrize(
    ("body", "where", "detail"),
    [
        (
            ",n1,,node,metadata.name,,0.5,\n,n2,,node,metadata.name,,abc,\n",
            "line 3, column MarketPriceHourly",
            "'abc' is not a number",
        ),
        (
            ",n1,,node,metadata.name,,-2,\n",
            "line 2, column MarketPriceHourly",
            "'-2' is not a positive number of USD per hour",
        ),
        (",n1,,disk,metadata.name,,1,\n", "line 2, column AssetClass", "'disk' is not one of node, gpu, pv"),
        (",n1,,node,metadata.name,1,\n", "line 2", "expected 8 fields, found 7"),
        (
            ",i-0abc,,node,spec.providerID,,1,\n",
            "line 2, column InstanceIDField",
            "'spec.providerID' is not supported (the nodes table has no provider ID or annotations); "
            "use metadata.name or metadata.labels.<key>",
        ),
        (
            ",,,node,metadata.name,,1,\n",
            "line 2, column InstanceID",
            "empty: a node row needs an InstanceID or an InstanceType",
        ),
        (",,,gpu,nvidia.com/gpu_type,,1,\n", "line 2, column InstanceID", "empty: a GPU row needs the GPU type"),
    ],
)
def test_custom_csv_errors_name_file_line_and_column(tmp_path: Path, body: str, where: str, detail: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(CustomPricingCsvError) as info:
        load_custom_pricing_csv(path)
    assert str(info.value) == f"custom pricing CSV {path}, {where}: {detail}"
    assert "\n" not in str(info.value)


def test_custom_csv_header_and_missing_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("InstanceID,AssetClass,Price\nn1,node,1\n")
    with pytest.raises(CustomPricingCsvError) as info:
        load_custom_pricing_csv(bad)
    assert str(info.value) == (
        f"custom pricing CSV {bad}, line 1, column EndTimestamp: missing from the header "
        "(expected EndTimestamp,InstanceID,Region,AssetClass,InstanceIDField,InstanceType,MarketPriceHourly,Version)"
    )
    missing = tmp_path / "nope.csv"
    with pytest.raises(CustomPricingCsvError, match=r"custom pricing CSV .*nope\.csv: cannot read it"):
        load_custom_pricing_csv(missing)
    with pytest.raises(CustomPricingCsvError, match=r"nope\.csv"):
        PriceOverrides.load(custom_pricing_csv=missing)


# --- the warehouse prices table ----------------------------------------------------------------------------------


def test_prices_table_fits_the_warehouse_and_round_trips(lake: Lake) -> None:
    table = prices_table(CATALOG)
    assert table.schema == PRICES.schema
    conform(PRICES, table)  # the warehouse's own value checks (bucket 0-4, prices >= 0, required columns)
    result = append(lake, PRICES, table)
    assert result.rows_written == table.num_rows == len(CATALOG.entries)
    row = (
        connect(lake)
        .execute(
            "SELECT on_demand_usd_per_hour, spot_usd_per_hour, interruption_bucket, as_of, source FROM prices "
            "WHERE cloud = 'aws' AND instance_type = 'p4d.24xlarge'"
        )
        .fetchone()
    )
    assert row is not None
    assert row[0] == 21.957642
    assert row[1] == pytest.approx(21.957642 * 0.33)
    assert row[2] == 2
    assert row[3] == dt.date(2026, 7, 20)
    assert row[4] == AWS_OD + " | AWS spot estimate: on-demand x (1 - 67% Spot Advisor savings), 2025-06-28"
    assert append(lake, PRICES, table).rows_written == 0  # storing the same catalog again changes nothing


# --- properties --------------------------------------------------------------------------------------------------

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


def test_empty_and_all_null_frames() -> None:
    empty = price_nodes(nodes({}).clear(), CATALOG)
    assert empty.height == 0 and set(PRICE_COLUMNS) <= set(empty.columns)
    untyped = pl.DataFrame({"instance_type": [None], "capacity_type": [None], "gpu_model": [None], "gpu_count": [None]})
    row = price_nodes(untyped, CATALOG).row(0, named=True)
    assert (row["usd_per_gpu_hour"], row["price_source"], row["price_fallback"]) == (0.95, DEFAULT, True)


def test_model_prices_for_gpu_time_without_node_facts() -> None:
    catalog = PriceCatalog.build(PriceOverrides(gpu_model_usd_per_gpu_hour={H100: 4.0}))
    samples = pl.DataFrame({"gpu_model": [H100, "NVIDIA L4", H100, None]})
    expected = pl.DataFrame(
        {
            "gpu_model": [H100, "NVIDIA L4", None],
            "usd_per_gpu_hour": [4.0, 0.95, 0.95],
            "price_source": [f"fallback: configured price for {H100}", DEFAULT, DEFAULT],
            "price_fallback": [True, True, True],
        }
    )
    assert_frame_equal(model_prices(samples["gpu_model"], catalog), expected)
