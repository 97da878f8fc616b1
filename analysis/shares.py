"""Shared GPU-minutes split among their holders by measured use.

When several pods or processes hold one GPU (or MIG instance) in a minute (time-slicing ``::N`` device ids, MPS,
several processes), the minute keeps its one state and its cost is divided:

1. ``active`` minutes by **SM share**: each holder's SM utilization (NVML's per-process samples, or dcgm-exporter's
   per-pod process series) over the sum of all holders' (a holder without a reading counts 0);
2. ``idle_held`` minutes by **memory share**: each holder's processes' memory over the sum of all holders';
3. otherwise (idle_allocated, no measurement, or measurements that sum to 0) **equally**.

The method is stored with the minute (``split_method``: "sm share", "memory share", "equal") and the shares in
``holder_shares``; a minute's shares sum to 1 (the last holder gets 1 minus the others; to float precision), so split
figures add up to the fleet's. Minutes with one holder carry neither and keep today's columns.
"""

from __future__ import annotations

import polars as pl

SM_SHARE = "sm share"
MEMORY_SHARE = "memory share"
EQUAL = "equal"
METHODS = (SM_SHARE, MEMORY_SHARE, EQUAL)
SHARE_FIELDS = ("namespace", "pod", "container", "workload")
MINUTE_KEY = ("gpu_uuid", "mig_id", "minute")


def split(minutes: pl.LazyFrame) -> pl.LazyFrame:
    """``minutes`` (classified, with the rollup's ``holder_list``) with ``split_method`` and ``holder_shares``."""
    names = minutes.collect_schema().names()
    if "holder_list" not in names:
        return minutes.with_columns(
            pl.lit(None, pl.String).alias("split_method"), pl.lit(None, SHARES_DTYPE).alias("holder_shares")
        )
    key = [c for c in MINUTE_KEY if c in names]
    shared = (
        minutes.filter(pl.col("holder_list").is_not_null())
        .select(*key, "state", "holder_list")
        .explode("holder_list")
        .unnest("holder_list")
    )
    return minutes.join(shares_of(shared, key), on=key, how="left").drop("holder_list")


SHARES_DTYPE = pl.List(
    pl.Struct(
        {"namespace": pl.String, "pod": pl.String, "container": pl.String, "workload": pl.String, "share": pl.Float64}
    )
)


def shares_of(holders: pl.LazyFrame, key: list[str]) -> pl.LazyFrame:
    """One row per minute (``key``): ``split_method`` and ``holder_shares``, from one row per holder with
    ``state``, ``sm_pct`` and ``memory_bytes`` (in holder order)."""
    sm = pl.col("sm_pct").fill_null(0.0).clip(lower_bound=0.0)
    memory = pl.col("memory_bytes").fill_null(0.0).clip(lower_bound=0.0)
    method = (
        pl.when((pl.col("state") == "active") & (sm.sum().over(key) > 0))
        .then(pl.lit(SM_SHARE))
        .when((pl.col("state") == "idle_held") & (memory.sum().over(key) > 0))
        .then(pl.lit(MEMORY_SHARE))
        .otherwise(pl.lit(EQUAL))
    )
    raw = (
        pl.when(pl.col("split_method") == SM_SHARE)
        .then(sm / sm.sum().over(key))
        .when(pl.col("split_method") == MEMORY_SHARE)
        .then(memory / memory.sum().over(key))
        .otherwise(1.0 / pl.len().over(key))
    )
    last = pl.int_range(pl.len()).over(key) == pl.len().over(key) - 1
    return (
        holders.with_columns(method.alias("split_method"))
        .with_columns(raw.alias("raw"))
        .with_columns(
            pl.when(last)
            .then(1.0 - (pl.col("raw").sum().over(key) - pl.col("raw")))
            .otherwise(pl.col("raw"))
            .alias("share")
        )
        .group_by(key, maintain_order=True)
        .agg(pl.col("split_method").first(), pl.struct(*SHARE_FIELDS, "share").alias("holder_shares"))
        .with_columns(pl.col("holder_shares").cast(SHARES_DTYPE))
    )


def holder_rows(minutes: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.Expr]:
    """``minutes`` with each shared minute repeated once per holder (its namespace, pod, container and workload
    replaced by the holder's), and the weight of each row: the holder's share, 1 for an unshared minute."""
    exploded = minutes.explode("holder_shares")
    part = pl.col("holder_shares")
    is_split = part.is_not_null()
    frame = exploded.with_columns(
        *(pl.when(is_split).then(part.struct.field(c)).otherwise(pl.col(c)).alias(c) for c in SHARE_FIELDS),
        part.struct.field("share").fill_null(1.0).alias("_weight"),
    ).drop("holder_shares")
    return frame, pl.col("_weight")


def any_split(minutes: pl.LazyFrame) -> bool:
    """Whether any minute of ``minutes`` is shared (a cheap one-column query; false on warehouses from before
    shares were stored)."""
    if "split_method" not in minutes.collect_schema().names():
        return False
    found = minutes.select(pl.col("split_method").is_not_null().any()).collect(engine="streaming")
    return bool(found.item())


def split_summary(priced_groups: pl.DataFrame) -> pl.DataFrame:
    """How much of the window's GPU-time was shared, per method: ``split_method``, ``gpu_minutes`` (GPU-time, each
    shared minute once: its holders' shares add up to it), ``gpu_hours`` and ``cost_usd``; empty when nothing was."""
    schema = {"split_method": pl.String, "gpu_minutes": pl.Float64, "gpu_hours": pl.Float64, "cost_usd": pl.Float64}
    if "split_method" not in priced_groups.columns:
        return pl.DataFrame(schema=schema)
    return (
        priced_groups.filter(pl.col("split_method").is_not_null())
        .group_by("split_method")
        .agg(pl.col("gpu_hours").sum(), pl.col("cost_usd").sum())
        .select(
            "split_method",
            (pl.col("gpu_hours") * 60.0).round(2).alias("gpu_minutes"),
            pl.col("gpu_hours").round(4),
            pl.col("cost_usd").round(2),
        )
        .cast(schema)  # type: ignore[arg-type]
        .sort(pl.col("split_method").replace_strict(dict(zip(METHODS, range(3), strict=True)), default=3))
    )
