"""GPU-hours and dollars per state, idle waste, and the leaderboard of idle workloads with its evidence.

**Idle waste** = GPU-hours in ``idle_held`` + ``idle_allocated`` + ``unallocated``, times their GPU-hour price.
``no_data`` time is paid for but is not waste: nobody knows what the GPU did.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from analysis.states import IDLE_STATES, STATES
from analysis.units import GIB


def by_state(priced_groups: pl.DataFrame) -> dict[str, dict[str, float]]:
    """GPU-hours and dollars per state; every state present, even at zero."""
    totals = {
        s: (h, c)
        for s, h, c in priced_groups.group_by("state")
        .agg(pl.col("gpu_hours").sum(), pl.col("cost_usd").sum())
        .iter_rows()
    }
    return {
        s: {
            "gpu_hours": round(float(totals.get(s, (0.0, 0.0))[0]), 4),
            "cost_usd": round(float(totals.get(s, (0.0, 0.0))[1] or 0.0), 2),
        }
        for s in STATES
    }


def idle_by(priced_groups: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Idle GPU-hours and dollars by ``keys`` (namespace, workload, node, gpu_model...), largest first."""
    return (
        priced_groups.filter(pl.col("state").is_in(IDLE_STATES))
        .group_by(keys)
        .agg(
            pl.col("gpu_hours").sum().round(4).alias("idle_gpu_hours"),
            pl.col("cost_usd").sum().round(2).alias("idle_cost_usd"),
        )
        .sort(["idle_cost_usd", *keys], descending=[True] + [False] * len(keys), nulls_last=True)
    )


def _split_by() -> list[pl.Expr]:
    """How the group's shared GPU-time was split (``analysis.shares``): the methods, "" when none was shared."""
    if_present = pl.col("split_method").drop_nulls().unique().sort().str.join(", ")
    return [if_present.alias("split_by")]


def idle_leaderboard(priced_groups: pl.DataFrame, top_n: int) -> list[dict[str, Any]]:
    """Workloads that held GPUs without using them, with the evidence: idle hours (and how many with memory held),
    peak memory held while idle, when they were last active in the window, the GPU models, the price sources, and
    ``split_by``: how the GPU-minutes they shared with other holders were split ("" when they shared none)."""
    if "split_method" not in priced_groups.columns:
        priced_groups = priced_groups.with_columns(pl.lit(None, pl.String).alias("split_method"))
    held = priced_groups.filter(pl.col("workload").is_not_null())
    idle = held.filter(pl.col("state").is_in(["idle_held", "idle_allocated"]))
    last_active = held.group_by("namespace", "workload").agg(pl.col("last_active").max())
    board = (
        idle.group_by("namespace", "workload")
        .agg(
            pl.col("gpu_hours").sum().round(4).alias("gpu_hours"),
            pl.col("gpu_hours").filter(pl.col("state") == "idle_held").sum().round(4).alias("idle_held_hours"),
            pl.col("cost_usd").sum().round(2).alias("cost_usd"),
            (pl.col("fb_used_max_bytes").max() / GIB).round(2).alias("peak_mem_gib"),
            pl.col("gpu_model").unique().sort().str.join(", ").alias("gpu_models"),
            pl.col("price_source").unique().sort().str.join("; ").alias("price_source"),
            *_split_by(),
        )
        .join(last_active, on=["namespace", "workload"], how="left")
        .sort(["cost_usd", "gpu_hours", "namespace", "workload"], descending=[True, True, False, False])
        .head(top_n)
    )
    return [
        {**row, "last_active": row["last_active"].isoformat() if row["last_active"] else None}
        for row in board.to_dicts()
    ]
