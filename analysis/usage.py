"""The one pass over GPU-minutes that every fleet number is derived from.

``minute_groups`` reads the ``gpu_minutes`` rollup for a window once and returns a small frame: per cluster, node,
date, GPU model, namespace, workload and state, the GPU-hours, utilization sums, peak memory and last active time.
Costs, idle waste, utilization and cost allocation are then computed on that frame (thousands of rows, not tens of
millions), joined with node prices per (cluster, node, date).

GPU-time of MIG instances: a MIG instance's minute counts as ``slices / 7`` of a GPU-minute (``3g.40gb`` -> 3/7), so
instances add up to the GPU they are cut from; the parent GPU's own row is then not counted again.
"""

from __future__ import annotations

import polars as pl

from analysis import shares
from analysis.states import HELD_STATES
from analysis.window import Window

GROUP_KEYS = ["cluster", "node", "date", "gpu_model", "namespace", "workload", "state", "split_method"]
"""``split_method``: null for GPU-time one holder held, else how its shared minutes were split (``analysis.shares``)."""
MINUTES_PER_HOUR = 60.0


def busy_pct() -> pl.Expr:
    """Utilization as the state rules see it: DCGM SM activity (0-1) when present, else NVML/DCGM GPU_UTIL (%)."""
    return pl.coalesce(pl.col("sm_active_mean") * 100.0, pl.col("util_mean_pct"))


def gpu_share(mig_parents: list[str]) -> pl.Expr:
    """How much of a GPU one row's minute is: 1 for a whole GPU, slices/7 for a MIG instance, 0 for the parent row
    of a GPU whose MIG instances are counted instead."""
    slices = pl.col("mig_profile").str.extract(r"^(\d+)g", 1).cast(pl.Float64)
    instance = pl.col("mig_instance_id").is_not_null()
    parent = pl.col("gpu_uuid").is_in(mig_parents) if mig_parents else pl.lit(False)
    return pl.when(instance).then(slices.fill_null(7.0) / 7.0).when(parent).then(0.0).otherwise(1.0)


def in_window(minutes: pl.LazyFrame, window: Window) -> pl.LazyFrame:
    return minutes.filter(pl.col("ts").is_between(window.start, window.end, closed="left"))


def mig_parent_gpus(minutes: pl.LazyFrame, window: Window) -> list[str]:
    """GPUs that appear as MIG instances in the window (usually none: a cheap, pushed-down query)."""
    parents = (
        in_window(minutes, window)
        .filter(pl.col("mig_instance_id").is_not_null())
        .select(pl.col("gpu_uuid").unique())
        .collect(engine="streaming")
    )
    return parents["gpu_uuid"].to_list()


def minute_groups(minutes: pl.LazyFrame, window: Window, mig_parents: list[str]) -> pl.LazyFrame:
    """The per-group sums every fleet number is derived from. Only plain sums, counts and extremes run over the
    minutes (filters inside aggregations cost ~5x here); GPU shares are multiplied in only when the window holds MIG
    instances, and holder shares only when it holds shared minutes (each such minute then counts once per holder,
    weighted by the holder's share). ``request_hours`` is the GPU-time as requests count it, each holder of a shared
    minute 1/holders of it (how OpenCost charges time-sliced replicas; ``analysis.reconcile``)."""
    observed = pl.col("state") != "no_data"
    frame = in_window(minutes, window)
    split = shares.any_split(frame)
    weight: pl.Expr | None = None
    if split:
        frame = frame.with_columns(pl.col("holder_shares").list.len().alias("_holders"))
        frame, weight = shares.holder_rows(frame)
    elif "split_method" not in frame.collect_schema().names():
        frame = frame.with_columns(pl.lit(None, pl.String).alias("split_method"))
    busy = busy_pct()
    util = pl.col("util_mean_pct")
    if mig_parents or weight is not None:
        share = gpu_share(mig_parents) if mig_parents else pl.lit(1.0)
        if weight is not None:
            share = share * weight
        sums = [
            share.sum().alias("share_minutes"),
            (busy * share).sum().alias("busy_weighted"),
            (util * share).sum().alias("util_weighted"),
            (util.is_not_null() * share).sum().alias("util_share"),
            (busy.is_not_null() * share).sum().alias("busy_share"),
        ]
        if weight is not None:
            whole = gpu_share(mig_parents) if mig_parents else pl.lit(1.0)
            sums.append((whole / pl.col("_holders").fill_null(1)).sum().alias("request_minutes"))
    else:
        sums = [
            pl.len().cast(pl.Float64).alias("share_minutes"),
            busy.sum().alias("busy_weighted"),
            util.sum().alias("util_weighted"),
            util.count().cast(pl.Float64).alias("util_share"),
            busy.count().cast(pl.Float64).alias("busy_share"),
        ]
    return (
        frame.with_columns(pl.col("ts").dt.date().alias("date"))
        .group_by(GROUP_KEYS)
        .agg(
            pl.len().alias("minutes"),
            *sums,
            pl.col("fb_used_max_bytes").max().alias("fb_used_max_bytes"),
            pl.col("ts").max().alias("last_seen"),
            pl.col("ts").min().alias("first_seen"),
        )
        .with_columns(
            (pl.col("share_minutes") / MINUTES_PER_HOUR).alias("gpu_hours"),
            (pl.col("request_minutes" if split else "share_minutes") / MINUTES_PER_HOUR).alias("request_hours"),
            (pl.col("busy_share") / MINUTES_PER_HOUR).alias("busy_share"),
            (pl.col("busy_weighted") / MINUTES_PER_HOUR).alias("busy_weighted"),
            (pl.col("util_share") / MINUTES_PER_HOUR).alias("util_share"),
            (pl.col("util_weighted") / MINUTES_PER_HOUR).alias("util_weighted"),
        )
        .with_columns(
            pl.when(observed).then(pl.col("gpu_hours")).otherwise(0.0).alias("observed_hours"),
            pl.when(pl.col("state") == "active").then(pl.col("last_seen")).alias("last_active"),
        )
        .drop("share_minutes", *(["request_minutes"] if split else []))
    )


OWNER_SCHEMA = pl.Schema({"cluster": pl.String, "namespace": pl.String, "workload": pl.String, "owner_kind": pl.String})


def workload_owners(minutes: pl.LazyFrame, window: Window, mig_parents: list[str]) -> pl.LazyFrame:
    """The owner kinds each workload's held minutes name: one row per (cluster, namespace, workload, owner_kind),
    a few rows per workload, so the report can give each workload its kind (``owner_kinds``) without carrying the
    kind through the minute groups. Shared minutes name no owner (their holder list has none); empty on warehouses
    from before owners were stored. ``mig_parents`` is unused: owners do not depend on GPU shares."""
    frame = in_window(minutes, window)
    if "owner_kind" not in frame.collect_schema().names():
        return pl.LazyFrame(schema=OWNER_SCHEMA)
    return (
        frame.filter(pl.col("owner_kind").is_not_null() & pl.col("workload").is_not_null())
        .select(*OWNER_SCHEMA)
        .unique()
        .cast(OWNER_SCHEMA)
    )


def owner_kinds(owners: pl.DataFrame) -> pl.DataFrame:
    """``workload_owners`` rows (of any days and clusters, stacked) -> one row per (namespace, workload) with its
    ``owner_kind``: the first by name when rows disagree, as the recommendations' ``owner_kinds`` picks it."""
    return (
        owners.filter(pl.col("owner_kind").is_not_null())
        .group_by("namespace", "workload")
        .agg(pl.col("owner_kind").min())
        .sort("namespace", "workload", nulls_last=True)
    )


def busy_histogram(minutes: pl.LazyFrame, window: Window, mig_parents: list[str]) -> pl.LazyFrame:
    """GPU-hours per whole percent of utilization, by namespace, GPU model, hour of the week (UTC) and whether a
    pod or process held the GPU: utilization percentiles and the hour-of-week heatmap both come from this one pass."""
    frame = in_window(minutes, window)
    if shares.any_split(frame):
        frame, weight = shares.holder_rows(frame)
        gpu_minutes = ((gpu_share(mig_parents) if mig_parents else pl.lit(1.0)) * weight).sum()
    else:
        gpu_minutes = gpu_share(mig_parents).sum() if mig_parents else pl.len().cast(pl.Float64)
    return (
        frame.filter(pl.col("state") != "no_data")
        .group_by(
            "namespace",
            "gpu_model",
            busy_pct().fill_null(0.0).round(0).clip(0, 100).cast(pl.Int16).alias("busy"),
            pl.col("ts").dt.weekday().alias("weekday"),  # 1 = Monday
            pl.col("ts").dt.hour().alias("hour"),
            pl.col("state").is_in(HELD_STATES).alias("held"),
        )
        .agg((gpu_minutes / MINUTES_PER_HOUR).alias("gpu_hours"))
    )


def hour_of_week(histogram: pl.DataFrame) -> pl.DataFrame:
    """Mean utilization and allocation rate per (weekday, hour) in UTC: the heatmap's cells (from the histogram,
    so utilization is read to the whole percent)."""
    hours = pl.col("gpu_hours")
    return (
        # Sorted first and grouped in order, so the float sums add up in the same order on every run (a hash
        # group_by's order varies with threads and load, and moved the rounded means by 0.0001 now and then).
        histogram.sort("weekday", "hour", "namespace", "gpu_model", "busy", "held", nulls_last=True)
        .group_by("weekday", "hour", maintain_order=True)
        .agg(
            ((pl.col("busy").cast(pl.Float64) * hours).sum() / hours.sum()).alias("mean_pct"),
            (hours.filter(pl.col("held")).sum() / hours.sum()).alias("allocation_rate"),
            hours.sum().alias("gpu_hours"),
        )
        .sort("weekday", "hour")
    )
