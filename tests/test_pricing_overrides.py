"""Price overrides (analysis.pricing.overrides): the precedence of overrides over the catalog, and their errors."""

from __future__ import annotations

import polars as pl
import pytest

from analysis.errors import AnalysisError
from analysis.pricing.catalog import PriceCatalog
from analysis.pricing.errors import InvalidPriceOverride, UnknownCapacityType
from analysis.pricing.frames import price_nodes
from analysis.pricing.overrides import PriceOverrides
from tests.pricing_nodes import AWS_OD, CATALOG, DEFAULT, H100, nodes, one


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
