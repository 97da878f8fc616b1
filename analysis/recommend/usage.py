"""The passes over ``gpu_minutes`` that recommendations need beyond the report's minute groups (pure: LazyFrames).

- ``device_usage``: per pod and device (GPU), how long it was held, how much of it was active, its utilization
  percentiles and peak memory. Right-sizing GPU counts, time-slicing and cheaper GPU models are judged on it.
- ``held_demand``: per node and ``bucket_minutes`` bucket, the mean number of GPUs held (allocated: active,
  idle_held or idle_allocated) and whether the node was there; autoscaling bounds are percentiles of it.
- ``idle_streaks``: per workload, every run of consecutive minutes in which none of its GPUs was active, at least
  ``min_minutes`` long; idle reclaim is judged on them.

Whole GPUs only: minutes of MIG instances are left out (a workload already on a MIG slice is right-sized). Only
observed minutes count (``no_data`` is never idle).

A GPU-minute several pods held (``analysis.shares``) counts once per holder, as that holder's share: its GPU-time
(``minutes``, ``gpu_minutes``: active minutes by SM share, idle-held ones by memory share, the rest equally) and its
utilization (the GPU's times its share), so money and time add up to the GPU's; history counts each GPU-minute
once per workload (``observed_minutes``), so replicas sharing a GPU do not lengthen it. ``split_by`` names the
methods of a row's shared minutes ("" when it shared none).
"""

from __future__ import annotations

import polars as pl

from analysis import shares
from analysis.units import GIB
from analysis.usage import in_window
from analysis.window import Window

DEVICE_KEYS = ["cluster", "node", "gpu_model", "gpu_uuid", "namespace", "workload", "pod", "container"]
HELD = ("active", "idle_held", "idle_allocated")


def busy_fraction() -> pl.Expr:
    """Compute used, as a fraction of the GPU: DCGM SM activity (0-1) when present, else NVML utilization / 100."""
    return pl.coalesce(
        pl.col("sm_active_mean").cast(pl.Float64).fill_nan(None),
        pl.col("util_mean_pct").cast(pl.Float64).fill_nan(None) / 100.0,
    ).clip(0.0, 1.0)


def duty_fraction() -> pl.Expr:
    """The duty cycle: the share of time a kernel ran (NVML utilization / 100), else SM activity. Time-slicing shares
    time, so this is what two pods on one GPU add up."""
    return pl.coalesce(
        pl.col("util_mean_pct").cast(pl.Float64).fill_nan(None) / 100.0,
        pl.col("sm_active_mean").cast(pl.Float64).fill_nan(None),
    ).clip(0.0, 1.0)


HOLDER_COLUMNS = [
    *DEVICE_KEYS,
    "ts",
    "state",
    "sm_active_mean",
    "util_mean_pct",
    "fb_used_max_bytes",
    "fb_total_bytes",
    "split_method",
    "share",
    "same_workload",
    "owner_kind",
    "cpu_request",
    "memory_request_bytes",
]


def _held(minutes: pl.LazyFrame, window: Window) -> pl.LazyFrame:
    """Held whole-GPU minutes, one row per holder (``HOLDER_COLUMNS``): ``share`` is the holder's part of the minute
    (1 unshared) and ``same_workload`` how many of the minute's holders belong to its workload (1 unshared)."""
    frame = in_window(minutes, window).filter(pl.col("state").is_in(HELD) & pl.col("mig_instance_id").is_null())
    stored = frame.collect_schema().names()
    for column, dtype in (("owner_kind", pl.String), ("cpu_request", pl.Float64), ("memory_request_bytes", pl.Int64)):
        if column not in stored:  # warehouses from before owners and requests were stored
            frame = frame.with_columns(pl.lit(None, dtype).alias(column))
    if not shares.any_split(frame):
        names = frame.collect_schema().names()
        return frame.filter(pl.col("workload").is_not_null()).with_columns(
            *([] if "split_method" in names else [pl.lit(None, pl.String).alias("split_method")]),
            pl.lit(1.0).alias("share"),
            pl.lit(1, pl.UInt32).alias("same_workload"),
        )
    whole = frame.filter(pl.col("holder_shares").is_null()).with_columns(
        pl.lit(1.0).alias("share"), pl.lit(1, pl.UInt32).alias("same_workload")
    )
    exploded, weight = shares.holder_rows(frame.filter(pl.col("holder_shares").is_not_null()))
    shared = exploded.with_columns(
        weight.alias("share"),
        pl.len().over("gpu_uuid", "ts", "namespace", "workload").cast(pl.UInt32).alias("same_workload"),
        pl.lit(None, pl.String).alias("owner_kind"),
        pl.lit(None, pl.Float64).alias("cpu_request"),  # the minute keeps only its first holder's requests
        pl.lit(None, pl.Int64).alias("memory_request_bytes"),
        *(pl.col(c) * weight for c in ("sm_active_mean", "util_mean_pct")),
    )
    return pl.concat([whole.select(HOLDER_COLUMNS), shared.select(HOLDER_COLUMNS)], how="vertical_relaxed").filter(
        pl.col("workload").is_not_null()
    )


def device_usage(minutes: pl.LazyFrame, window: Window, batches: int = 1) -> pl.LazyFrame:
    """One row per (cluster, node, gpu_model, gpu_uuid, namespace, workload, pod, container): ``minutes`` held and
    ``active_minutes`` (GPU-minutes, shares of shared minutes), ``observed_minutes`` (each GPU-minute once per
    workload), ``busy_p95`` / ``busy_p99`` (``busy_fraction``), ``duty_p95`` (``duty_fraction``), ``peak_gib`` (the
    GPU's), ``fb_total_gib``, ``first_seen``, ``last_seen``, ``split_by`` and ``owner_kind`` (the top-level owner's
    kind from the minutes it held alone; null when none names one: a shared minute's holder list has no owner),
    ``cpu_request`` and ``memory_request_bytes`` (the pod's requests, the most any minute it held alone stored; null
    when none did).

    Exact percentiles hold every minute of a group in memory (5 GiB for 1,024 GPUs x 7 days in one go), so with
    ``batches`` > 1 the GPUs are split by a hash of their (categorical) UUID into that many queries run one after
    another: the same rows, a fraction of the memory. The held minutes are read once, keyed by GPU and pod alone
    with text columns as categoricals (a GPU's cluster, node and model and a pod's workload are joined back after),
    and the batches are cut from that frame: reading the minutes again per batch cost ~5 s a batch on 1,024 GPUs x 7
    days, and string keys 3.5 GiB more (docs/benchmarks.md, "After issue 14")."""
    held = _held(minutes, window)
    if batches <= 1:
        return _device_usage(held)
    values = ["ts", "state", "share", "same_workload", "sm_active_mean", "util_mean_pct", "fb_used_max_bytes",
              "fb_total_bytes", "split_method", "owner_kind", "cpu_request", "memory_request_bytes"]  # fmt: skip
    gpu_keys, pod_keys = ["cluster", "node", "gpu_model"], ["workload"]
    texts = [*_BATCH_KEYS, "state", "split_method", "owner_kind"]
    frame = held.select(pl.col(texts).cast(pl.Categorical), pl.col(values).exclude(texts)).collect(engine="streaming")
    gpus = held.group_by("gpu_uuid").agg(pl.col(gpu_keys).first()).collect(engine="streaming")
    pods = held.group_by("namespace", "pod").agg(pl.col(pod_keys).first()).collect(engine="streaming")
    part = pl.col("gpu_uuid").to_physical().hash() % batches
    usage = pl.concat(
        [_device_usage(frame.lazy().filter(part == i), _BATCH_KEYS) for i in range(batches)], parallel=False
    ).with_columns(pl.col(*_BATCH_KEYS, "owner_kind").cast(pl.String))
    return (
        usage.join(gpus.lazy(), on="gpu_uuid", how="left")
        .join(pods.lazy(), on=["namespace", "pod"], how="left", nulls_equal=True)
        .select(*DEVICE_KEYS, pl.exclude(DEVICE_KEYS))
    )


_BATCH_KEYS = ["gpu_uuid", "namespace", "pod", "container"]
"""The keys a batch groups by: the rest of ``DEVICE_KEYS`` follow from them."""


def _device_usage(held: pl.LazyFrame, keys: list[str] = DEVICE_KEYS) -> pl.LazyFrame:
    return held.group_by(keys).agg(
        pl.col("share").sum().alias("minutes"),
        pl.col("share").filter(pl.col("state") == "active").sum().alias("active_minutes"),
        (1.0 / pl.col("same_workload")).sum().alias("observed_minutes"),
        busy_fraction().quantile(0.95, "higher").alias("busy_p95"),
        busy_fraction().quantile(0.99, "higher").alias("busy_p99"),
        duty_fraction().quantile(0.95, "higher").alias("duty_p95"),
        (pl.col("fb_used_max_bytes").max() / GIB).alias("peak_gib"),
        (pl.col("fb_total_bytes").max() / GIB).alias("fb_total_gib"),
        pl.col("ts").min().alias("first_seen"),
        pl.col("ts").max().alias("last_seen"),
        _split_by(),
        pl.col("owner_kind").drop_nulls().first().alias("owner_kind"),
        pl.col("cpu_request").max(),
        pl.col("memory_request_bytes").max(),
    )


def _split_by() -> pl.Expr:
    return pl.col("split_method").drop_nulls().unique().sort().str.join(", ").alias("split_by")


def held_demand(minutes: pl.LazyFrame, window: Window, bucket_minutes: int = 10) -> pl.LazyFrame:
    """One row per (cluster, node, bucket): ``held_gpus`` = GPU-minutes held in the bucket / ``bucket_minutes``, and
    ``gpus`` = GPU-minutes observed (any state but no_data) / ``bucket_minutes``."""
    observed = in_window(minutes, window).filter((pl.col("state") != "no_data") & pl.col("mig_instance_id").is_null())
    return (
        observed.with_columns(pl.col("ts").dt.truncate(f"{bucket_minutes}m").alias("bucket"))
        .group_by("cluster", "node", "bucket")
        .agg(
            (pl.col("state").is_in(HELD).sum() / bucket_minutes).alias("held_gpus"),
            (pl.len() / bucket_minutes).alias("gpus"),
        )
    )


def idle_streaks(minutes: pl.LazyFrame, window: Window, min_minutes: int) -> pl.LazyFrame:
    """Runs of consecutive minutes in which a workload held GPUs and none of them was active, ``min_minutes`` or
    longer: (cluster, namespace, workload, start, end (exclusive), minutes, gpu_minutes (its GPU-time: the shares of
    shared GPUs, idle-held minutes by memory share), observed_gpu_minutes (each GPU-minute once), split_by). A minute
    the workload held nothing, or a gap in its minutes, ends a run.

    Per workload, unlike ``analysis.conditions.idle_streaks`` (per GPU, for alerts): a minute counts only when none
    of the workload's whole GPUs was active, because reclaiming stops the whole workload. It cannot be derived from
    the per-GPU streaks, which drop the minutes a GPU was active."""
    per_minute = (
        _held(minutes, window)
        .group_by("cluster", "namespace", "workload", "ts")
        .agg(
            (pl.col("state") == "active").any().alias("active"),
            pl.col("share").sum().alias("gpus"),
            (1.0 / pl.col("same_workload")).sum().alias("observed_gpus"),
            pl.col("split_method").drop_nulls().unique().alias("methods"),
        )
        .sort("cluster", "namespace", "workload", "ts")
    )
    keys = ["cluster", "namespace", "workload"]
    gap = (pl.col("ts").diff().over(keys) != pl.duration(minutes=1)).fill_null(True)
    return (
        per_minute.with_columns((pl.col("active") | gap).cum_sum().over(keys).alias("run"))
        .filter(~pl.col("active"))
        .group_by(*keys, "run")
        .agg(
            pl.col("ts").min().alias("start"),
            (pl.col("ts").max() + pl.duration(minutes=1)).alias("end"),
            pl.len().cast(pl.Int64).alias("minutes"),
            pl.col("gpus").sum().alias("gpu_minutes"),
            pl.col("observed_gpus").sum().alias("observed_gpu_minutes"),
            pl.col("methods").explode().unique().sort().str.join(", ").alias("split_by"),
        )
        .filter(pl.col("minutes") >= min_minutes)
        .drop("run")
    )


MIN_MINUTES_IN_HOUR = 30
POD_HOUR_KEYS = [
    "cluster",
    "node",
    "gpu_model",
    "bucket",
    "namespace",
    "workload",
    "pod",
    "gpu_uuid",
    "mig_instance_id",
    "mig_profile",
]


def pod_hours(minutes: pl.LazyFrame, window: Window) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """What the what-if node packing (``analysis.recommend.node_hours``) packs: (held, present).

    An hour counts for a pod (a node) when it held that GPU (was seen) for at least ``MIN_MINUTES_IN_HOUR`` of its
    minutes: hours are rounded to the nearest, so a replica replaced by the next one 45 s later is not counted twice
    in the hour of the handover, and a node's billed time is its hours to the nearest.

    ``held``: one row per (``POD_HOUR_KEYS``) = per pod, hour and GPU (or MIG instance) it held in that hour:
    ``share`` = 1 for a GPU it held alone (or a MIG instance), 1 / the most holders of a minute for a GPU it shared
    (a time-sliced replica), and the pod's ``cpu_request`` and ``memory_request_bytes`` (null where no source gave
    them, and for the holders of a shared minute other than the first). ``present``: one row per (cluster, node,
    bucket) with any minute in the window (observed or not): the node was there, and billed, that hour."""
    base = in_window(minutes, window).with_columns(pl.col("ts").dt.truncate("1h").alias("bucket"))
    names = base.collect_schema().names()
    missing = [
        pl.lit(None, dtype).alias(c)
        for c, dtype in (("cpu_request", pl.Float64), ("memory_request_bytes", pl.Int64), ("holder_shares", None))
        if c not in names
    ]
    if missing:
        base = base.with_columns(missing)
    present = (
        base.group_by("cluster", "node", "bucket")
        .agg(pl.col("ts").n_unique().alias("minutes"))
        .filter(pl.col("minutes") >= MIN_MINUTES_IN_HOUR)
        .drop("minutes")
    )
    held = base.filter(pl.col("state").is_in(HELD) & pl.col("workload").is_not_null())
    alone = held.filter(pl.col("holder_shares").is_null() | (pl.col("holders") <= 1)).with_columns(
        pl.lit(1.0).alias("share")
    )
    shared = (
        held.filter(pl.col("holder_shares").is_not_null() & (pl.col("holders") > 1))
        .with_columns((1.0 / pl.col("holders").cast(pl.Float64)).alias("share"), pl.col("holder_shares").alias("_h"))
        .explode("_h")
        .with_columns(
            pl.col("_h").struct.field("namespace").alias("namespace"),
            pl.col("_h").struct.field("pod").alias("pod"),
            pl.col("_h").struct.field("workload").alias("workload"),
            pl.when(pl.col("_h").struct.field("pod") == pl.col("pod")).then(pl.col("cpu_request")).alias("cpu_request"),
            pl.when(pl.col("_h").struct.field("pod") == pl.col("pod"))
            .then(pl.col("memory_request_bytes"))
            .alias("memory_request_bytes"),
        )
    )
    columns = [*POD_HOUR_KEYS, "share", "cpu_request", "memory_request_bytes"]
    rows = pl.concat([alone.select(columns), shared.select(columns)], how="vertical_relaxed")
    keys = ["gpu_uuid", "mig_instance_id", "bucket", "namespace", "pod"]
    per = (
        rows.filter(pl.col("pod").is_not_null())
        .group_by(keys)
        .agg(
            pl.col(*(c for c in POD_HOUR_KEYS if c not in keys)).first(),  # the same on each of the group's rows
            pl.col("share").min(),
            pl.col("cpu_request").max(),
            pl.col("memory_request_bytes").max(),
            pl.len().alias("minutes"),
        )
        .filter(pl.col("minutes") >= MIN_MINUTES_IN_HOUR)
        .drop("minutes")
    )
    return per, present
