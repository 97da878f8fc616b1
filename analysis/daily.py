"""Daily summaries: the passes over GPU-minutes that the report and the dashboard make, cut by day so a window's
result is a sum of days.

The minute groups are keyed by date already; the utilization histogram is a sum of GPU-hours per cell; the MIG demand
histogram and per-device figures are sums, minima and maxima per day (``analysis.mig.demand_parts``); the dashboard's
per-GPU timeline is a sum per hour. So the rollup stores each summary per (date, cluster) once
(``warehouse.rollup.Summary``), and a report adds up the stored days plus the two edge days of its window, computed
from their minutes with the same functions.

One definition differs from a single pass over the window: a GPU counts as a MIG parent (its own minutes weigh 0,
its instances' minutes count instead) on the days its MIG instances appear, not over the whole window. For a GPU
that changed MIG mode inside the window, that is the more accurate reading.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Final

import polars as pl

from analysis import mig, silent_gpus, timeline, usage
from analysis.window import Window

VERSION = "3"
"""Bump when any summarized computation changes: stored summaries with another version are recomputed."""
MIG_DEMAND_VERSION = "2"
"""Bump when ``analysis.mig.demand_parts`` changes (2: shared minutes split among their holders by their shares):
only the stored MIG demand parts are recomputed."""


@cache
def _catalog_digest() -> str:
    return hashlib.sha256(mig.CATALOG_JSON.read_bytes()).hexdigest()[:12]


SUMS_ENGINE: Final = "in-memory"
"""The engine a stored summary is computed on: the streaming engine adds a group's floats in an order that varies
from run to run (a Float32 sum then differs in its last digits), and a summary must come out the same bytes in any
process that computes it (the distributed rollup is checked byte for byte against the single-process one)."""
UsageQuery = Callable[[pl.LazyFrame, Window, list[str]], pl.LazyFrame]
TIMELINE_EVERY = "1h"
"""The stored timeline's bucket; coarser buckets are sums of these (``analysis.timeline.rebucket``)."""


@dataclass(frozen=True)
class UsagePass:
    """One pass of ``analysis.usage`` or ``analysis.timeline`` over a day's minutes (a GPU is a MIG parent on the
    days its instances appear)."""

    name: str
    query: UsageQuery

    @property
    def fingerprint(self) -> str:
        return f"{self.name}-v{VERSION}"

    def summarize(self, minutes: pl.LazyFrame, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        window = Window(start, end)
        return self.query(minutes, window, usage.mig_parent_gpus(minutes, window)).collect(engine=SUMS_ENGINE)


def _hourly_timeline(minutes: pl.LazyFrame, window: Window, mig_parents: list[str]) -> pl.LazyFrame:
    return timeline.gpu_buckets(minutes, window, mig_parents, TIMELINE_EVERY)


MINUTE_GROUPS = UsagePass("minute_groups", usage.minute_groups)
"""The minute groups; their key holds the date, so days simply stack."""
BUSY_HISTOGRAM = UsagePass("busy_histogram", usage.busy_histogram)
"""The utilization histogram; days add up with ``add_up_histogram``."""
GPU_TIMELINE = UsagePass(f"gpu_timeline_{TIMELINE_EVERY}", _hourly_timeline)
"""GPU-hours per GPU, namespace, state and hour."""
NODE_GPUS = UsagePass("node_gpus", silent_gpus.reporting_gpus)
"""GPUs reporting per node and day, with the node's first and last minute (``analysis.silent_gpus``)."""
WORKLOAD_OWNERS = UsagePass("workload_owners", usage.workload_owners)
"""The owner kinds each workload's minutes name (``analysis.usage.workload_owners``): spot candidates' kinds."""


@dataclass(frozen=True)
class MigDemand:
    """One of the two parts of ``analysis.mig.demand_parts`` for one day: ``histogram`` or ``devices``."""

    part: str
    assumptions: mig.MigAssumptions

    @property
    def name(self) -> str:
        return f"mig_{self.part}"

    @property
    def fingerprint(self) -> str:
        a = self.assumptions  # only what the stored sums depend on; percentiles and margins apply afterwards
        return (
            f"{self.name}-v{VERSION}.{MIG_DEMAND_VERSION}:{a.first_bucket}:{a.bucket_ratio}:"
            f"{a.half_life.total_seconds()}:{_catalog_digest()}"
        )

    def summarize(self, minutes: pl.LazyFrame, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        models = minutes.select(pl.col("gpu_model").unique()).collect(engine="streaming")["gpu_model"].to_list()
        histogram, devices = mig.demand_parts(minutes, self.assumptions, gpu_models=models)
        return (histogram if self.part == "histogram" else devices).collect(engine=SUMS_ENGINE)


@dataclass(frozen=True)
class DailySummaries:
    """The summaries the report and the dashboard read, for one set of MIG assumptions."""

    groups: UsagePass
    histogram: UsagePass
    mig_histogram: MigDemand
    mig_devices: MigDemand
    timeline: UsagePass
    node_gpus: UsagePass = NODE_GPUS
    owners: UsagePass = WORKLOAD_OWNERS

    @classmethod
    def for_assumptions(cls, assumptions: mig.MigAssumptions) -> DailySummaries:
        return cls(
            MINUTE_GROUPS,
            BUSY_HISTOGRAM,
            MigDemand("histogram", assumptions),
            MigDemand("devices", assumptions),
            GPU_TIMELINE,
        )

    def all(self) -> tuple[UsagePass | MigDemand, ...]:
        return (
            self.groups,
            self.histogram,
            self.mig_histogram,
            self.mig_devices,
            self.timeline,
            self.node_gpus,
            self.owners,
        )


def add_up_histogram(days: pl.DataFrame) -> pl.DataFrame:
    """Daily ``busy_histogram`` frames stacked -> the window's histogram."""
    keys = [c for c in days.columns if c != "gpu_hours"]
    # In day order within each cell, so the float sums come out the same on every run (see usage.hour_of_week).
    return (
        days.sort(keys, nulls_last=True, maintain_order=True)
        .group_by(keys, maintain_order=True)
        .agg(pl.col("gpu_hours").sum())
    )
