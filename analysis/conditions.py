"""The conditions alerts watch, computed from GPU-minutes and priced minute groups (pure: frames in, frames out).

- **Idle streaks**: runs of consecutive GPU-minutes one workload held in ``idle_held`` or ``idle_allocated``, per GPU
  (or MIG instance). A run breaks on a missing minute, another holder, or any other state. A streak is *ongoing* when
  it holds the GPU's newest minute in the window. Every holder of a shared GPU has its own streaks, and its GPU-time
  in them is its share (``analysis.shares``: idle-held minutes by memory share, the rest equally).
- **Namespace utilization**: time-weighted mean utilization (``analysis.utilization``) of the GPU-time each
  namespace held over a window.
- **Daily spend**: dollars per UTC day, and one day's change against the mean of the days before it.
- **Node silence**: a node is silent in a minute when every GPU row it has in ``gpu_minutes`` is ``no_data`` (an
  outage the rollup has closed), or after its newest sample (an outage still going on, from the samples' spans).
- **Price fallbacks**: the price sources that priced GPU-time without a price for its instance type.

Alert rules, thresholds and de-duplication live in ``alerts.rules``; this module only says what is true.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from analysis import shares, utilization
from analysis.costs import price_sources
from analysis.window import Window

IDLE_HELD = ("idle_held", "idle_allocated")
SERIES = ["cluster", "gpu_uuid", "mig_instance_id"]
MINUTE = dt.timedelta(minutes=1)
_STREAK_SCHEMA = {
    "cluster": pl.String,
    "node": pl.String,
    "gpu_uuid": pl.String,
    "mig_instance_id": pl.Int32,
    "namespace": pl.String,
    "workload": pl.String,
    "start": pl.Datetime("us", "UTC"),
    "end": pl.Datetime("us", "UTC"),
    "hours": pl.Float64,
    "idle_held_hours": pl.Float64,
    "gpu_hours": pl.Float64,
    "split_by": pl.String,
    "ongoing": pl.Boolean,
}


def _runs(frame: pl.LazyFrame, partition: list[str], same: list[str]) -> pl.LazyFrame:
    """``frame`` (sorted by ``partition`` and ``ts``) with a ``run`` id: a new run starts after a gap of more than
    one minute or where any of the ``same`` columns changes."""
    gap = pl.col("ts").diff().over(partition) != pl.duration(minutes=1)
    changed = pl.any_horizontal(*[pl.col(c).ne_missing(pl.col(c).shift().over(partition)) for c in same])
    starts = (gap.fill_null(True) | changed).cast(pl.UInt32)
    return frame.with_columns(starts.cum_sum().over(partition).alias("run"))


def idle_streaks(minutes: pl.LazyFrame) -> pl.LazyFrame:
    """Every streak of idle held GPU-minutes in ``minutes`` (already cut to the window), one row per streak and
    holder: cluster, node, gpu_uuid, mig_instance_id, namespace, workload, start, end (last minute), hours (how long
    it lasted), idle_held_hours, gpu_hours (the holder's GPU-time in it: its share of a shared GPU), split_by (the
    methods of its shared minutes, "" when none), and ``ongoing`` (the streak holds the GPU's newest minute).

    Per GPU (MIG instances included), unlike ``analysis.recommend.usage.idle_streaks`` (per workload, for idle
    reclaim): an alert names each GPU left idle, even while the workload's other GPUs work, and whether it still is."""
    columns = ["ts", "cluster", "node", "gpu_uuid", "mig_instance_id", "namespace", "workload", "state"]
    if shares.any_split(minutes):
        holders = minutes.select(*columns, "pod", "container", "split_method", "holder_shares")
        exploded, weight = shares.holder_rows(holders)
        frame = exploded.with_columns(weight.alias("share"))
    else:
        names = minutes.collect_schema().names()
        frame = minutes.select(
            *columns,
            pl.col("split_method") if "split_method" in names else pl.lit(None, pl.String).alias("split_method"),
            pl.lit(1.0).alias("share"),
        )
    holder = [*SERIES, "namespace", "workload"]
    frame = frame.with_columns(
        (pl.col("state").is_in(IDLE_HELD) & pl.col("workload").is_not_null()).alias("idle"),
        pl.col("ts").max().over(SERIES).alias("newest"),
    ).sort([*holder, "ts"], nulls_last=True)
    return (
        _runs(frame, holder, ["idle"])
        .filter(pl.col("idle"))
        .group_by([*SERIES, "namespace", "workload", "run"])
        .agg(
            pl.col("node").last(),
            pl.col("ts").min().alias("start"),
            pl.col("ts").max().alias("end"),
            (pl.len() / 60.0).alias("hours"),
            ((pl.col("state") == "idle_held").sum() / 60.0).alias("idle_held_hours"),
            (pl.col("share").sum() / 60.0).alias("gpu_hours"),
            pl.col("split_method").drop_nulls().unique().sort().str.join(", ").alias("split_by"),
            (pl.col("ts").max() == pl.col("newest").first()).alias("ongoing"),
        )
        .select(list(_STREAK_SCHEMA))
        .cast(_STREAK_SCHEMA)  # type: ignore[arg-type]
        .sort("hours", "namespace", "workload", "gpu_uuid", descending=[True, False, False, False])
    )


def idle_workloads(streaks: pl.DataFrame, min_hours: float) -> pl.DataFrame:
    """Workloads with at least one *ongoing* idle streak of ``min_hours`` or more: namespace, workload, gpus (how many
    of its GPUs sit idle that long), longest_hours, idle_since (start of the longest), nodes, gpu_hours (its GPU-time
    in those streaks: shares of shared GPUs) and split_by ("" when it shared none)."""
    long = streaks.filter(pl.col("ongoing") & (pl.col("hours") >= min_hours))
    return (
        long.sort("hours", descending=True)
        .group_by("namespace", "workload")
        .agg(
            pl.col("gpu_uuid").n_unique().alias("gpus"),
            pl.col("hours").max().round(2).alias("longest_hours"),
            pl.col("start").first().alias("idle_since"),
            pl.col("node").unique().sort().str.join(", ").alias("nodes"),
            pl.col("gpu_hours").sum().round(2),
            pl.col("split_by").filter(pl.col("split_by") != "").unique().sort().str.join(", "),
        )
        .sort("longest_hours", "namespace", "workload", descending=[True, False, False])
    )


def namespace_utilization(priced_groups: pl.DataFrame) -> pl.DataFrame:
    """Per namespace that held GPUs (pods only; unheld GPU-time has no namespace): gpu_hours, active_hours,
    mean_pct (time-weighted over its observed GPU-minutes), cost_usd; lowest utilization first."""
    held = priced_groups.filter(pl.col("namespace").is_not_null())
    rows = utilization.by(held, "namespace", top_n=max(held["namespace"].n_unique(), 1))
    frame = pl.DataFrame(
        rows,
        schema={
            "namespace": pl.String,
            "gpu_hours": pl.Float64,
            "active_hours": pl.Float64,
            "mean_pct": pl.Float64,
            "allocation_rate": pl.Float64,
            "cost_usd": pl.Float64,
        },
    )
    return frame.drop("allocation_rate").sort("mean_pct", "namespace", nulls_last=True)


def daily_spend(priced_groups: pl.DataFrame) -> pl.DataFrame:
    """Dollars and GPU-hours per UTC day (``date`` of the minute groups), oldest first."""
    return (
        priced_groups.group_by("date")
        .agg(pl.col("cost_usd").sum().round(2).alias("cost_usd"), pl.col("gpu_hours").sum().round(4))
        .sort("date")
    )


@dataclass(frozen=True)
class SpendChange:
    day: dt.date
    cost_usd: float
    trailing_mean_usd: float
    trailing_days: int
    change_pct: float
    """(day's spend / trailing mean - 1) x 100."""


def spend_window(now: dt.datetime, trailing_days: int) -> tuple[dt.date, Window]:
    """The day the spend rule judges at ``now`` (yesterday, UTC) and the window of its ``trailing_days`` and it."""
    day = now.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    start = dt.datetime.combine(day - dt.timedelta(days=trailing_days), dt.time(), tzinfo=dt.UTC)
    return day, Window(start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))


def spend_change(daily: pl.DataFrame, day: dt.date, trailing_days: int) -> SpendChange | None:
    """``day``'s spend against the mean of the ``trailing_days`` days before it (days without data are left out);
    None when ``day`` or every trailing day has no spend."""
    today = daily.filter(pl.col("date") == day)
    before = daily.filter(pl.col("date").is_between(day - dt.timedelta(days=trailing_days), day, closed="left"))
    if today.height == 0 or before.height == 0:
        return None
    mean = float(before["cost_usd"].mean())  # type: ignore[arg-type]
    cost = float(today["cost_usd"].item())
    if mean <= 0:
        return None
    return SpendChange(day, round(cost, 2), round(mean, 2), before.height, round(100.0 * (cost / mean - 1.0), 2))


def price_fallbacks(priced_groups: pl.DataFrame) -> pl.DataFrame:
    """The fallback price sources in use: price_source, gpu_hours, cost_usd (most dollars first)."""
    rows = [r for r in price_sources(priced_groups) if r.get("price_fallback")]
    return pl.DataFrame(
        rows,
        schema={
            "price_source": pl.String,
            "price_fallback": pl.Boolean,
            "gpu_hours": pl.Float64,
            "cost_usd": pl.Float64,
        },
    ).drop("price_fallback")


def node_silences(
    minutes: pl.LazyFrame, spans: pl.DataFrame, window_start: dt.datetime, now: dt.datetime
) -> pl.DataFrame:
    """Silences of each node: cluster, node, start (first silent minute), end (last silent minute; None while it
    goes on), minutes, ongoing.

    Closed silences come from ``minutes`` (runs of minutes in which all of the node's rows are ``no_data``);
    an ongoing one runs from a minute after the node's newest sample (``spans``: ``lake.series_spans``) to ``now``,
    for nodes last seen at or after ``window_start`` (a GPU's node is the one ``minutes`` last saw it on).
    """
    node_minutes = (
        minutes.group_by("cluster", "node", "ts")
        .agg((pl.col("state") == "no_data").all().alias("silent"))
        .sort("cluster", "node", "ts")
    )
    closed = (
        _runs(node_minutes, ["cluster", "node"], ["silent"])
        .filter(pl.col("silent"))
        .group_by("cluster", "node", "run")
        .agg(
            pl.col("ts").min().alias("start"),
            pl.col("ts").max().alias("end"),
            pl.len().cast(pl.Float64).alias("minutes"),
        )
        .with_columns(pl.lit(False).alias("ongoing"))
        .drop("run")
        .collect()
    )
    nodes = minutes.group_by("cluster", "gpu_uuid").agg(pl.col("node").sort_by("ts").last()).collect()
    last = (
        spans.join(nodes, on=["cluster", "gpu_uuid"], how="inner").group_by("cluster", "node").agg(pl.col("last").max())
    )
    ongoing = (
        last.filter((pl.col("last") >= window_start) & (pl.col("last") + MINUTE < now))
        .with_columns(
            (pl.col("last").dt.truncate("1m") + pl.duration(minutes=1)).alias("start"),
            pl.lit(None, pl.Datetime("us", "UTC")).alias("end"),
        )
        .with_columns(
            ((pl.lit(now) - pl.col("start")).dt.total_seconds() / 60.0).alias("minutes"), pl.lit(True).alias("ongoing")
        )
        .select("cluster", "node", "start", "end", "minutes", "ongoing")
    )
    schema = {
        "cluster": pl.String,
        "node": pl.String,
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "minutes": pl.Float64,
        "ongoing": pl.Boolean,
    }
    return pl.concat([closed.select(list(schema)).cast(schema), ongoing.cast(schema)]).sort(  # type: ignore[arg-type]
        "minutes", "cluster", "node", descending=[True, False, False]
    )
