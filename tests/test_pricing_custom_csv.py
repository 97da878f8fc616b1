"""The OpenCost custom pricing CSV (analysis.pricing.custom_csv): its rows in the precedence, the loader and its
errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.pricing.catalog import PriceCatalog
from analysis.pricing.custom_csv import load_custom_pricing_csv
from analysis.pricing.errors import CustomPricingCsvError
from analysis.pricing.overrides import PriceOverrides
from tests.pricing_nodes import one

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


def test_opencost_example_csvs_load(fixtures: Path) -> None:
    rows = load_custom_pricing_csv(fixtures / "opencost/pricing_schema.csv")
    assert [(r.asset_class, r.instance_id, r.usd_per_hour, r.origin) for r in rows] == [
        ("node", "gke-standard-cluster-1-pool-1-91dc432d-cg69", 0.1337, "pricing_schema.csv line 2"),
        ("gpu", "Quadro_RTX_4000", 0.75, "pricing_schema.csv line 3"),
        ("gpu", "Quadro_RTX_4001", 0.80, "pricing_schema.csv line 4"),
    ]
    mixed = load_custom_pricing_csv(fixtures / "opencost/pricing_schema_mixed_gpu_ondemand.csv")
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
