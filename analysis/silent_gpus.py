"""GPUs a node has but that never report: paid for, unobserved, and counted as ``no_data`` on their node.

Definition (README, Definitions, "Silent GPUs"; pinned by ``tests/test_node_gpu_count.py``): on each day, a node's
silent GPUs are its GPU count (``analysis.gpu_count``: instance type, else GFD label, else GPUs seen) less the
physical GPUs that have GPU-minutes on it that day (MIG instances count with their GPU). Each silent GPU is
``no_data`` for the node's span that day: from the first minute any of its GPUs counts to the last, so a window's
states still sum to its GPU-time, silent GPUs included, and the fleet cost holds what the node's bill holds. A node
with no GPU-minutes at all on a day has no known span and adds no time (its GPUs are not listed as reporting).

``reporting_gpus`` is the daily pass over GPU-minutes (stored with the rollup's daily summaries,
``analysis.daily.NODE_GPUS``); the rest works on its small frame and on the priced ``nodes`` rows. The same silent
days go into the minute groups (``with_silent``: the report's GPU-hours) and into the dashboard's timeline buckets
(``with_silent_buckets``: each day's span cut at the bucket edges), so the chart of GPU-hours by state over time adds
up to the report's state totals.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from analysis import timeline
from analysis.usage import MINUTES_PER_HOUR, in_window
from analysis.window import Window

REPORTING_SCHEMA: dict[str, pl.DataType] = {
    "cluster": pl.String(),
    "node": pl.String(),
    "date": pl.Date(),
    "gpu_model": pl.String(),
    "reporting": pl.UInt32(),
    "first_minute": pl.Datetime("us", "UTC"),
    "last_minute": pl.Datetime("us", "UTC"),
}
PARTLY_REPORTING_SCHEMA: dict[str, pl.DataType] = {
    "cluster": pl.String(),
    "node": pl.String(),
    "instance_type": pl.String(),
    "gpu_model": pl.String(),
    "gpus": pl.Int32(),
    "gpu_count_basis": pl.String(),
    "reporting": pl.Int64(),
    "silent_gpus": pl.Int64(),
    "silent_gpu_hours": pl.Float64(),
    "cost_usd": pl.Float64(),
    "first_silent": pl.Datetime("us", "UTC"),
    "last_silent": pl.Datetime("us", "UTC"),
    "text": pl.String(),
}


def reporting_gpus(minutes: pl.LazyFrame, window: Window, mig_parents: list[str]) -> pl.LazyFrame:
    """Per cluster, node and date: the physical GPUs with GPU-minutes (``reporting``), their GPU model, and the
    node's first and last minute. ``mig_parents`` is unused (a MIG GPU is one physical GPU either way); it is taken
    so the pass has the signature of the other daily passes."""
    del mig_parents
    return (
        in_window(minutes, window)
        .group_by("cluster", "node", pl.col("ts").dt.date().alias("date"))
        .agg(
            pl.col("gpu_model").drop_nulls().min().alias("gpu_model"),
            pl.col("gpu_uuid").n_unique().cast(pl.UInt32).alias("reporting"),
            pl.col("ts").min().alias("first_minute"),
            pl.col("ts").max().alias("last_minute"),
        )
    )


def silent_days(reporting: pl.DataFrame, node_prices: pl.DataFrame) -> pl.DataFrame:
    """Per cluster, node and date with silent GPUs: ``reporting`` joined to the node's GPU count (``node_gpus``,
    ``gpu_count_basis`` from ``analysis.pricing.price_nodes``), with ``silent_gpus`` (> 0), ``span_minutes`` and
    ``silent_gpu_hours`` (= silent GPUs x the node's span)."""
    counts = node_prices.select(
        "cluster", "node", "date", "instance_type", "node_gpus", "gpu_count_basis", "usd_per_gpu_hour"
    ).unique(["cluster", "node", "date"], keep="first")
    span = (pl.col("last_minute") - pl.col("first_minute")).dt.total_minutes() + 1
    return (
        reporting.cast(REPORTING_SCHEMA)  # type: ignore[arg-type]
        .join(counts, on=["cluster", "node", "date"], how="inner")
        .with_columns((pl.col("node_gpus").cast(pl.Int64) - pl.col("reporting").cast(pl.Int64)).alias("silent_gpus"))
        .filter(pl.col("silent_gpus") > 0)
        .with_columns(span.alias("span_minutes"))
        .with_columns((pl.col("silent_gpus") * pl.col("span_minutes") / MINUTES_PER_HOUR).alias("silent_gpu_hours"))
    )


def no_data_groups(silent: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """``silent`` (from ``silent_days``) as rows of ``groups`` (``analysis.usage.minute_groups``): state
    ``no_data``, held by nobody, no utilization, on the silent GPUs' node and date; ready to stack onto ``groups``."""
    rows = silent.select(
        "cluster",
        "node",
        "date",
        "gpu_model",
        pl.lit(None, pl.String).alias("namespace"),
        pl.lit(None, pl.String).alias("workload"),
        pl.lit("no_data").alias("state"),
        (pl.col("silent_gpus") * pl.col("span_minutes")).alias("minutes"),
        pl.col("first_minute").alias("first_seen"),
        pl.col("last_minute").alias("last_seen"),
        pl.col("silent_gpu_hours").alias("gpu_hours"),
        pl.lit(0.0).alias("observed_hours"),
    )
    zero = [c for c in ("busy_weighted", "util_weighted", "util_share", "busy_share") if c in groups.columns]
    rows = rows.with_columns(pl.lit(0.0).alias(c) for c in zero)
    missing = [c for c in groups.columns if c not in rows.columns]
    rows = rows.with_columns(pl.lit(None).alias(c) for c in missing)
    return rows.select(groups.columns).cast(dict(groups.schema))  # type: ignore[arg-type]


def with_silent(groups: pl.DataFrame, reporting: pl.DataFrame, node_prices: pl.DataFrame) -> pl.DataFrame:
    """``groups`` plus the silent GPUs' ``no_data`` time (``no_data_groups``), in the same columns."""
    silent = silent_days(reporting, node_prices)
    if silent.height == 0 or groups.height == 0:
        return groups
    extra = no_data_groups(silent, groups).sort(["cluster", "node", "date"])
    return pl.concat([groups, extra], how="vertical")


def no_data_buckets(silent: pl.DataFrame, buckets: pl.DataFrame, every: str) -> pl.DataFrame:
    """``silent`` (from ``silent_days``) as rows of ``buckets`` (``analysis.timeline.gpu_buckets`` of ``every``): per
    node and bucket, state ``no_data`` for the silent GPUs x the minutes of the node's span that fall in the bucket,
    with no GPU (``gpu_uuid`` null: ``analysis.timeline.reported`` leaves them out of per-GPU views), no namespace
    and no utilization. Each day's rows sum to its ``silent_gpu_hours``."""
    step = dt.timedelta(hours=timeline.BUCKET_HOURS[every])
    start, end = pl.col("first_minute"), pl.col("last_minute") + dt.timedelta(minutes=1)
    bucket = pl.col("bucket")
    inside = (pl.min_horizontal(end, bucket + step) - pl.max_horizontal(start, bucket)).dt.total_minutes()
    rows = (
        silent.select("cluster", "node", "gpu_model", "silent_gpus", "first_minute", "last_minute")
        .with_columns(
            pl.datetime_ranges(start.dt.truncate(every), pl.col("last_minute").dt.truncate(every), every).alias(
                "bucket"
            )
        )
        .explode("bucket")
        .select(
            "bucket",
            "cluster",
            "node",
            "gpu_model",
            pl.lit(None, pl.String).alias("namespace"),
            pl.lit("no_data").alias("state"),
            (pl.col("silent_gpus") * inside / MINUTES_PER_HOUR).alias("gpu_hours"),
            pl.lit(0.0).alias("busy_weighted"),
            pl.lit(0.0).alias("busy_share"),
        )
    )
    missing = [c for c in buckets.columns if c not in rows.columns]
    rows = rows.with_columns(pl.lit(None).alias(c) for c in missing)
    return rows.select(buckets.columns).cast(dict(buckets.schema))  # type: ignore[arg-type]


def with_silent_buckets(buckets: pl.DataFrame, silent: pl.DataFrame | None, every: str) -> pl.DataFrame:
    """``buckets`` plus the silent GPUs' ``no_data`` time (``no_data_buckets``), in the same columns."""
    if silent is None or silent.height == 0 or buckets.height == 0:
        return buckets
    extra = no_data_buckets(silent, buckets, every).sort(["cluster", "node", "bucket"])
    return pl.concat([buckets, extra], how="vertical")


def partly_reporting(reporting: pl.DataFrame, node_prices: pl.DataFrame) -> pl.DataFrame:
    """One row per node that had silent GPUs in the window, most silent GPU-hours first: its GPU count and basis,
    ``reporting`` (the fewest GPUs reporting on a day it had silent ones), silent GPUs, silent GPU-hours, their
    cost (at the node's GPU-hour price), the first and last silent minute, and ``text``
    (``node X: 8 GPUs, 2 reporting``)."""
    silent = silent_days(reporting, node_prices)
    if silent.height == 0:
        return pl.DataFrame(schema=PARTLY_REPORTING_SCHEMA)
    per_node = (
        silent.sort("date")
        .group_by("cluster", "node")
        .agg(
            pl.col("instance_type").last(),
            pl.col("gpu_model").last(),
            pl.col("node_gpus").max().alias("gpus"),
            pl.col("gpu_count_basis").last(),
            pl.col("reporting").min().cast(pl.Int64),
            pl.col("silent_gpus").max(),
            pl.col("silent_gpu_hours").sum(),
            (pl.col("silent_gpu_hours") * pl.col("usd_per_gpu_hour")).sum().alias("cost_usd"),
            pl.col("first_minute").min().alias("first_silent"),
            pl.col("last_minute").max().alias("last_silent"),
        )
        .with_columns(
            pl.format("node {}: {} GPUs, {} reporting", pl.col("node"), pl.col("gpus"), pl.col("reporting")).alias(
                "text"
            ),
            pl.col("silent_gpu_hours").round(4),
            pl.col("cost_usd").round(2),
        )
    )
    return (
        per_node.select(list(PARTLY_REPORTING_SCHEMA))
        .cast(PARTLY_REPORTING_SCHEMA)  # type: ignore[arg-type]
        .sort(["silent_gpu_hours", "cluster", "node"], descending=[True, False, False])
    )
