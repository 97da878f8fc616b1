"""The 1-minute rollup ``gpu_minutes``: per GPU-minute the mean and max utilization, memory, power, who held it,
and the minute's state.

Coverage rule (the time definition): a sample stands for the time until the GPU's next sample, capped at
``max_gap`` = ``max_gap_factor`` x the expected sample interval (configured, or inferred per GPU and day as the median
spacing of its samples). At minute resolution a minute is *observed* when it holds a sample of the GPU or starts
before the previous sample's coverage ends. A GPU's lifetime runs from its first to its last stored sample; every
minute of that lifetime is one row, and unobserved minutes are ``no_data``. Holders come from ``gpu_allocations``
under the same coverage rule. The memory a holder holds (``held_memory_bytes``) is what its processes use (NVML's
per-process memory, averaged over the minute's observations) when the source reports processes, else the GPU's
used memory: the device figure includes what the driver reserves (~0.6 GiB on an H200 with no process at all).

This module only aggregates and aligns. What a minute *means* (its state) is decided by a classifier that
``analysis`` owns and the caller injects, so the warehouse never knows what "idle" is.

Each (date, cluster) partition is recomputed when its inputs change: its part is named after a fingerprint of the
sample and allocation parts it reads (that day and the day before), the GPU lifetimes crossing the day, the
coverage settings and the classifier's rules.

Daily summaries: callers may also inject ``Summary`` objects (sums over a day's minutes that add up over days, such
as the report's minute groups). The rollup stores each one per (date, cluster) under ``_summaries/<name>/``, named
after the minute part it was computed from and the summary's own fingerprint, so it is replaced whenever either
changes. They are caches, not tables: ``summarized`` reads them for whole days of a window and computes the edge
days (and any day without a current summary) from the minutes, so a missing or stale summary costs time, never
correctness.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl
import pyarrow as pa

from warehouse.errors import PartitionFailed, WarehouseError
from warehouse.lake import Lake, Partition, Staged, read_part, scan_parts, summary_table_named
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES, Table

log = logging.getLogger(__name__)

GPU_KEY = ["gpu_uuid", "mig_id"]
MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)


class Classifier(Protocol):
    """Gives each minute its state (``analysis.states.StateRules`` is the one implementation)."""

    @property
    def fingerprint(self) -> str: ...

    def classify(self, minutes: pl.LazyFrame) -> pl.LazyFrame: ...


class Summary(Protocol):
    """A sum over GPU-minutes that adds up over days (``analysis`` defines them; the rollup only stores them)."""

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def summarize(self, minutes: pl.LazyFrame, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """The summary of ``minutes``, the GPU-minutes of one cluster in [start, end) (at most one day)."""
        ...


@dataclass(frozen=True)
class RollupConfig:
    max_gap_factor: float = 2.0
    expected_interval_s: float | None = None
    """None: inferred per GPU and day as the median spacing of its samples."""
    fallback_interval_s: float = 60.0
    """Used when a GPU has a single sample in a day and no interval is configured."""

    @property
    def lookback(self) -> dt.timedelta:
        """How far into the previous day a sample can still cover this day's first minutes."""
        interval = self.expected_interval_s or 1800.0
        return dt.timedelta(seconds=max(3600.0, self.max_gap_factor * interval))

    @property
    def fingerprint(self) -> str:
        return f"rollup-v4:{self.max_gap_factor}:{self.expected_interval_s}:{self.fallback_interval_s}"


@dataclass(frozen=True)
class RollupResult:
    computed: int
    fresh: int
    removed: int


Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PartitionJob:
    """One (date, cluster) of the rollup as a task: everything needed to compute its parts, from any process that
    sees the warehouse (``refresh`` plans the jobs under the writer lock and commits what they stage)."""

    root: str
    partition: Partition
    name: str
    """The minute part's name: a fingerprint of its inputs and settings."""
    existing: tuple[Path, ...]
    """The minute parts there now; when they are just ``name``, the minutes are current and only read."""
    lifetimes: pl.DataFrame
    """The GPU lifetimes of this partition's cluster."""
    classifier: Classifier
    config: RollupConfig
    summaries: tuple[Summary, ...]


@dataclass(frozen=True)
class PartitionOutput:
    """What one job staged and what its commit replaces."""

    partition: Partition
    adds: tuple[Staged, ...]
    removes: tuple[Path, ...]
    computed: bool
    """Whether the minutes were recomputed (else only summaries, if any)."""


Runner = Callable[[Callable[[PartitionJob], PartitionOutput], Sequence[PartitionJob]], Iterable[PartitionOutput]]
"""Runs ``stage_partition`` over the jobs somewhere else (a distributed engine), yielding outputs as they finish,
in any order; the jobs only stage parts, so committing them stays with the one writer."""


def refresh(
    lake: Lake,
    classifier: Classifier,
    config: RollupConfig = RollupConfig(),
    progress: Progress | None = None,
    summaries: Sequence[Summary] = (),
    runner: Runner | None = None,
) -> RollupResult:
    """Bring ``gpu_minutes`` (and the daily ``summaries``) up to date with the stored samples; untouched partitions
    are not recomputed. Each partition commits on its own as soon as its parts are staged, here or by ``runner``."""
    with lake.writing():
        lifetimes = gpu_lifetimes(lake)
        todo = _partitions_to_cover(lifetimes)
        jobs = [_job(lake, partition, lifetimes, classifier, config, summaries) for partition in todo]
        outputs = runner(stage_partition, jobs) if runner else (roll_partition(lake, job) for job in jobs)
        computed = 0
        for i, output in enumerate(outputs):
            lake.commit(output.adds, removes=output.removes)
            computed += output.computed
            if progress:
                progress(i + 1, len(todo))
        wanted = set(todo)
        stale = [
            p
            for table in (GPU_MINUTES, *(summary_table(s) for s in summaries))
            for p in lake.parts(table)
            if Lake.partition_of(p.relative_to(lake.root)) not in wanted
        ]
        lake.commit([], removes=stale + (_retired_summaries(lake, summaries) if summaries else []))
        return RollupResult(computed, len(todo) - computed, len(stale))


def _job(
    lake: Lake,
    partition: Partition,
    lifetimes: pl.DataFrame,
    classifier: Classifier,
    config: RollupConfig,
    summaries: Sequence[Summary],
) -> PartitionJob:
    return PartitionJob(
        root=str(lake.root),
        partition=partition,
        name=f"part-{_fingerprint(lake, partition, lifetimes, classifier, config)}.parquet",
        existing=tuple(lake.parts(GPU_MINUTES, start=partition.date, end=partition.date, cluster=partition.cluster)),
        lifetimes=lifetimes.filter(pl.col("cluster") == partition.cluster),
        classifier=classifier,
        config=config,
        summaries=tuple(summaries),
    )


def stage_partition(job: PartitionJob) -> PartitionOutput:
    """``roll_partition`` in a process that does not hold the writer lock (a distributed engine's worker): the
    writer that planned the job holds it meanwhile and commits what this stages. A warehouse error comes back as
    ``PartitionFailed`` with the same message, since the engine must pickle it."""
    try:
        return roll_partition(Lake(job.root, stages_for_writer=True), job)
    except WarehouseError as exc:
        raise PartitionFailed(str(exc)) from None


def roll_partition(lake: Lake, job: PartitionJob) -> PartitionOutput:
    """Stage one partition's minutes (unless current) and every summary that is not current."""
    partition = job.partition
    adds: list[Staged] = []
    removes: list[Path] = []
    computed = [p.name for p in job.existing] != [job.name]
    if computed:
        day = minutes_for_day(lake, partition, job.lifetimes, job.classifier, job.config)
        adds.append(lake.stage(GPU_MINUTES, partition, day.to_arrow().cast(GPU_MINUTES.schema), job.name))
        removes += job.existing
        frame: pl.LazyFrame = day.lazy()
    else:
        frame = _scan(job.existing)
    for summary in job.summaries:
        staged, stale = _stage_summary(lake, summary, partition, [job.name], frame)
        adds += [staged] if staged else []
        removes += stale
    return PartitionOutput(partition, tuple(adds), tuple(removes), computed)


@dataclass(frozen=True)
class Freshness:
    minutes: bool
    """Every (date, cluster) of ``gpu_minutes`` is current with its inputs and settings."""
    summaries: bool
    """So is every summary asked for (never true when the minutes are not)."""


def freshness(
    lake: Lake, classifier: Classifier, config: RollupConfig = RollupConfig(), summaries: Sequence[Summary] = ()
) -> Freshness:
    """Whether ``refresh`` would recompute anything, the minutes and the summaries told apart, in one pass."""
    lifetimes = gpu_lifetimes(lake)
    summaries_fresh = True
    for partition in _partitions_to_cover(lifetimes):
        name = f"part-{_fingerprint(lake, partition, lifetimes, classifier, config)}.parquet"
        existing = lake.parts(GPU_MINUTES, start=partition.date, end=partition.date, cluster=partition.cluster)
        if [p.name for p in existing] != [name]:
            return Freshness(minutes=False, summaries=False)
        summaries_fresh = summaries_fresh and all(_summary_current(lake, s, partition, name) for s in summaries)
    return Freshness(minutes=True, summaries=summaries_fresh)


def _summary_current(lake: Lake, summary: Summary, partition: Partition, minutes_part: str) -> bool:
    stored = lake.parts(summary_table(summary), start=partition.date, end=partition.date, cluster=partition.cluster)
    return [p.name for p in stored] == [_summary_name(summary, [minutes_part])]


def is_fresh(
    lake: Lake, classifier: Classifier, config: RollupConfig = RollupConfig(), summaries: Sequence[Summary] = ()
) -> bool:
    """Whether the minutes and every summary in ``summaries`` are current."""
    state = freshness(lake, classifier, config, summaries)
    return state.minutes and state.summaries


def summary_table(summary: Summary) -> Table:
    """Where a summary's parts live: ``_summaries/<name>/date=.../cluster=...`` (a cache, outside the contract)."""
    return summary_table_named(summary.name)


def summarized(lake: Lake, summary: Summary, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """The summary of every cluster's GPU-minutes in [start, end), one frame per (date, cluster) stacked: the
    stored daily summary where the window covers the whole day and it is current, else computed from the minutes."""
    last_day = (end - dt.timedelta(microseconds=1)).date()
    minute_parts = _by_partition(lake, lake.parts(GPU_MINUTES, start=start.date(), end=last_day))
    stored = _by_partition(lake, lake.parts(summary_table(summary), start=start.date(), end=last_day))
    frames = []
    for partition, parts in sorted(minute_parts.items(), key=lambda kv: (kv[0].date, kv[0].cluster)):
        assert partition.date is not None
        day_start = dt.datetime.combine(partition.date, dt.time(), dt.UTC)
        lo, hi = max(start, day_start), min(end, day_start + DAY)
        cached = stored.get(partition, [])
        if (lo, hi) == (day_start, day_start + DAY) and [p.name for p in cached] == [
            _summary_name(summary, [p.name for p in parts])
        ]:
            try:
                frames.append(read_part(cached[0]))
                continue
            except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:  # a cache: recompute
                log.warning("daily summary %s is unreadable (%s); computing it from the minutes", cached[0], exc)
        minutes = _scan(parts).filter(pl.col("ts").is_between(lo, hi, closed="left"))
        frames.append(summary.summarize(minutes, lo, hi))
    if not frames:
        return summary.summarize(pl.from_arrow(GPU_MINUTES.schema.empty_table()).lazy(), start, end)  # type: ignore[union-attr]
    return pl.concat(frames, how="vertical_relaxed")


def _stage_summary(
    lake: Lake, summary: Summary, partition: Partition, minute_parts: list[str], minutes: pl.LazyFrame
) -> tuple[Staged | None, list[Path]]:
    """The summary's part for this partition when the stored one is not current, and the parts it replaces."""
    assert partition.date is not None
    table = summary_table(summary)
    name = _summary_name(summary, minute_parts)
    existing = lake.parts(table, start=partition.date, end=partition.date, cluster=partition.cluster)
    if [p.name for p in existing] == [name]:
        return None, []
    day_start = dt.datetime.combine(partition.date, dt.time(), dt.UTC)
    frame = _in_stable_order(summary.summarize(minutes, day_start, day_start + DAY))
    return lake.stage(table, partition, frame.to_arrow(), name), existing


def _in_stable_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by every flat column, so the same minutes give the same bytes in any process and on any run (a
    hash group_by's row order varies with threads and load)."""
    flat = [name for name, dtype in frame.schema.items() if not dtype.is_nested()]
    return frame.sort(flat, nulls_last=True, maintain_order=True) if flat else frame


def _retired_summaries(lake: Lake, summaries: Sequence[Summary]) -> list[Path]:
    """Parts of summaries no longer kept (a summary renamed or dropped by an upgrade)."""
    kept = {summary_table(s).name for s in summaries}
    return [part for table in lake.summary_tables() if table.name not in kept for part in lake.parts(table)]


def _summary_name(summary: Summary, minute_parts: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{summary.fingerprint}|{'|'.join(minute_parts)}".encode())
    return f"part-{digest.hexdigest()[:20]}.parquet"


def _scan(parts: Sequence[Path]) -> pl.LazyFrame:
    return scan_parts(GPU_MINUTES, parts)


def _by_partition(lake: Lake, parts: Sequence[Path]) -> dict[Partition, list[Path]]:
    out: dict[Partition, list[Path]] = {}
    for part in parts:
        out.setdefault(Lake.partition_of(part.relative_to(lake.root)), []).append(part)
    return out


def gpu_lifetimes(lake: Lake) -> pl.DataFrame:
    """First and last sample time of every GPU (or MIG instance), per cluster (from the parts' footers)."""
    return (
        lake.series_spans(GPU_SAMPLES)
        .select(
            "cluster",
            "gpu_uuid",
            pl.col("mig_instance_id").fill_null(-1).alias("mig_id"),
            pl.col("first").alias("first_ts"),
            pl.col("last").alias("last_ts"),
        )
        .sort("cluster", "gpu_uuid", "mig_id")
    )


def minutes_for_day(
    lake: Lake, partition: Partition, lifetimes: pl.DataFrame, classifier: Classifier, config: RollupConfig
) -> pl.DataFrame:
    """Every GPU-minute of one (date, cluster), classified."""
    assert partition.date is not None and partition.cluster is not None
    day_start = dt.datetime.combine(partition.date, dt.time(), dt.UTC)
    day_end = day_start + DAY
    read_from = day_start - config.lookback

    samples = (
        lake.scan(GPU_SAMPLES, start=read_from, end=day_end, cluster=partition.cluster)
        .with_columns(
            pl.col("mig_instance_id").fill_null(-1).alias("mig_id"),
            pl.col("ts").dt.truncate("1m").alias("minute"),
        )
        .collect()
    )
    gaps = _max_gaps(samples, config)
    per_minute = (
        samples.group_by(*GPU_KEY, "minute")
        .agg(
            pl.len().cast(pl.Int32).alias("samples"),
            pl.col("util_pct").mean().alias("util_mean_pct"),
            pl.col("util_pct").max().alias("util_max_pct"),
            pl.col("sm_active").mean().alias("sm_active_mean"),
            pl.col("fb_used_bytes").max().alias("fb_used_max_bytes"),
            pl.col("power_w").mean().alias("power_mean_w"),
            pl.col("ts").max().alias("last_ts"),
        )
        .join(gaps, on=GPU_KEY, how="left")
        .with_columns(pl.col("minute").alias("sample_minute"))
        .sort("minute")
    )
    identity = (
        samples.sort("ts")
        .group_by(GPU_KEY)
        .agg(
            pl.col(c).drop_nulls().last()
            for c in (
                "node",
                "gpu_index",
                "mig_profile",
                "mig_instance_id",
                "gpu_model",
                "fb_total_bytes",
                "source",
            )
        )
    )
    grid = _grid(lifetimes, partition, day_start, day_end)
    minutes = grid.join_asof(per_minute, on="minute", by=GPU_KEY, strategy="backward", check_sortedness=False)
    observed = pl.col("sample_minute").is_not_null() & (
        (pl.col("sample_minute") == pl.col("minute")) | ((pl.col("minute") - pl.col("last_ts")) < pl.col("max_gap"))
    )
    carried = ["util_mean_pct", "util_max_pct", "sm_active_mean", "fb_used_max_bytes", "power_mean_w"]
    minutes = minutes.with_columns(observed.fill_null(False).alias("observed")).with_columns(
        pl.when(pl.col("sample_minute") == pl.col("minute")).then(pl.col("samples")).otherwise(0).alias("samples"),
        *(pl.when(pl.col("observed")).then(pl.col(c)).alias(c) for c in carried),
    )
    minutes = _attach_holders(lake, partition, minutes, read_from, day_end).join(identity, on=GPU_KEY, how="left")
    minutes = minutes.with_columns(
        pl.lit(partition.cluster).alias("cluster"),
        pl.when(pl.col("observed")).then(pl.col("power_mean_w").cast(pl.Float64) * 60.0).alias("energy_j"),
    )
    classified = classifier.classify(minutes.lazy()).collect()
    return (
        classified.rename({"minute": "ts"})
        .select(GPU_MINUTES.columns)
        .sort("gpu_uuid", "mig_instance_id", "ts", nulls_last=True)
    )


def _max_gaps(samples: pl.DataFrame, config: RollupConfig) -> pl.DataFrame:
    """Per GPU: the coverage cap in microseconds-typed duration."""
    if config.expected_interval_s is not None:
        interval = pl.lit(config.expected_interval_s)
    else:
        interval = (pl.col("ts").sort().diff().dt.total_microseconds().median() / 1e6).fill_null(
            config.fallback_interval_s
        )
    return samples.group_by(GPU_KEY).agg(
        (pl.duration(microseconds=(interval * config.max_gap_factor * 1e6).cast(pl.Int64))).alias("max_gap")
    )


def _grid(lifetimes: pl.DataFrame, partition: Partition, day_start: dt.datetime, day_end: dt.datetime) -> pl.DataFrame:
    """One row per minute of each GPU's lifetime that falls in this day."""
    last_minute = day_end - MINUTE
    alive = lifetimes.filter(
        (pl.col("cluster") == partition.cluster) & (pl.col("first_ts") < day_end) & (pl.col("last_ts") >= day_start)
    )
    return (
        alive.select(
            *GPU_KEY,
            pl.datetime_ranges(
                pl.max_horizontal(pl.col("first_ts").dt.truncate("1m"), pl.lit(day_start).dt.cast_time_unit("us")),
                pl.min_horizontal(pl.col("last_ts").dt.truncate("1m"), pl.lit(last_minute).dt.cast_time_unit("us")),
                interval="1m",
            ).alias("minute"),
        )
        .explode("minute")
        .sort("minute")
    )


HOLDER_COLUMNS = ("namespace", "pod", "container", "workload", "owner_kind", "cpu_request", "memory_request_bytes")
"""What a minute keeps of its first holder (by namespace, pod, container)."""
OUTSIDE_PODS = "(outside pods)"
"""The namespace of a GPU process that belongs to no pod: a holder of its own, named after the process."""


def _attach_holders(
    lake: Lake, partition: Partition, minutes: pl.DataFrame, read_from: dt.datetime, day_end: dt.datetime
) -> pl.DataFrame:
    """Who held each GPU-minute: the first holder by (namespace, pod, container), how many held it, and, for a
    minute several held, each holder's measured SM utilization and memory (``holder_list``, null otherwise), which
    the classifier turns into shares."""
    holder_id = pl.coalesce(pl.col("pod"), pl.col("pid").cast(pl.String))
    outside = pl.col("pod").is_null() & pl.col("pid").is_not_null()
    rows = (
        lake.scan(GPU_ALLOCATIONS, start=read_from, end=day_end, cluster=partition.cluster)
        .with_columns(
            pl.col("mig_instance_id").fill_null(-1).alias("mig_id"),
            pl.col("ts").dt.truncate("1m").alias("minute"),
        )
        .with_columns(
            pl.when(outside).then(pl.lit(OUTSIDE_PODS)).otherwise(pl.col("namespace")).alias("namespace"),
            pl.when(outside)
            .then(pl.coalesce(pl.col("process_name"), pl.format("pid {}", pl.col("pid"))))
            .otherwise(pl.col("workload"))
            .alias("workload"),
        )
    )
    holders = (
        rows.sort(*GPU_KEY, "minute", "namespace", "pod", "container", nulls_last=True)
        .group_by(*GPU_KEY, "minute", maintain_order=True)
        .agg(
            pl.col(*HOLDER_COLUMNS).first(),
            holder_id.n_unique().cast(pl.Int32).alias("holders"),
            pl.col("ts").max().alias("alloc_last_ts"),
            pl.when(pl.col("process_fb_used_bytes").is_not_null().any())
            .then(
                pl.col("process_fb_used_bytes").sum()
                / pl.col("ts").filter(pl.col("process_fb_used_bytes").is_not_null()).n_unique()
            )
            .alias("process_memory"),
        )
        .with_columns(pl.col("minute").alias("alloc_minute"))
        .sort("minute")
        .collect()
    )
    holders = _with_holder_lists(rows, holders)
    joined = minutes.join_asof(holders, on="minute", by=GPU_KEY, strategy="backward", check_sortedness=False)
    held = pl.col("alloc_minute").is_not_null() & (
        (pl.col("alloc_minute") == pl.col("minute"))
        | ((pl.col("minute") - pl.col("alloc_last_ts")) < pl.col("max_gap"))
    )
    joined = joined.with_columns((held & pl.col("observed")).fill_null(False).alias("held"))
    return joined.with_columns(
        *(pl.when(pl.col("held")).then(pl.col(c)).alias(c) for c in HOLDER_COLUMNS),
        pl.when(pl.col("held")).then(pl.col("holders")).otherwise(0).alias("holders"),
        pl.when(pl.col("held") & (pl.col("holders") > 1)).then(pl.col("holder_list")).alias("holder_list"),
        pl.coalesce(
            pl.when(pl.col("held") & (pl.col("alloc_minute") == pl.col("minute"))).then(pl.col("process_memory")),
            pl.col("fb_used_max_bytes"),
        )
        .cast(pl.Int64)
        .alias("held_memory_bytes"),
    )


HOLDER_LIST = pl.List(
    pl.Struct(
        {
            "namespace": pl.String,
            "pod": pl.String,
            "container": pl.String,
            "workload": pl.String,
            "sm_pct": pl.Float64,
            "memory_bytes": pl.Float64,
        }
    )
)
"""Per holder of a shared minute: its processes' SM utilization (summed over its pids, averaged over the minute's
readings; null when no source measured it) and the memory they held (the same way)."""


def _with_holder_lists(rows: pl.LazyFrame, holders: pl.DataFrame) -> pl.DataFrame:
    """``holders`` with ``holder_list`` for the minutes more than one pod or process held (null for the rest). Only
    those minutes' allocation rows are grouped again, so a fleet without shared GPUs pays one filter."""
    shared = holders.filter(pl.col("holders") > 1).select(*GPU_KEY, "minute")
    if shared.height == 0:
        return holders.with_columns(pl.lit(None, HOLDER_LIST).alias("holder_list"))
    keys = ["namespace", "pod", "container", "workload"]
    per_ts = (
        rows.join(shared.lazy(), on=[*GPU_KEY, "minute"], how="semi")
        .with_columns(pl.coalesce(pl.col("pod"), pl.format("pid {}", pl.col("pid"))).alias("_holder"))
        .group_by(*GPU_KEY, "minute", "_holder", *keys, "ts")
        .agg(
            *(
                pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).cast(pl.Float64).sum()).alias(name)
                for c, name in (("process_util_pct", "sm_pct"), ("process_fb_used_bytes", "memory_bytes"))
            ),
        )
    )
    lists = (
        per_ts.group_by(*GPU_KEY, "minute", "_holder", *keys)
        .agg(pl.col("sm_pct").mean(), pl.col("memory_bytes").mean())
        .sort(*GPU_KEY, "minute", *keys, nulls_last=True)
        .group_by(*GPU_KEY, "minute", maintain_order=True)
        .agg(pl.struct(*keys, "sm_pct", "memory_bytes").alias("holder_list"))
        .collect()
    )
    return holders.join(lists, on=[*GPU_KEY, "minute"], how="left").with_columns(
        pl.col("holder_list").cast(HOLDER_LIST)
    )


def _partitions_to_cover(lifetimes: pl.DataFrame) -> list[Partition]:
    out: set[Partition] = set()
    spans = lifetimes.group_by("cluster").agg(pl.col("first_ts").min(), pl.col("last_ts").max())
    for cluster, first, last in spans.iter_rows():
        day = first.date()
        while day <= last.date():
            out.add(Partition(day, cluster))
            day += dt.timedelta(days=1)
    return sorted(out, key=lambda p: (p.date, p.cluster))


def _fingerprint(
    lake: Lake, partition: Partition, lifetimes: pl.DataFrame, classifier: Classifier, config: RollupConfig
) -> str:
    assert partition.date is not None
    digest = hashlib.sha256()
    digest.update(f"{classifier.fingerprint}|{config.fingerprint}|".encode())
    before = partition.date - dt.timedelta(days=1)
    for table in (GPU_SAMPLES, GPU_ALLOCATIONS):
        for part in lake.parts(table, start=before, end=partition.date, cluster=partition.cluster):
            digest.update(str(part.relative_to(lake.root)).encode())
    day_start = dt.datetime.combine(partition.date, dt.time(), dt.UTC)
    alive = lifetimes.filter(
        (pl.col("cluster") == partition.cluster)
        & (pl.col("first_ts") < day_start + DAY)
        & (pl.col("last_ts") >= day_start)
    )
    clipped = alive.select(
        *GPU_KEY,
        pl.col("first_ts").clip(lower_bound=day_start),
        pl.col("last_ts").clip(upper_bound=day_start + DAY),
    )
    digest.update(str(clipped.hash_rows().sum()).encode())
    digest.update(str(clipped.height).encode())
    return digest.hexdigest()[:20]
