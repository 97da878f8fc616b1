"""MIG demand: per workload, the compute and memory it needs, from its GPU-minutes.

Definitions (README, Definitions, "MIG fit"; pinned by ``tests/test_mig_demand.py``):

**Demand** (after the Kubernetes VPA recommender: kubernetes/autoscaler ``vertical-pod-autoscaler/pkg/recommender/``
``util/histogram_options.go``, ``util/histogram.go``, ``util/decaying_histogram.go``, ``logic/estimator.go``). Only
observed, held minutes count (``state != "no_data"`` and ``workload`` set). Each minute's utilization u is
``sm_active_mean`` when present, else ``util_mean_pct / 100``, as a fraction of the whole GPU (on a MIG instance, times
the instance's compute fraction). Minutes go into a histogram with exponential buckets (bucket i starts at
``first * (ratio**i - 1) / (ratio - 1)``; defaults first 0.001, ratio 1.02, so a percentile reads at most ~2% high)
weighted ``2 ** ((t - t_last) / half_life)`` (half-life 24 h: yesterday counts half). The percentile (default p95) is
the end of the bucket where the cumulative weight reaches p of the total, as VPA returns it.

**Shared minutes** (several pods on one GPU or MIG instance, ``analysis.shares``) count once per holder, as that
holder's, the way ``analysis.recommend.usage`` counts them: its u is the device's times the holder's share, it goes
into the histogram with its own decay weight, and its GPU-time (``gpu_hours``) is its share. History counts device
minutes, not holder-minutes: two holders of one workload on one device in one minute are two replicas for one minute.
``compute_held`` stays the device a holder shared (time-slicing lets it use all of it) and peak memory the device's
(conservative: memory is not split).

**Confidence** = ``min(history span in days, observed minutes / 1440)``, VPA's ``getConfidence`` (the span includes
the last minute, so one minute is 1/1440 day, never 0). VPA's upper bound multiplies the whole estimate by
``(1 + 1/confidence)``; here only the safety margin is scaled by it: ``compute demand = percentile x (1 + (margin - 1)
x (1 + 1/confidence))``. With a week of history a 1.15 margin becomes 1.171, with one day 1.30, with one hour 4.75, so
short histories need a bigger slice and long ones tend to the plain margin.

**Held cap.** Compute demand never exceeds ``compute_held``, the share of a GPU one replica held (per GPU it held:
its share-weighted minutes over its minutes, 1.0 for a whole GPU, the instance's share on a MIG instance; the
largest of these): a workload cannot be measured using more than it holds, so a saturated one-GPU pod needs at most
1.0 GPU whatever its margin. **History** = ``history_hours`` = confidence x 24 h; the fit claims no profile below
``MigAssumptions.min_history`` (``analysis.mig.fit``).

Memory demand = peak ``fb_used_max_bytes`` x memory margin (default 1.1).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import polars as pl

from analysis import shares
from analysis.errors import AnalysisError
from analysis.mig.assumptions import DEFAULT_ASSUMPTIONS, MigAssumptions
from analysis.mig.catalog import MigCatalog, UnknownMigProfile, load_catalog
from analysis.units import GIB, MINUTES_PER_DAY

KEYS = ("namespace", "workload", "gpu_model")

DEMAND_SCHEMA: dict[str, pl.DataType] = {
    "namespace": pl.String(),
    "workload": pl.String(),
    "gpu_model": pl.String(),
    "minutes": pl.Int64(),
    "gpu_hours": pl.Float64(),
    "replicas": pl.Int64(),
    "gpu_uuids": pl.List(pl.String()),
    "util_pct_p95": pl.Float64(),
    "peak_mem_gib": pl.Float64(),
    "confidence": pl.Float64(),
    "history_hours": pl.Float64(),
    "compute_held": pl.Float64(),
    "compute_demand": pl.Float64(),
    "memory_demand_gib": pl.Float64(),
}


def _instance_fraction(catalog: MigCatalog, model: str | None, profile: str) -> float | None:
    """A MIG instance's share of its GPU: the catalog's compute fraction, else its "Ng" over the compute slices."""
    compute_slices = 7
    try:
        gpu = catalog.gpu(model)
    except AnalysisError:
        pass
    else:
        compute_slices = gpu.compute_slices
        try:
            return gpu.profile(profile).compute_fraction
        except UnknownMigProfile:
            pass
    match = re.match(r"(?:MIG )?(\d+)g\.", profile)
    return int(match[1]) / compute_slices if match else None


def _memory_candidates(peaks: pl.DataFrame, catalog: MigCatalog, a: MigAssumptions) -> pl.DataFrame:
    """Keys (namespace, workload, gpu_model) of MIG-capable models whose peak memory (``fb_used_max_bytes``) x
    margin fits their largest sub-GPU profile, or whose memory is unknown."""
    keep = []
    for namespace, workload, model, peak in peaks.select(*KEYS, "fb_used_max_bytes").iter_rows():
        if not _mig_capable(catalog, model):
            continue
        largest = max(p.memory_bytes for p in catalog.gpu(model).sub_gpu)
        if peak is None or peak * a.memory_margin <= largest:
            keep.append((namespace, workload, model))
    return pl.DataFrame(keep, schema={k: pl.String for k in KEYS}, orient="row")


def _mig_capable(catalog: MigCatalog, model: str | None) -> bool:
    try:
        catalog.gpu(model)
    except AnalysisError:
        return False
    return True


def _instance_fractions(held: pl.LazyFrame, catalog: MigCatalog) -> pl.DataFrame:
    """(gpu_model, mig_profile) -> the instance's share of the whole GPU, for the MIG instances in ``held``."""
    pairs = (
        held.filter(pl.col("mig_profile").is_not_null())
        .select("gpu_model", "mig_profile")
        .unique()
        .collect(engine="streaming")
    )
    fractions = [_instance_fraction(catalog, model, profile) for model, profile in pairs.iter_rows()]
    return pairs.with_columns(pl.Series("instance_fraction", fractions, dtype=pl.Float64))


def percentile(buckets: Sequence[int], weights: Sequence[float], p: float, assumptions: MigAssumptions) -> float:
    """VPA's ``histogram.Percentile``: the end of the first bucket (ascending) where the cumulative weight reaches
    ``p`` of the total; the start of the last bucket when it is that one. 0.0 for an empty histogram."""
    if not buckets:
        return 0.0
    order = sorted(range(len(buckets)), key=lambda i: buckets[i])
    partial = list(itertools.accumulate(weights[i] for i in order))
    threshold = p * partial[-1]
    chosen = next(buckets[i] for i, s in zip(order, partial, strict=True) if s >= threshold)
    last = assumptions.buckets - 1
    return assumptions.bucket_start(chosen + 1 if chosen < last else chosen)


def demand(
    minutes: pl.LazyFrame,
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
    gpu_models: Sequence[str | None] | None = None,
    peaks: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Compute and memory demand per (namespace, workload, gpu_model) from ``gpu_minutes`` rows of a window.

    Columns: the keys, ``minutes`` (observed minutes with a utilization reading), ``gpu_hours`` (held GPU-minutes / 60,
    a MIG instance's minute counting as its share of the GPU), ``replicas`` (most devices held in one minute),
    ``gpu_uuids`` (GPUs held), ``util_pct_p95`` (the decayed percentile, % of the GPU, whatever ``percentile`` is),
    ``peak_mem_gib``, ``confidence``, ``history_hours`` (confidence x 24), ``compute_held`` (the share of a GPU one
    replica held), ``compute_demand`` (fraction of a GPU, at most ``compute_held``) and ``memory_demand_gib``.
    Demands are null when there was nothing to measure (no utilization or no memory reading), never NaN. An empty
    window gives an empty frame with these columns.
    """
    catalog = catalog or load_catalog()
    histogram, devices = demand_parts(minutes, assumptions, catalog, gpu_models)
    if peaks is not None:
        # A compute percentile only for workloads whose memory could fit some sub-GPU profile of their model: for
        # the others memory alone decides (and whole-GPU jobs are most of a fleet's minutes).
        histogram = histogram.filter(_candidate_filter(peaks, catalog, assumptions))
    hist_days, devices_df = pl.collect_all([histogram, devices], engine="streaming")
    return demand_from_parts(hist_days, devices_df, assumptions)


def _candidate_filter(peaks: pl.DataFrame, catalog: MigCatalog, a: MigAssumptions) -> pl.Expr:
    candidates = _memory_candidates(peaks, catalog, a)
    return pl.col("workload").is_in(candidates["workload"].unique().to_list()) & pl.col("gpu_model").is_in(
        candidates["gpu_model"].unique().to_list()
    )


def demand_parts(
    minutes: pl.LazyFrame,
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
    gpu_models: Sequence[str | None] | None = None,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The two sums ``demand`` is computed from, both decomposable by day (so a window's can be added up from daily
    ones): the decaying histogram per (keys, bucket, day) with weights relative to the day's start, and per
    (keys, gpu_uuid) the minutes, first and last measured time, GPU share and peak memory.

    ``gpu_models``: when given, only these models' MIG-capable ones get a histogram.
    """
    catalog = catalog or load_catalog()
    a = assumptions
    held = minutes.filter(pl.col("state") != "no_data")
    split = shares.any_split(held)
    if split:  # each shared minute once per holder, as that holder's; its share weighs its utilization and GPU-time
        held, weight = shares.holder_rows(held)
        held = held.with_columns(weight.alias("share"))
    held = held.filter(pl.col("workload").is_not_null())
    fractions = _instance_fractions(held, catalog)
    if fractions.height:
        rows = held.join(fractions.lazy(), on=["gpu_model", "mig_profile"], how="left")
        whole = pl.when(pl.col("mig_profile").is_null()).then(1.0).otherwise(pl.col("instance_fraction"))
    else:  # no MIG instance in the window (the usual case): skip the join over every minute
        rows, whole = held, pl.lit(1.0)
    util = pl.coalesce(
        pl.col("sm_active_mean").cast(pl.Float64).fill_nan(None),
        pl.col("util_mean_pct").cast(pl.Float64).fill_nan(None) / 100.0,
    ).clip(0.0, 1.0)
    share = pl.col("share") if split else pl.lit(1.0)
    rows = rows.with_columns(whole.alias("whole"), pl.col("ts").dt.epoch("s").alias("t")).with_columns(
        (util * pl.col("whole") * share).alias("u")
    )
    measured = rows.filter(pl.col("u").is_not_null())
    if gpu_models is not None:  # no utilization histogram for models that cannot be cut into MIG instances
        capable = [m for m in gpu_models if _mig_capable(catalog, m)]
        measured = measured.filter(pl.col("gpu_model").is_in(capable))

    # The bucket of each minute by binary search over the bucket starts (the same starts ``bucket_start`` gives):
    # bucket i holds [start(i), start(i+1)); values past the last start land in the last bucket.
    starts = pl.Series("starts", [a.bucket_start(i) for i in range(a.buckets)], dtype=pl.Float64)
    bucket = (pl.lit(starts).search_sorted(pl.col("u"), side="right").cast(pl.Int64) - 1).clip(0, a.buckets - 1)
    # Decay weight 2^((t - t_last) / half-life), computed without a window function over every minute: within each
    # day relative to the day's start (a bounded exponent), then per key relative to its last day on the small
    # aggregated frame. Scaling all of a key's weights by one constant leaves its percentiles unchanged.
    rate = math.log(2.0) / a.half_life.total_seconds()
    day = (pl.col("t") // 86400) * 86400
    histogram = (
        measured.with_columns(bucket.alias("bucket"), day.alias("day"))
        .group_by(*KEYS, "bucket", "day")
        .agg(((pl.col("t") - pl.col("day")).cast(pl.Float64) * rate).exp().sum().alias("w"))
    )
    # One pass per (key, GPU) gives both the per-key figures and the GPUs each key held (a second pass over
    # every minute for the per-key figures alone would cost as much again).
    measured_t = pl.when(pl.col("u").is_not_null()).then(pl.col("t"))
    # Two holders of one workload on one device in one minute are one minute of that device (two replicas on it).
    distinct = pl.struct("t", "mig_instance_id").n_unique() if split else pl.len()
    whole_minutes = pl.col("whole").fill_null(1.0)
    devices = rows.group_by(*KEYS, "gpu_uuid").agg(
        pl.len().alias("rows"),
        distinct.cast(pl.UInt32).alias("device_held_minutes"),
        pl.col("u").is_not_null().sum().cast(pl.Int64).alias("device_minutes"),
        measured_t.min().alias("t_first"),
        measured_t.max().alias("t_last"),
        whole_minutes.sum().alias("whole_minutes"),
        (whole_minutes * share).sum().alias("share_minutes"),
        pl.col("fb_used_max_bytes").max().alias("peak_bytes"),
    )
    return histogram, devices


def combine_demand_parts(
    histograms: pl.DataFrame, devices: pl.DataFrame, peaks: pl.DataFrame | None, assumptions: MigAssumptions
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add up daily ``demand_parts`` (a key's days may come from several pieces of one day) into a window's."""
    histograms = histograms.group_by(*KEYS, "bucket", "day").agg(pl.col("w").sum())
    if peaks is not None:
        histograms = histograms.filter(_candidate_filter(peaks, load_catalog(), assumptions))
    devices = devices.group_by(*KEYS, "gpu_uuid").agg(
        pl.col("rows").sum(),
        pl.col("device_held_minutes").sum(),
        pl.col("device_minutes").sum(),
        pl.col("t_first").min(),
        pl.col("t_last").max(),
        pl.col("whole_minutes").sum(),
        pl.col("share_minutes").sum(),
        pl.col("peak_bytes").max(),
    )
    return histograms, devices


def demand_from_parts(
    hist_days: pl.DataFrame, devices_df: pl.DataFrame, assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS
) -> pl.DataFrame:
    """``demand``'s result from its collected parts (see ``demand_parts``)."""
    a = assumptions
    rate = math.log(2.0) / a.half_life.total_seconds()
    stats_df = (
        devices_df.group_by(KEYS)
        .agg(
            pl.col("device_minutes").sum(),
            pl.col("t_first").min(),
            pl.col("t_last").max(),
            (pl.col("share_minutes").sum() / 60.0).alias("gpu_hours"),
            pl.col("peak_bytes").max(),
            pl.col("gpu_uuid").drop_nulls().unique().sort().alias("gpu_uuids"),
            (pl.col("whole_minutes") / pl.col("rows")).max().clip(upper_bound=1.0).alias("compute_held"),
            # devices held at once: all holder-minutes over the busiest device's minutes, rounded up
            (pl.col("rows").sum() / pl.col("device_held_minutes").max()).ceil().cast(pl.Int64).alias("replicas"),
        )
        .with_columns(
            # minutes with a utilization reading: device-minutes over the devices held at once
            (pl.col("device_minutes") / pl.col("replicas")).round().cast(pl.Int64).alias("minutes"),
        )
    )
    hist_df = (
        hist_days.with_columns(
            pl.col("w") * ((pl.col("day") - pl.col("day").max().over(KEYS)).cast(pl.Float64) * rate).exp()
        )
        .group_by(*KEYS, "bucket")
        .agg(pl.col("w").sum())
        .sort(*KEYS, "bucket", nulls_last=True)
    )
    replicas_df = stats_df.select(*KEYS, "replicas")

    per_key: dict[tuple[Any, ...], float] = {}
    for key, group in itertools.groupby(hist_df.iter_rows(), key=lambda row: row[:3]):
        items = list(group)
        per_key[key] = percentile([row[3] for row in items], [row[4] for row in items], a.percentile, a)
    replica_of = {row[:3]: row[3] for row in replicas_df.iter_rows()}

    out = []
    for row in stats_df.iter_rows(named=True):
        key = (row["namespace"], row["workload"], row["gpu_model"])
        n = row["minutes"]
        confidence = 0.0
        p_value = compute = None
        if n:
            span_days = (row["t_last"] - row["t_first"] + 60) / 86400.0
            confidence = min(span_days, n / MINUTES_PER_DAY)
        held = row["compute_held"]
        if n and key in per_key:  # no histogram: a model that cannot be cut into MIG instances
            p_value = per_key[key]
            compute = min(p_value * a.margin(confidence), held)
        peak = row["peak_bytes"]
        out.append(
            {
                "namespace": row["namespace"],
                "workload": row["workload"],
                "gpu_model": row["gpu_model"],
                "minutes": n,
                "gpu_hours": row["gpu_hours"],
                "replicas": replica_of.get(key, 1),
                "gpu_uuids": row["gpu_uuids"],
                "util_pct_p95": None if p_value is None else min(p_value, 1.0) * 100.0,  # a bucket end may pass 100%
                "peak_mem_gib": None if peak is None else peak / GIB,
                "confidence": confidence,
                "history_hours": confidence * 24.0,
                "compute_held": held,
                "compute_demand": compute,
                "memory_demand_gib": None if peak is None else peak * a.memory_margin / GIB,
            }
        )
    return pl.DataFrame(out, schema=DEMAND_SCHEMA).sort("gpu_model", "namespace", "workload", nulls_last=True)
