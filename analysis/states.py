"""GPU-time states: the one way a GPU-minute is classified.

Every GPU-minute is in exactly one state, tested in this order:

1. ``no_data``: no sample covers the minute (a sample stands for the time until the GPU's next sample, capped at
   ``max_gap``; time beyond the cap is no_data, never idle).
2. ``active``: utilization at or above the active threshold (default 5%). ``sm_active`` (DCGM PROF engine activity,
   0-1) is preferred when present, because ``util_pct`` only says *a* kernel ran during the sample period.
   A GPU doing work is active whether or not we know who holds it.
3. ``idle_held``: held by a pod or process, below the threshold, with more than the memory threshold (default
   1 GiB) held by it: a job that keeps its weights resident and computes nothing. The memory counted is what the
   holder's processes use when the source reports processes (NVML), else the GPU's used memory.
4. ``idle_allocated``: held, below the threshold, no real memory in use.
5. ``unallocated``: below the threshold and no pod or process holds it.

States always sum to the window's GPU-time because each minute gets exactly one of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

from analysis import shares
from analysis.units import GIB

STATES = ("active", "idle_held", "idle_allocated", "unallocated", "no_data")
IDLE_STATES = ("idle_held", "idle_allocated", "unallocated")
HELD_STATES = ("active", "idle_held", "idle_allocated")
"""States of a GPU-minute some pod or process held (an active minute counts as held, attributed or not)."""


@dataclass(frozen=True)
class StateRules:
    """Thresholds of the state definitions (settings: ``active_threshold_pct``, ``held_memory_gib``)."""

    active_threshold_pct: float = 5.0
    held_memory_bytes: int = GIB

    @property
    def fingerprint(self) -> str:
        """Changes whenever a threshold changes, so rollups computed under other rules are recomputed."""
        text = f"states-v3:{self.active_threshold_pct}:{self.held_memory_bytes}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def state(self) -> pl.Expr:
        """The state of each row of a minute frame.

        Needs the columns ``observed`` (bool), ``util_mean_pct``, ``sm_active_mean`` (nullable), ``held`` (bool)
        and ``held_memory_bytes`` (what the holder's processes use; the GPU's used memory when unknown).
        """
        busy = (
            pl.when(pl.col("sm_active_mean").is_not_null())
            .then(pl.col("sm_active_mean") * 100.0)
            .otherwise(pl.col("util_mean_pct"))
            .fill_null(0.0)
            >= self.active_threshold_pct
        )
        holds_memory = pl.col("held_memory_bytes").fill_null(0) > self.held_memory_bytes
        return (
            pl.when(~pl.col("observed"))
            .then(pl.lit("no_data"))
            .when(busy)
            .then(pl.lit("active"))
            .when(pl.col("held") & holds_memory)
            .then(pl.lit("idle_held"))
            .when(pl.col("held"))
            .then(pl.lit("idle_allocated"))
            .otherwise(pl.lit("unallocated"))
            .alias("state")
        )

    def classify(self, minutes: pl.LazyFrame) -> pl.LazyFrame:
        """Each minute's state, and for a minute several held, how it is split among them (``analysis.shares``)."""
        return shares.split(minutes.with_columns(self.state()))
