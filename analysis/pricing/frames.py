"""Prices as frames: nodes and GPU models priced, the shipped catalog as a frame and as the ``prices`` table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl
import pyarrow as pa

from analysis.pricing.bill import BILL_MATCH_COLUMNS, match_bill
from analysis.pricing.catalog import PriceCatalog
from analysis.pricing.errors import PricingError, UnknownCapacityType
from warehouse.schema import CAPACITY_TYPES, PRICES

GPU_HOUR_PRICE_COLUMNS = ("usd_per_gpu_hour", "price_source", "price_fallback")
"""The columns of a GPU-hour price in every priced frame: per model (``model_prices``) and per priced group
(``analysis.costs.priced``)."""
NODE_PRICE_COLUMNS = ("usd_per_gpu_hour", "usd_per_node_hour", "price_source", "price_fallback", "interruption_bucket")
"""The price columns ``price_nodes`` adds."""
GPU_COUNT_COLUMNS = ("node_gpus", "gpu_count_basis")
"""The GPU count ``price_nodes`` divides by and which rule gave it (``analysis.gpu_count``), added beside them."""

_KEY = ("instance_type", "capacity_type", "gpu_model", "region", "gpu_count")
_OPTIONAL = {"region": pl.String, "node": pl.String, "labels": pl.String}


def price_nodes(
    nodes: pl.LazyFrame | pl.DataFrame,
    catalog: PriceCatalog,
    bill: tuple[pl.DataFrame, pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """``nodes`` (rows of the ``nodes`` table) with the price columns added, row order kept.

    Needs ``instance_type``, ``capacity_type``, ``gpu_model`` and ``gpu_count``; ``region``, ``node`` and ``labels``
    are used when present. Adds ``usd_per_gpu_hour`` (node price / GPU count, never null), ``usd_per_node_hour``
    (null only when the GPU count is unknown and a per-GPU price was used), ``price_source``, ``price_fallback`` and
    ``interruption_bucket`` (Int8, spot nodes only), and ``GPU_COUNT_COLUMNS``: ``node_gpus`` (the hardware's GPU
    count, null when unknown) and ``gpu_count_basis``. Pure: each distinct node description is priced once with
    ``PriceCatalog.gpu_hour_price`` and joined back. ``bill``: the imported bill's rates
    (``analysis.pricing.bill.bill_rates``), which price the nodes they cover first (matched by ``provider_id``,
    else instance type, region and capacity type, in the billing period of the node's ``date``).
    """
    frame = nodes.collect() if isinstance(nodes, pl.LazyFrame) else nodes
    missing = [c for c in ("instance_type", "capacity_type", "gpu_model", "gpu_count") if c not in frame.columns]
    if missing:
        raise PricingError(f"nodes to price lack the column(s) {', '.join(missing)} (the nodes table has them)")
    frame = frame.drop([c for c in (*NODE_PRICE_COLUMNS, *GPU_COUNT_COLUMNS) if c in frame.columns])
    added = [name for name in _OPTIONAL if name not in frame.columns]
    work = frame.with_columns(pl.lit(None, dtype=_OPTIONAL[name]).alias(name) for name in added)
    work = work.with_columns(  # all-null columns (dtype Null) typed, so string tests and joins work
        pl.col(name).cast(pl.Int32 if name == "gpu_count" else pl.String)
        for name in (*_KEY, *_OPTIONAL)
        if work.schema[name] == pl.Null
    )
    billed = bill is not None and "date" in work.columns
    if bill is not None and billed:  # the bill comes first (``analysis.pricing.bill``)
        work = match_bill(work.drop([c for c in BILL_MATCH_COLUMNS if c in work.columns]), bill)
    bad = work.filter(pl.col("capacity_type").is_not_null() & ~pl.col("capacity_type").is_in(CAPACITY_TYPES))
    if bad.height:
        raise UnknownCapacityType(bad["capacity_type"][0], "the nodes' capacity_type column")
    key = [*_KEY, "labels"] + (["node"] if catalog.overrides.custom_prices else [])  # labels: GFD's GPU count
    key += list(BILL_MATCH_COLUMNS) if billed else []
    keys = work.select(key).unique(maintain_order=True)
    priced = [
        catalog.gpu_hour_price(
            row["instance_type"],
            row["capacity_type"],
            row["gpu_model"],
            row["region"],
            gpu_count=row["gpu_count"],
            node=row.get("node"),
            labels=row.get("labels"),
            bill=(row["bill_usd_per_node_hour"], row["bill_source"]) if row.get("bill_usd_per_node_hour") else None,
        )
        for row in keys.iter_rows(named=True)
    ]
    prices = keys.with_columns(
        pl.Series("usd_per_gpu_hour", [p.usd_per_gpu_hour for p in priced], dtype=pl.Float64),
        pl.Series("usd_per_node_hour", [p.usd_per_node_hour for p in priced], dtype=pl.Float64),
        pl.Series("price_source", [p.source for p in priced], dtype=pl.String),
        pl.Series("price_fallback", [p.fallback for p in priced], dtype=pl.Boolean),
        pl.Series("interruption_bucket", [p.interruption_bucket for p in priced], dtype=pl.Int8),
        pl.Series("node_gpus", [p.gpu_count for p in priced], dtype=pl.Int32),
        pl.Series("gpu_count_basis", [p.gpu_count_basis for p in priced], dtype=pl.String),
    )
    out = work.join(prices, on=key, how="left", nulls_equal=True, maintain_order="left")
    return out.drop([*added, *(BILL_MATCH_COLUMNS if billed else ())])


def model_prices(models: Iterable[str | None], catalog: PriceCatalog) -> pl.DataFrame:
    """One row per distinct GPU model (first-seen order) with its per-GPU fallback price, for GPU-time whose node the
    warehouse does not know: ``gpu_model``, ``usd_per_gpu_hour``, ``price_source`` and ``price_fallback`` (always
    true), from a configured GPU-model price, a custom CSV GPU row or the default (levels 4-6)."""
    names = list(dict.fromkeys(models))
    priced = [catalog.gpu_hour_price(None, None, model, None) for model in names]
    return pl.DataFrame(
        {
            "gpu_model": names,
            "usd_per_gpu_hour": [p.usd_per_gpu_hour for p in priced],
            "price_source": [p.source for p in priced],
            "price_fallback": [p.fallback for p in priced],
        },
        schema={
            "gpu_model": pl.String,
            "usd_per_gpu_hour": pl.Float64,
            "price_source": pl.String,
            "price_fallback": pl.Boolean,
        },
    )


def catalog_frame(catalog: PriceCatalog) -> pl.DataFrame:
    """The shipped catalog as a frame: one row per (cloud, region, instance type), prices in USD per node-hour."""
    rows: list[dict[str, Any]] = [
        {
            "cloud": e.cloud,
            "region": e.region,
            "instance_type": e.instance_type,
            "gpu_model": e.gpu_model,
            "gpu_count": e.gpu_count,
            "on_demand_usd_per_hour": e.on_demand_usd_per_hour,
            "spot_usd_per_hour": e.spot_usd_per_hour,
            "spot_savings_pct": e.spot_savings_pct,
            "interruption_bucket": e.interruption_bucket,
            "as_of": e.as_of,
            "on_demand_source": e.on_demand_source,
            "spot_source": e.spot_source,
        }
        for e in sorted(catalog.entries.values(), key=lambda e: (e.cloud, e.region, e.instance_type))
    ]
    return pl.DataFrame(
        rows,
        schema={
            "cloud": pl.String,
            "region": pl.String,
            "instance_type": pl.String,
            "gpu_model": pl.String,
            "gpu_count": pl.Int32,
            "on_demand_usd_per_hour": pl.Float64,
            "spot_usd_per_hour": pl.Float64,
            "spot_savings_pct": pl.Float64,
            "interruption_bucket": pl.Int8,
            "as_of": pl.Date,
            "on_demand_source": pl.String,
            "spot_source": pl.String,
        },
    )


def prices_table(catalog: PriceCatalog) -> pa.Table:
    """The shipped catalog in the warehouse ``prices`` schema (``warehouse.schema.PRICES``), ready to append.

    ``as_of`` is the on-demand price's date; ``source`` names the on-demand source and, after `` | ``, the spot one
    (whose date it carries). Overrides are settings, not reference data, and are not included.
    """
    frame = catalog_frame(catalog).select(
        "cloud",
        "region",
        "instance_type",
        "gpu_model",
        "gpu_count",
        "on_demand_usd_per_hour",
        "spot_usd_per_hour",
        "interruption_bucket",
        "as_of",
        pl.when(pl.col("spot_source").is_not_null())
        .then(pl.concat_str("on_demand_source", pl.lit(" | "), "spot_source"))
        .otherwise(pl.col("on_demand_source"))
        .alias("source"),
    )
    return frame.to_arrow().cast(PRICES.schema)
