"""What the dashboard reads: one window of the warehouse, read-only, as report inputs plus the per-GPU timeline.

``Viewing`` binds these reads to the settings and is the ``dashboards.source.Source`` that ``gpuledger dashboard``
hands the app.

Nothing here writes to the warehouse: the rollup is read as it stands (``freshness`` only says whether it is behind
the samples), exactly as ``gpuledger.reporting.fleet_report(..., refresh=False)`` reads it, so a page shows the
numbers ``gpuledger report`` prints for the same window once the rollup is fresh.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis import daily, silent_gpus, timeline, usage
from analysis.errors import EmptyWarehouse
from analysis.recommend import RecommendationSet
from analysis.recommend.listing import listing
from analysis.report import ReportInputs
from analysis.window import Window, resolve
from dashboards.source import FleetView, History
from gpuledger import recommending, reporting
from gpuledger.settings import Settings
from warehouse import rollup
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing
from warehouse.schema import GPU_MINUTES, GPU_SAMPLES, utc_now


def history(lake: Lake, settings: Settings) -> History:
    """Cheap facts about the warehouse (part footers and one max over the rollup); raises ``EmptyWarehouse``."""
    with diagnosing(lake):
        if not lake.parts(GPU_SAMPLES):
            raise EmptyWarehouse(str(lake.root))
        spans = lake.series_spans(GPU_SAMPLES)
        first, last = spans["first"].min(), spans["last"].max()
        fresh = rollup.freshness(lake, settings.state_rules, settings.rollup, settings.summaries.all())
        return History(
            first_sample=first if isinstance(first, dt.datetime) else None,
            last_sample=last if isinstance(last, dt.datetime) else None,
            newest_minute=reporting.newest_minute(lake),
            rollup_fresh=fresh.minutes,
            summaries_fresh=fresh.summaries,
        )


def window_of(settings: Settings, start: str | None, end: str | None, newest: dt.datetime | None) -> Window:
    """The window a page asked for; without start and end, the report's default (``report_days`` ending at the
    newest minute), as ``gpuledger report`` picks it."""
    return resolve(start, end, newest=newest, default_days=settings.report_days, now=dt.datetime.now(dt.UTC))


def fleet_view(lake: Lake, settings: Settings, window: Window) -> FleetView:
    """The priced minute groups and the timeline of ``window`` (``EmptyWindow`` when it holds no GPU-minutes).

    Both come from the rollup's daily summaries (whole days) and the edge days' minutes, as the report reads them:
    fleet totals, states, idle waste, utilization means and cost allocation built from these inputs by
    ``analysis.report.build`` equal the report's; percentiles, MIG fit and spot need ``full_inputs``. The buckets
    hold the silent GPUs' no_data too (``analysis.silent_gpus.with_silent_buckets``), so GPU-hours by state over
    time add up to the report's state totals.
    """
    with diagnosing(lake):
        priced = reporting.priced_usage(lake, settings, window)
        if priced.groups.height == 0:
            raise reporting.empty_window(lake, window)
        every = timeline.bucket_for(window)
        hourly = settings.summaries.timeline
        if timeline.BUCKET_HOURS[every] >= timeline.BUCKET_HOURS[daily.TIMELINE_EVERY]:
            buckets = timeline.rebucket(rollup.summarized(lake, hourly, window.start, window.end), every)
        else:  # finer than the stored hours: a short window, read from its minutes
            minutes = usage.in_window(lake.scan(GPU_MINUTES, start=window.start, end=window.end), window)
            parents = usage.mig_parent_gpus(minutes, window)
            buckets = timeline.gpu_buckets(minutes, window, parents, every).collect(engine="streaming")
        buckets = silent_gpus.with_silent_buckets(buckets, priced.silent, every)
        inputs = ReportInputs(
            window=window,
            groups=priced.groups,
            gpus=reporting.gpus_in_window(lake, window),
            histogram=pl.DataFrame(),
            heatmap=pl.DataFrame(),
            rules=settings.state_rules,
            top_n=settings.report_top_n,
            teams=settings.teams,
            idle_mode=settings.idle_cost,
            partly_reporting=priced.partly_reporting,
            now=utc_now(),
        )
    return FleetView(window=window, inputs=inputs, buckets=buckets, every=every)


def full_inputs(lake: Lake, settings: Settings, window: Window) -> ReportInputs:
    """Everything the report reads for ``window``, MIG fit and spot included (``gpuledger.reporting``)."""
    with diagnosing(lake):
        return reporting.report_inputs(lake, settings, window)


def sample_sources(lake: Lake, window: Window) -> pl.DataFrame:
    """Per cluster, node and source: GPUs, samples and the first and last sample in the window."""
    with diagnosing(lake):
        samples = lake.scan(GPU_SAMPLES, start=window.start, end=window.end).select(
            "ts", "cluster", "node", "gpu_uuid", "source"
        )
        return timeline.sample_sources(samples).collect(engine="streaming")


def recommendations(lake: Lake, settings: Settings, window: Window) -> RecommendationSet:
    """The ranked recommendations for ``window`` (``gpuledger.recommending``), read-only."""
    return recommending.recommendations(
        lake,
        settings,
        start=window.start.isoformat(),
        end=window.end.isoformat(),
        now=dt.datetime.now(dt.UTC),
        refresh=False,
    )


@dataclass(frozen=True)
class Viewing:
    """The dashboard's ``Source``: the reads above under ``settings``."""

    settings: Settings

    @property
    def key(self) -> str:
        return self.settings.model_dump_json()

    @property
    def report_days(self) -> float:
        return self.settings.report_days

    @property
    def teams(self) -> Mapping[str, Sequence[str]]:
        return self.settings.teams

    @property
    def idle_cost(self) -> str:
        return self.settings.idle_cost

    def history(self, lake: Lake) -> History:
        return history(lake, self.settings)

    def window_of(self, start: str | None, end: str | None, newest: dt.datetime | None) -> Window:
        return window_of(self.settings, start, end, newest)

    def fleet_view(self, lake: Lake, window: Window) -> FleetView:
        return fleet_view(lake, self.settings, window)

    def full_inputs(self, lake: Lake, window: Window) -> ReportInputs:
        return full_inputs(lake, self.settings, window)

    def sample_sources(self, lake: Lake, window: Window) -> pl.DataFrame:
        return sample_sources(lake, window)

    def recommendations(self, lake: Lake, window: Window, version: str) -> dict[str, Any]:
        from gpuledger import stored_plan  # it builds on this module's window_of

        stored = stored_plan.load(lake, self.settings, window, version)
        return stored if stored is not None else listing(recommendations(lake, self.settings, window))
