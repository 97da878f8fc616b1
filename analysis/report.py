"""The fleet report: GPU-hours, states, utilization and idle time over a window, from ``gpu_minutes``.

Pure: takes the minute rollup as a LazyFrame and returns a plain dict whose keys are the stable report contract of
ARCHITECTURE.md. Sections that later analyses fill (costs, MIG fit, spot) are present and empty (null or []).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from analysis.states import IDLE_STATES, STATES
from analysis.window import Window

MINUTES_PER_HOUR = 60.0


def minute_totals(minutes: pl.LazyFrame, window: Window) -> pl.LazyFrame:
    """Minutes, utilization sums and memory per (namespace, workload, gpu_model, state): the report's one pass.

    Only plain aggregations run over the minutes; anything that depends on the state is derived per group after.
    """
    observed = pl.col("state") != "no_data"
    return (
        minutes.filter(pl.col("ts").is_between(window.start, window.end, closed="left"))
        .group_by("namespace", "workload", "gpu_model", "state")
        .agg(
            pl.len().alias("minutes"),
            pl.col("util_mean_pct").sum().alias("util_sum"),
            pl.col("fb_used_max_bytes").max().alias("fb_used_max_bytes"),
            pl.col("ts").max().alias("last_seen"),
        )
        .with_columns(
            pl.when(observed).then(pl.col("minutes")).otherwise(0).alias("observed_minutes"),
            pl.when(pl.col("state") == "active").then(pl.col("last_seen")).alias("last_active"),
        )
    )


def fleet_gpus(minutes: pl.LazyFrame, window: Window) -> pl.LazyFrame:
    """How many distinct GPUs (or MIG instances) appear in the window."""
    return (
        minutes.filter(pl.col("ts").is_between(window.start, window.end, closed="left"))
        .select("gpu_uuid", "mig_instance_id")
        .unique()
        .select(pl.len().alias("gpus"))
    )


def fleet_report(minutes: pl.LazyFrame, window: Window, top_n: int = 10) -> dict[str, Any]:
    totals = minute_totals(minutes, window).collect(engine="streaming")
    gpus = fleet_gpus(minutes, window).collect(engine="streaming")
    return summarize(totals, int(gpus.item()) if gpus.height else 0, window, top_n)


def summarize(totals: pl.DataFrame, gpus: int, window: Window, top_n: int) -> dict[str, Any]:
    """The report dict from the per-group totals (split out so tests can feed hand-made totals)."""
    hours = pl.col("minutes").sum() / MINUTES_PER_HOUR
    by_state = dict(totals.group_by("state").agg(hours.alias("h")).iter_rows())
    states = {state: round(float(by_state.get(state, 0.0)), 4) for state in STATES}
    gpu_hours = round(float(totals["minutes"].sum() or 0) / MINUTES_PER_HOUR, 4)
    observed = float(totals["observed_minutes"].sum() or 0)
    mean_pct = round(float(totals["util_sum"].sum() or 0) / observed, 2) if observed else None
    idle = totals.filter(pl.col("state").is_in(IDLE_STATES))
    return {
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "fleet": {"gpus": gpus, "gpu_hours": gpu_hours, "cost_usd": None},
        "states": states,
        "utilization": {
            "mean_pct": mean_pct,
            "by_namespace": _utilization_by(totals, "namespace", top_n),
            "by_model": _utilization_by(totals, "gpu_model", top_n),
        },
        "idle_waste": {
            "gpu_hours": round(sum(states[s] for s in IDLE_STATES), 4),
            "cost_usd": None,
            "by_workload": _idle_by_workload(idle, top_n),
        },
        "mig_fit": {"workloads": [], "gpus_now": None, "gpus_needed": None, "savings_usd_month": None},
        "spot": {"candidates": [], "savings_usd_month": None},
    }


def _utilization_by(totals: pl.DataFrame, column: str, top_n: int) -> list[dict[str, Any]]:
    rows = (
        totals.group_by(column)
        .agg(
            (pl.col("minutes").sum() / MINUTES_PER_HOUR).round(4).alias("gpu_hours"),
            (pl.col("minutes").filter(pl.col("state") == "active").sum() / MINUTES_PER_HOUR)
            .round(4)
            .alias("active_hours"),
            (pl.col("util_sum").sum() / pl.col("observed_minutes").sum()).round(2).alias("mean_pct"),
        )
        .with_columns(pl.col(column).fill_null("(unallocated)" if column == "namespace" else "(unknown)"))
        .sort(["gpu_hours", column], descending=[True, False])
        .head(top_n)
    )
    return rows.to_dicts()


def _idle_by_workload(idle: pl.DataFrame, top_n: int) -> list[dict[str, Any]]:
    held = idle.filter(pl.col("workload").is_not_null())
    rows = (
        held.group_by("namespace", "workload")
        .agg(
            (pl.col("minutes").sum() / MINUTES_PER_HOUR).round(4).alias("gpu_hours"),
            (pl.col("minutes").filter(pl.col("state") == "idle_held").sum() / MINUTES_PER_HOUR)
            .round(4)
            .alias("idle_held_hours"),
            (pl.col("fb_used_max_bytes").max() / (1 << 30)).round(2).alias("peak_mem_gib"),
            pl.col("gpu_model").unique().sort().str.join(", ").alias("gpu_models"),
        )
        .with_columns(pl.lit(None, dtype=pl.Float64).alias("cost_usd"))
        .sort(["gpu_hours", "namespace", "workload"], descending=[True, False, False])
        .head(top_n)
    )
    return rows.to_dicts()
