"""Utilization: time-weighted means and percentiles, allocation rate, and the hour-of-week heatmap.

Utilization here is ``sm_active`` (DCGM SM activity) where present, else ``util_pct`` (NVML/DCGM GPU_UTIL), each
minute weighted by its GPU-time. Means are over observed GPU-minutes only (``no_data`` is excluded). The allocation
rate is the share of observed GPU-time that a pod or process held (active, idle_held, idle_allocated).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from analysis.states import HELD_STATES


def mean_pct(priced_groups: pl.DataFrame) -> float | None:
    share = float(priced_groups["busy_share"].sum() or 0.0)
    return round(float(priced_groups["busy_weighted"].sum()) / share, 2) if share else None


def by(
    priced_groups: pl.DataFrame, key: str, top_n: int, histogram: pl.DataFrame | None = None
) -> list[dict[str, Any]]:
    """Per ``key`` (namespace, workload, gpu_model, node): GPU-hours, active hours, mean utilization, allocation rate,
    and (from ``histogram``, when given for that key) p50/p95 utilization."""
    label = "(no holder)" if key in ("namespace", "workload") else "(unknown)"
    rows = (
        priced_groups.group_by(key)
        .agg(
            pl.col("gpu_hours").sum().round(4).alias("gpu_hours"),
            pl.col("gpu_hours").filter(pl.col("state") == "active").sum().round(4).alias("active_hours"),
            (pl.col("busy_weighted").sum() / pl.col("busy_share").sum()).round(2).alias("mean_pct"),
            (pl.col("gpu_hours").filter(pl.col("state").is_in(HELD_STATES)).sum() / pl.col("observed_hours").sum())
            .round(4)
            .alias("allocation_rate"),
            pl.col("cost_usd").sum().round(2).alias("cost_usd"),
        )
        .with_columns(pl.col(key).fill_null(label))
        .sort(["gpu_hours", key], descending=[True, False])
        .head(top_n)
    )
    if histogram is not None and key in histogram.columns:
        rows = rows.join(percentiles(histogram, key).with_columns(pl.col(key).fill_null(label)), on=key, how="left")
    return rows.to_dicts()


def percentiles(histogram: pl.DataFrame, key: str, qs: tuple[float, ...] = (0.5, 0.95)) -> pl.DataFrame:
    """Time-weighted utilization percentiles per ``key`` from a histogram of GPU-hours per whole percent."""
    ordered = (
        histogram.group_by(key, "busy")
        .agg(pl.col("gpu_hours").sum())
        .sort(key, "busy", nulls_last=True)
        .with_columns((pl.col("gpu_hours").cum_sum().over(key) / pl.col("gpu_hours").sum().over(key)).alias("cdf"))
    )
    parts = [
        ordered.filter(pl.col("cdf") >= q)
        .group_by(key)
        .agg(pl.col("busy").min().cast(pl.Float64).alias(f"p{round(q * 100)}_pct"))
        for q in qs
    ]
    out = parts[0]
    for part in parts[1:]:
        out = out.join(part, on=key, how="full", coalesce=True, nulls_equal=True)
    return out


def allocation_rate(priced_groups: pl.DataFrame) -> float | None:
    observed = float(priced_groups["observed_hours"].sum() or 0.0)
    held = float(priced_groups.filter(pl.col("state").is_in(HELD_STATES))["gpu_hours"].sum() or 0.0)
    return round(held / observed, 4) if observed else None
