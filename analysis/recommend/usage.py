"""The passes over ``gpu_minutes`` that recommendations need beyond the report's minute groups (pure: frames in,
frames out).

The window's minutes are read once into ``WindowMinutes`` (``fold`` over a warehouse's row groups, ``read`` over a
lazy frame), with text columns as categoricals; every pass below works on it, so a week of 1,024 GPUs is read and
hashed once, not once per pass (docs/benchmarks.md, "Recommendations").

- ``device_usage``: per pod and device (GPU), how long it was held, how much of it was active, its utilization
  percentiles and peak memory. Right-sizing GPU counts, time-slicing and cheaper GPU models are judged on it.
- ``held_demand``: per node and ``bucket_minutes`` bucket, the mean number of GPUs held (allocated: active,
  idle_held or idle_allocated) and whether the node was there; autoscaling bounds are percentiles of it.
- ``idle_streaks``: per workload, every run of consecutive minutes in which none of its GPUs was active, at least
  ``min_minutes`` long; idle reclaim is judged on them.
- ``pod_hours``: per pod, hour and GPU it held, and per node the hours it was there; the plan's node-hour packing
  (``analysis.recommend.node_hours``) packs them.

Whole GPUs only, but for ``pod_hours``: minutes of MIG instances are left out (a workload already on a MIG slice
is right-sized). Only observed minutes count (``no_data`` is never idle).

A GPU-minute several pods held (``analysis.shares``) counts once per holder, as that holder's share: its GPU-time
(``minutes``, ``gpu_minutes``: active minutes by SM share, idle-held ones by memory share, the rest equally) and its
utilization (the GPU's times its share), so money and time add up to the GPU's; history counts each GPU-minute
once per workload (``observed_minutes``), so replicas sharing a GPU do not lengthen it. ``split_by`` names the
methods of a row's shared minutes ("" when it shared none).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis import shares
from analysis.units import GIB
from analysis.usage import in_window
from analysis.window import Window

DEVICE_KEYS = ["cluster", "node", "gpu_model", "gpu_uuid", "namespace", "workload", "pod", "container"]
HELD = ("active", "idle_held", "idle_allocated")


def busy_fraction(weight: pl.Expr | float = 1.0) -> pl.Expr:
    """Compute used, as a fraction of the GPU: DCGM SM activity (0-1) when present, else NVML utilization / 100;
    ``weight`` scales a shared minute's readings to its holder's share."""
    return pl.coalesce(
        pl.col("sm_active_mean").cast(pl.Float64).fill_nan(None) * weight,
        pl.col("util_mean_pct").cast(pl.Float64).fill_nan(None) / 100.0 * weight,
    ).clip(0.0, 1.0)


def duty_fraction(weight: pl.Expr | float = 1.0) -> pl.Expr:
    """The duty cycle: the share of time a kernel ran (NVML utilization / 100), else SM activity. Time-slicing shares
    time, so this is what two pods on one GPU add up; ``weight`` as in ``busy_fraction``."""
    return pl.coalesce(
        pl.col("util_mean_pct").cast(pl.Float64).fill_nan(None) / 100.0 * weight,
        pl.col("sm_active_mean").cast(pl.Float64).fill_nan(None) * weight,
    ).clip(0.0, 1.0)


READ_COLUMNS = (
    "ts",
    "cluster",
    "node",
    "gpu_model",
    "gpu_uuid",
    "mig_instance_id",
    "mig_profile",
    "namespace",
    "pod",
    "container",
    "workload",
    "owner_kind",
    "cpu_request",
    "memory_request_bytes",
    "state",
    "sm_active_mean",
    "util_mean_pct",
    "fb_used_max_bytes",
    "fb_total_bytes",
    "holders",
    "split_method",
    "holder_shares",
)
"""The ``gpu_minutes`` columns ``fold`` reads."""
_TEXTS = ("cluster", "node", "gpu_model", "gpu_uuid", "mig_profile", "namespace", "pod", "container", "workload",
          "owner_kind", "state", "split_method")  # fmt: skip
_OPTIONAL: dict[str, pl.DataType | type[pl.DataType]] = {
    "owner_kind": pl.String,
    "cpu_request": pl.Float64,
    "memory_request_bytes": pl.Int64,
    "holders": pl.Int32,
    "split_method": pl.String,
    "holder_shares": shares.SHARES_DTYPE,
}
"""Columns warehouses from before owners, requests and shares were stored lack: read as nulls."""
_FACTS = ("owner_kind", "cpu_request", "memory_request_bytes")
GPU = ["gpu_uuid", "mig_instance_id"]
POD = ["namespace", "pod"]


@dataclass(frozen=True)
class WindowMinutes:
    """The window's ``gpu_minutes`` as every pass here needs them, read once (``fold``, ``read``): a GPU-minute is
    a row of ``held`` per holder, and what does not change from minute to minute (a GPU's node, a pod's requests)
    is stored once, in ``gpus`` and ``pods``. Text columns are ``Categorical``; the passes return strings."""

    held: pl.DataFrame
    """One row per holder of a held minute (``HELD``) of a whole GPU or MIG instance with a known workload:
    gpu_uuid, mig_instance_id, cluster, namespace, workload, pod, container, ts, state, ``share`` (the holder's
    part of the minute, 1 unshared), ``same_workload`` (how many of the minute's holders belong to its workload, 1
    unshared), ``holders`` (the minute's holders, 1 unshared), sm_active_mean, util_mean_pct, fb_used_max_bytes and
    split_method."""
    gpus: pl.DataFrame
    """(gpu_uuid, mig_instance_id) -> cluster, node, gpu_model, mig_profile, fb_total_bytes (the most seen)."""
    pods: pl.DataFrame
    """(namespace, pod) -> workload, owner_kind (the first any minute stored), cpu_request and
    memory_request_bytes (the most any minute stored; null when none did). A shared minute stores these for its
    first holder only (``warehouse.rollup``)."""
    nodes: pl.DataFrame
    """(cluster, node, ts) for every minute in the window (observed or not) -> ``held`` (whole GPUs held) and
    ``observed`` (whole GPUs in any state but no_data)."""


def fold(batches: Iterable[pl.DataFrame]) -> WindowMinutes:
    """``WindowMinutes`` from the window's minutes in batches (``READ_COLUMNS``, text as ``Categorical``; a
    warehouse's row groups, ``Lake.batches``): each batch is reduced on its own, so memory holds one raw batch and
    the reduced rows, never the window's raw minutes."""
    parts = [_reduce(b) for b in batches]
    if not parts:
        parts = [_reduce(_empty())]
    held = pl.concat([p.held for p in parts], rechunk=False)
    gpus = (
        pl.concat([p.gpus for p in parts])
        .group_by(GPU)
        .agg(pl.col("cluster", "node", "gpu_model", "mig_profile").first(), pl.col("fb_total_bytes").max())
    )
    pods = (
        pl.concat([p.pods for p in parts])
        .group_by(POD)
        .agg(
            pl.col("workload").first(),
            pl.col("owner_kind").drop_nulls().first(),
            pl.col("cpu_request").max(),
            pl.col("memory_request_bytes").max(),
        )
    )
    nodes = pl.concat([p.nodes for p in parts]).group_by("cluster", "node", "ts").agg(pl.col("held", "observed").sum())
    return WindowMinutes(held, gpus, pods, nodes)


def read(minutes: pl.LazyFrame, window: Window) -> WindowMinutes:
    """``fold`` over a lazy frame of minutes (a test's, or ``Lake.scan``'s), in one batch."""
    frame = in_window(minutes, window)
    names = frame.collect_schema().names()
    frame = frame.with_columns(pl.lit(None, t).alias(c) for c, t in _OPTIONAL.items() if c not in names)
    return fold([frame.select(READ_COLUMNS).with_columns(pl.col(_TEXTS).cast(pl.Categorical)).collect()])


def _empty() -> pl.DataFrame:
    types: dict[str, Any] = {c: pl.Categorical for c in _TEXTS}
    types |= {"ts": pl.Datetime("us", "UTC"), "mig_instance_id": pl.Int32, "sm_active_mean": pl.Float32,
              "util_mean_pct": pl.Float32, "fb_used_max_bytes": pl.Int64, "fb_total_bytes": pl.Int64}  # fmt: skip
    types |= {c: t for c, t in _OPTIONAL.items() if c not in _TEXTS}
    return pl.DataFrame(schema={c: types[c] for c in READ_COLUMNS})


_HELD_COLUMNS = ["gpu_uuid", "mig_instance_id", "cluster", "namespace", "workload", "pod", "container", "ts",
                 "state", "share", "same_workload", "holders", "sm_active_mean", "util_mean_pct",
                 "fb_used_max_bytes", "split_method"]  # fmt: skip


def _reduce(batch: pl.DataFrame) -> WindowMinutes:
    whole = pl.col("mig_instance_id").is_null()
    nodes = batch.group_by("cluster", "node", "ts").agg(
        (whole & pl.col("state").is_in(HELD)).sum().cast(pl.UInt16).alias("held"),
        (whole & (pl.col("state") != "no_data")).sum().cast(pl.UInt16).alias("observed"),
    )
    gpus = batch.group_by(GPU).agg(
        pl.col("cluster", "node", "gpu_model", "mig_profile").first(), pl.col("fb_total_bytes").max()
    )
    held = batch.filter(pl.col("state").is_in(HELD) & pl.col("workload").is_not_null())
    alone = held.filter(pl.col("holder_shares").is_null()).with_columns(
        pl.lit(1.0).alias("share"), pl.lit(1, pl.UInt16).alias("same_workload"), pl.lit(1, pl.UInt16).alias("holders")
    )
    rows = [alone.select(*_HELD_COLUMNS, *_FACTS)]
    split = held.filter(pl.col("holder_shares").is_not_null())
    if split.height:
        rows.append(_holders(split))
    every = pl.concat(rows)
    pods = every.group_by(POD).agg(
        pl.col("workload").first(),
        pl.col("owner_kind").drop_nulls().first(),
        pl.col("cpu_request").max(),
        pl.col("memory_request_bytes").max(),
    )
    return WindowMinutes(every.filter(pl.col("workload").is_not_null()).select(_HELD_COLUMNS), gpus, pods, nodes)


def _holders(split: pl.DataFrame) -> pl.DataFrame:
    """Shared minutes, one row per holder (``shares.holder_rows``); the first holder keeps the minute's stored
    owner and requests, the others get none."""
    first = split.select(pl.col("namespace", "pod").cast(pl.String).name.prefix("_first_"))
    exploded, weight = shares.holder_rows(
        pl.concat([split.with_columns(pl.col(shares.SHARE_FIELDS).cast(pl.String)), first], how="horizontal").lazy()
    )
    mine = (pl.col("namespace") == pl.col("_first_namespace")) & (pl.col("pod") == pl.col("_first_pod"))
    return (
        exploded.with_columns(
            weight.alias("share"),
            pl.len()
            .over("gpu_uuid", "mig_instance_id", "ts", "namespace", "workload")
            .cast(pl.UInt16)
            .alias("same_workload"),
            pl.col("holders").fill_null(1).clip(lower_bound=1).cast(pl.UInt16),
            *(pl.when(mine).then(pl.col(c)).alias(c) for c in _FACTS),
        )
        .with_columns(pl.col(shares.SHARE_FIELDS).cast(pl.Categorical))
        .select(*_HELD_COLUMNS, *_FACTS)
        .collect()
    )


def _strings(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String))


def device_usage(minutes: WindowMinutes, batches: int = 1) -> pl.DataFrame:
    """One row per (cluster, node, gpu_model, gpu_uuid, namespace, workload, pod, container) of whole GPUs:
    ``minutes`` held and ``active_minutes`` (GPU-minutes, shares of shared minutes), ``observed_minutes`` (each
    GPU-minute once per workload), ``busy_p95`` / ``busy_p99`` (``busy_fraction``), ``duty_p95``
    (``duty_fraction``), ``peak_gib`` (the GPU's), ``fb_total_gib``, ``first_seen``, ``last_seen``, ``split_by``,
    ``owner_kind`` (the pod's top-level owner's kind; null when no minute named one), ``cpu_request`` and
    ``memory_request_bytes`` (the pod's requests, ``WindowMinutes.pods``).

    Exact percentiles hold every minute of a group in memory, so with ``batches`` > 1 the GPUs are split by a hash
    of their (categorical) UUID into that many groupings run one after another: the same rows, a fraction of the
    memory (docs/benchmarks.md, "Recommendations")."""
    held = minutes.held.lazy().filter(pl.col("mig_instance_id").is_null())
    part = pl.col("gpu_uuid").to_physical().hash() % max(batches, 1)
    usage = pl.concat(
        [_device_usage(held.filter(part == i)).collect() for i in range(max(batches, 1))], rechunk=False
    ).lazy()
    gpus = minutes.gpus.lazy().filter(pl.col("mig_instance_id").is_null()).drop("mig_instance_id", "mig_profile")
    return (
        usage.join(gpus, on="gpu_uuid", how="left")
        .join(minutes.pods.lazy(), on=POD, how="left", nulls_equal=True)
        .with_columns((pl.col("fb_total_bytes") / GIB).alias("fb_total_gib"))
        .pipe(_strings)
        .select(*DEVICE_KEYS, *_DEVICE_VALUES)
        .collect()
    )


_DEVICE_VALUES = ["minutes", "active_minutes", "observed_minutes", "busy_p95", "busy_p99", "duty_p95", "peak_gib",
                  "fb_total_gib", "first_seen", "last_seen", "split_by", *_FACTS]  # fmt: skip


def _device_usage(held: pl.LazyFrame) -> pl.LazyFrame:
    share = pl.col("share")
    return held.group_by("gpu_uuid", "namespace", "pod", "container").agg(
        share.sum().alias("minutes"),
        share.filter(pl.col("state") == "active").sum().alias("active_minutes"),
        (1.0 / pl.col("same_workload")).sum().alias("observed_minutes"),
        busy_fraction(share).quantile(0.95, "higher").alias("busy_p95"),
        busy_fraction(share).quantile(0.99, "higher").alias("busy_p99"),
        duty_fraction(share).quantile(0.95, "higher").alias("duty_p95"),
        (pl.col("fb_used_max_bytes").max() / GIB).alias("peak_gib"),
        pl.col("ts").min().alias("first_seen"),
        pl.col("ts").max().alias("last_seen"),
        split_by(),
    )


def split_by() -> pl.Expr:
    """The split methods of a group's shared minutes, sorted and comma-joined ("" when it shared none)."""
    return pl.col("split_method").drop_nulls().cast(pl.String).unique().sort().str.join(", ").alias("split_by")


def held_demand(minutes: WindowMinutes, bucket_minutes: int = 10) -> pl.DataFrame:
    """One row per (cluster, node, bucket) with a whole GPU observed: ``held_gpus`` = GPU-minutes held in the
    bucket / ``bucket_minutes``, and ``gpus`` = GPU-minutes observed (any state but no_data) / ``bucket_minutes``."""
    return (
        minutes.nodes.lazy()
        .group_by("cluster", "node", pl.col("ts").dt.truncate(f"{bucket_minutes}m").alias("bucket"))
        .agg(
            (pl.col("held").sum() / bucket_minutes).alias("held_gpus"),
            (pl.col("observed").sum() / bucket_minutes).alias("gpus"),
        )
        .filter(pl.col("gpus") > 0)
        .pipe(_strings)
        .collect()
    )


def idle_streaks(minutes: WindowMinutes, min_minutes: int) -> pl.DataFrame:
    """Runs of consecutive minutes in which a workload held GPUs and none of them was active, ``min_minutes`` or
    longer: (cluster, namespace, workload, start, end (exclusive), minutes, gpu_minutes (its GPU-time: the shares of
    shared GPUs, idle-held minutes by memory share), observed_gpu_minutes (each GPU-minute once), split_by). A minute
    the workload held nothing, or a gap in its minutes, ends a run.

    Per workload, unlike ``analysis.conditions.idle_streaks`` (per GPU, for alerts): a minute counts only when none
    of the workload's whole GPUs was active, because reclaiming stops the whole workload. It cannot be derived from
    the per-GPU streaks, which drop the minutes a GPU was active."""
    keys = ["cluster", "namespace", "workload"]
    methods = pl.col("split_method").cast(pl.String)
    per_minute = (
        minutes.held.lazy()
        .filter(pl.col("mig_instance_id").is_null())
        .group_by(*keys, "ts")
        .agg(
            (pl.col("state") == "active").any().alias("active"),
            pl.col("share").sum().alias("gpus"),
            (1.0 / pl.col("same_workload")).sum().alias("observed_gpus"),
            pl.sum_horizontal(
                (methods == m).any().cast(pl.UInt8) * (1 << i) for i, m in enumerate(shares.METHODS)
            ).alias("methods"),  # a bit per method: cheaper than a list per workload-minute
        )
        .sort(*keys, "ts")
    )
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
            pl.col("methods").bitwise_or().alias("methods"),
        )
        .filter(pl.col("minutes") >= min_minutes)
        .with_columns(
            pl.concat_str(
                [pl.when(pl.col("methods") & (1 << i) > 0).then(pl.lit(m)) for i, m in sorted_methods()],
                separator=", ",
                ignore_nulls=True,
            ).alias("split_by")
        )
        .drop("run", "methods")
        .pipe(_strings)
        .collect()
    )


def sorted_methods() -> list[tuple[int, str]]:
    """(bit, method) of ``shares.METHODS`` in the order ``split_by`` lists them (alphabetical)."""
    return sorted(enumerate(shares.METHODS), key=lambda bit_method: bit_method[1])


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


def pod_hours(minutes: WindowMinutes) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What the what-if node packing (``analysis.recommend.node_hours``) packs: (held, present).

    An hour counts for a pod (a node) when it held that GPU (was seen) for at least ``MIN_MINUTES_IN_HOUR`` of its
    minutes: hours are rounded to the nearest, so a replica replaced by the next one 45 s later is not counted twice
    in the hour of the handover, and a node's billed time is its hours to the nearest.

    ``held``: one row per (``POD_HOUR_KEYS``) = per pod, hour and GPU (or MIG instance) it held in that hour:
    ``share`` = 1 for a GPU it held alone (or a MIG instance), 1 / the most holders of a minute for a GPU it shared
    (a time-sliced replica), and the pod's ``cpu_request`` and ``memory_request_bytes`` (``WindowMinutes.pods``).
    ``present``: one row per (cluster, node, bucket) with any minute in the window (observed or not): the node was
    there, and billed, that hour."""
    hour = pl.col("ts").dt.truncate("1h").alias("bucket")
    present = (
        minutes.nodes.lazy()
        .group_by("cluster", "node", hour)
        .agg(pl.len().alias("minutes"))
        .filter(pl.col("minutes") >= MIN_MINUTES_IN_HOUR)
        .drop("minutes")
    )
    held = (
        minutes.held.lazy()
        .filter(pl.col("pod").is_not_null())
        .group_by(*GPU, hour, *POD)
        .agg(
            pl.col("workload").first(),
            (1.0 / pl.col("holders").max().cast(pl.Float64)).alias("share"),
            pl.len().alias("minutes"),
        )
        .filter(pl.col("minutes") >= MIN_MINUTES_IN_HOUR)
        .join(minutes.gpus.lazy().drop("cluster", "fb_total_bytes"), on=GPU, how="left", nulls_equal=True)
        .join(minutes.pods.lazy().drop("workload", "owner_kind"), on=POD, how="left", nulls_equal=True)
        .join(minutes.gpus.lazy().select(*GPU, "cluster"), on=GPU, how="left", nulls_equal=True)
        .select(*POD_HOUR_KEYS, "share", "cpu_request", "memory_request_bytes")
    )
    return held.pipe(_strings).collect(), present.pipe(_strings).collect()
