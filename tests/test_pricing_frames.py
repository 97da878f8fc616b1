"""Prices as frames (analysis.pricing.frames): nodes and GPU models priced, and the warehouse `prices` table."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis.pricing.catalog import PriceCatalog
from analysis.pricing.frames import NODE_PRICE_COLUMNS, model_prices, price_nodes, prices_table
from analysis.pricing.overrides import PriceOverrides
from tests.pricing_nodes import AWS_OD, CATALOG, DEFAULT, H100, nodes
from warehouse.ingest import append, conform
from warehouse.lake import Lake
from warehouse.schema import PRICES
from warehouse.views import connect


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


def test_empty_and_all_null_frames() -> None:
    empty = price_nodes(nodes({}).clear(), CATALOG)
    assert empty.height == 0 and set(NODE_PRICE_COLUMNS) <= set(empty.columns)
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
