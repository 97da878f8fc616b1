"""Dollars for GPU-time: each group of GPU-minutes priced at its node's GPU-hour price.

The GPU-hour price is the node's price / its GPU count, from the node's instance type and capacity type on that day
(``analysis.pricing``). A GPU whose node is unknown to the warehouse (a source without node facts) is priced by its
GPU model, and says so. Every cost keeps its ``price_source``.
"""

from __future__ import annotations

import polars as pl

from analysis.pricing.frames import GPU_HOUR_PRICE_COLUMNS


def priced(groups: pl.DataFrame, node_prices: pl.DataFrame, model_prices: pl.DataFrame) -> pl.DataFrame:
    """``groups`` (from ``analysis.usage.minute_groups``) with ``usd_per_gpu_hour``, ``price_source``,
    ``price_fallback`` and ``cost_usd`` (= gpu_hours x price).

    ``node_prices``: cluster, node, date + the price columns. ``model_prices``: gpu_model + the price columns, used
    for groups whose node has no price that day.
    """
    by_node = node_prices.select("cluster", "node", "date", *GPU_HOUR_PRICE_COLUMNS).unique(["cluster", "node", "date"])
    by_model = model_prices.select("gpu_model", *[pl.col(c).alias(f"model_{c}") for c in GPU_HOUR_PRICE_COLUMNS])
    out = groups.join(by_node, on=["cluster", "node", "date"], how="left").join(by_model, on="gpu_model", how="left")
    missing = pl.col("usd_per_gpu_hour").is_null()
    out = out.with_columns(
        *(pl.when(missing).then(pl.col(f"model_{c}")).otherwise(pl.col(c)).alias(c) for c in GPU_HOUR_PRICE_COLUMNS)
    ).drop([f"model_{c}" for c in GPU_HOUR_PRICE_COLUMNS])
    return out.with_columns((pl.col("gpu_hours") * pl.col("usd_per_gpu_hour")).alias("cost_usd"))


def price_sources(priced_groups: pl.DataFrame) -> list[dict[str, object]]:
    """Which price sources the numbers used, with the GPU-hours and dollars each priced."""
    return (
        priced_groups.group_by("price_source", "price_fallback")
        .agg(pl.col("gpu_hours").sum().round(4), pl.col("cost_usd").sum().round(2))
        .sort("cost_usd", "price_source", descending=[True, False])
        .to_dicts()
    )


def observed_model_prices(priced_groups: pl.DataFrame) -> pl.DataFrame:
    """Per GPU model, the GPU-hour price the fleet actually paid in the window (GPU-hour weighted over its nodes),
    with the sources it came from: what a GPU of that model freed by a change would save."""
    return (
        priced_groups.filter(pl.col("gpu_hours") > 0)
        .group_by("gpu_model")
        .agg(
            (pl.col("cost_usd").sum() / pl.col("gpu_hours").sum()).alias("usd_per_gpu_hour"),
            pl.col("price_source").unique().sort().str.join("; ").alias("sources"),
            pl.col("price_fallback").any().alias("price_fallback"),
        )
        .with_columns(pl.format("mean GPU-hour price paid in the window ({})", pl.col("sources")).alias("price_source"))
        .drop("sources")
    )
