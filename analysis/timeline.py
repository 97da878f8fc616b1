"""GPU-time over time: GPU-hours by state per time bucket, the per-GPU utilization heatmap, and the gaps.

``gpu_buckets`` reads the ``gpu_minutes`` of a window once and returns, per time bucket, GPU (or MIG instance),
namespace and state, the GPU-hours and the utilization sums (MIG instances count ``slices / 7`` of a GPU, as in
``analysis.usage``). Everything here is derived from that small frame, so the bucket totals add up to the window's
GPU-hours by state exactly as the report counts them once the silent GPUs' ``no_data`` rows are added
(``analysis.silent_gpus.with_silent_buckets``: GPUs a node has that never reported). Those rows have no GPU
(``gpu_uuid`` null): they count in ``state_timeline`` and nowhere per GPU (``reported``).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from analysis import shares
from analysis.states import STATES
from analysis.usage import MINUTES_PER_HOUR, busy_pct, gpu_share, in_window
from analysis.window import Window

BUCKETS = ("15m", "1h", "3h", "6h", "12h", "1d")
BUCKET_HOURS = {"15m": 0.25, "1h": 1.0, "3h": 3.0, "6h": 6.0, "12h": 12.0, "1d": 24.0}
GPU_KEYS = ["cluster", "node", "gpu_uuid", "gpu_index", "mig_instance_id", "mig_profile", "gpu_model"]


def bucket_for(window: Window, max_buckets: int = 200) -> str:
    """The finest bucket (15 min to 1 day) that cuts the window into at most ``max_buckets`` pieces."""
    for every in BUCKETS:
        if window.hours / BUCKET_HOURS[every] <= max_buckets:
            return every
    return BUCKETS[-1]


def gpu_buckets(minutes: pl.LazyFrame, window: Window, mig_parents: list[str], every: str) -> pl.LazyFrame:
    """Per time bucket (``bucket``, its start), GPU, namespace and state: ``gpu_hours``, ``busy_weighted`` and
    ``busy_share`` (utilization x GPU-hours and the GPU-hours it is known for; mean = weighted / share)."""
    busy = busy_pct()
    frame = in_window(minutes, window)
    weight: pl.Expr | None = None
    if shares.any_split(frame):
        frame, weight = shares.holder_rows(frame)
    if mig_parents or weight is not None:
        share = gpu_share(mig_parents) if mig_parents else pl.lit(1.0)
        share = share * weight if weight is not None else share
        sums = [share.sum(), (busy * share).sum(), (busy.is_not_null() * share).sum()]
    else:
        sums = [pl.len().cast(pl.Float64), busy.sum(), busy.count().cast(pl.Float64)]
    names = ("gpu_hours", "busy_weighted", "busy_share")
    return frame.group_by(pl.col("ts").dt.truncate(every).alias("bucket"), *GPU_KEYS, "namespace", "state").agg(
        *((value / MINUTES_PER_HOUR).alias(name) for value, name in zip(sums, names, strict=True))
    )


def rebucket(buckets: pl.DataFrame, every: str) -> pl.DataFrame:
    """``gpu_buckets`` of a finer bucket (hourly) as ``every`` buckets: the sums of the buckets each one covers."""
    keys = [c for c in buckets.columns if c not in ("gpu_hours", "busy_weighted", "busy_share", "bucket")]
    return buckets.group_by(pl.col("bucket").dt.truncate(every), *keys).agg(
        pl.col("gpu_hours", "busy_weighted", "busy_share").sum()
    )


def state_timeline(buckets: pl.DataFrame) -> pl.DataFrame:
    """GPU-hours per bucket and state, every state present in every bucket (zero when absent): a stacked area."""
    totals = buckets.group_by("bucket", "state").agg(pl.col("gpu_hours").sum())
    grid = (
        buckets.select(pl.col("bucket").unique())
        .join(pl.DataFrame({"state": list(STATES)}), how="cross")
        .join(totals, on=["bucket", "state"], how="left")
        .with_columns(pl.col("gpu_hours").fill_null(0.0))
    )
    order = {s: i for i, s in enumerate(STATES)}
    return grid.with_columns(pl.col("state").replace_strict(order, return_dtype=pl.Int8).alias("order")).sort(
        "bucket", "order"
    )


def reported(buckets: pl.DataFrame) -> pl.DataFrame:
    """The rows of GPUs that reported: without the silent GPUs' ``no_data`` rows, which name no GPU."""
    return buckets.filter(pl.col("gpu_uuid").is_not_null())


def gpu_label() -> pl.Expr:
    """``node #index`` (and `` mig <id> <profile>`` for a MIG instance): one row of the heatmap."""
    mig = pl.when(pl.col("mig_instance_id").is_not_null()).then(
        pl.format(" mig {} {}", pl.col("mig_instance_id").cast(pl.String), pl.col("mig_profile").fill_null(""))
    )
    index = pl.col("gpu_index").cast(pl.String).fill_null("?")
    return pl.concat_str(pl.col("node"), pl.lit(" #"), index, mig.otherwise(pl.lit(""))).alias("gpu")


def gpu_heatmap(buckets: pl.DataFrame, every: str) -> pl.DataFrame:
    """Per GPU and bucket (``bucket`` to ``bucket_end``): mean utilization (null when unobserved), GPU-hours and
    the state that took most of the bucket; sorted by node and GPU."""
    buckets = reported(buckets)
    per_state = buckets.group_by(*GPU_KEYS, "bucket", "state").agg(pl.col("gpu_hours").sum())
    main_state = (
        per_state.sort("gpu_hours", "state", descending=[True, False])
        .group_by(*GPU_KEYS, "bucket", maintain_order=True)
        .agg(pl.col("state").first().alias("main_state"))
    )
    cells = buckets.group_by(*GPU_KEYS, "bucket").agg(
        pl.col("gpu_hours").sum(),
        pl.col("busy_weighted").sum(),
        pl.col("busy_share").sum(),
    )
    return (
        cells.join(main_state, on=[*GPU_KEYS, "bucket"], how="left", nulls_equal=True)
        .with_columns(
            pl.when(pl.col("busy_share") > 0)
            .then(pl.col("busy_weighted") / pl.col("busy_share"))
            .otherwise(None)
            .round(2)
            .alias("mean_pct"),
            gpu_label(),
            (pl.col("bucket") + dt.timedelta(hours=BUCKET_HOURS[every])).alias("bucket_end"),
        )
        .drop("busy_weighted", "busy_share")
        .sort("node", "gpu_index", "gpu_uuid", "mig_instance_id", "bucket", nulls_last=True)
    )


def gpus(buckets: pl.DataFrame) -> pl.DataFrame:
    """One row per GPU (or MIG instance) seen: GPU-hours per state, mean utilization."""
    hours = pl.col("gpu_hours")
    return (
        reported(buckets)
        .group_by(GPU_KEYS)
        .agg(
            hours.sum().round(4).alias("gpu_hours"),
            *(hours.filter(pl.col("state") == s).sum().round(4).alias(f"{s}_hours") for s in STATES),
            (pl.col("busy_weighted").sum() / pl.col("busy_share").sum()).round(2).alias("mean_pct"),
        )
        .with_columns(gpu_label())
        .sort("node", "gpu_index", "gpu_uuid", "mig_instance_id", nulls_last=True)
    )


def gpu_count(buckets: pl.DataFrame) -> int:
    """Physical GPUs seen (MIG instances count once, with their GPU)."""
    return int(buckets["gpu_uuid"].drop_nulls().n_unique()) if buckets.height else 0


def gaps(buckets: pl.DataFrame, every: str) -> pl.DataFrame:
    """Stretches without data (``no_data`` GPU-time), per GPU: consecutive buckets holding no_data are merged into
    one gap with its start, end (exclusive, bucket-aligned) and the no_data GPU-hours in it; longest first."""
    step = dt.timedelta(hours=BUCKET_HOURS[every])
    missing = (
        reported(buckets)
        .filter(pl.col("state") == "no_data")
        .group_by(*GPU_KEYS, "bucket")
        .agg(pl.col("gpu_hours").sum())
    )
    if missing.height == 0:
        return pl.DataFrame(
            schema={
                **{k: buckets.schema[k] for k in GPU_KEYS},
                "start": buckets.schema["bucket"],
                "end": buckets.schema["bucket"],
                "no_data_hours": pl.Float64,
            }
        )
    return (
        missing.sort(*GPU_KEYS, "bucket", nulls_last=True)
        .with_columns(
            (pl.col("bucket").diff().over(GPU_KEYS) != step).fill_null(True).cum_sum().alias("run"),
        )
        .group_by(*GPU_KEYS, "run")
        .agg(
            pl.col("bucket").min().alias("start"),
            (pl.col("bucket").max() + step).alias("end"),
            pl.col("gpu_hours").sum().round(4).alias("no_data_hours"),
        )
        .drop("run")
        .sort(["no_data_hours", "node", "gpu_uuid"], descending=[True, False, False])
    )


def sample_sources(samples: pl.LazyFrame) -> pl.LazyFrame:
    """Per cluster, node and source of ``gpu_samples``: GPUs, samples, first and last sample time."""
    return (
        samples.group_by("cluster", "node", "source")
        .agg(
            pl.col("gpu_uuid").n_unique().alias("gpus"),
            pl.len().alias("samples"),
            pl.col("ts").min().alias("first_sample"),
            pl.col("ts").max().alias("last_sample"),
        )
        .sort("cluster", "node", "source")
    )
