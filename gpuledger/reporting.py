"""The report job: read the warehouse once for the window, price it, and hand the pieces to ``analysis.report``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis import daily, pricing, report, silent_gpus, spot, team_scope, usage
from analysis.costs import priced
from analysis.errors import EmptyWarehouse, EmptyWindow
from analysis.mig.window import window_fit
from analysis.states import HELD_STATES
from analysis.window import Window, parse_time, resolve
from gpuledger.settings import Settings
from warehouse import rollup
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing
from warehouse.reading import stored_time_max
from warehouse.schema import (
    BILL_LINES,
    GPU_MINUTES,
    GPU_SAMPLES,
    NODES,
    latest_plausible,
    utc_now,
)


def newest_minute(lake: Lake, now: dt.datetime | None = None) -> dt.datetime | None:
    """The newest GPU-minute no later than a day after ``now`` (default: the real clock): minutes stamped further
    ahead (stored by a release that did not reject impossible timestamps) do not move the default window."""
    limit = latest_plausible(now or utc_now())
    days = sorted({p.date for p in lake.partitions(GPU_MINUTES) if p.date is not None and p.date <= limit.date()})
    for day in reversed(days):  # the newest day's partition holds the newest minute: read only that one
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        end = min(limit, start + dt.timedelta(days=1))
        value: object = stored_time_max(lake.parts(GPU_MINUTES, start=day, end=day), "ts")
        if not isinstance(value, dt.datetime) or value >= end:  # no footer statistics, or stamps past the limit
            value = lake.scan(GPU_MINUTES, start=start, end=end).select(pl.col("ts").max()).collect().item()
        if isinstance(value, dt.datetime):
            return value
    return None


def fleet_report(
    lake: Lake,
    settings: Settings,
    *,
    start: str | None,
    end: str | None,
    now: dt.datetime,
    refresh: bool = True,
    team: str | None = None,
) -> dict[str, Any]:
    """The fleet report over the requested window; ``team``: one team's report instead (a team of the ``teams``
    setting: the GPU-time its namespaces' pods held, ``analysis.team_scope``), with ``scope.team`` set.

    The rollup is refreshed first when it is stale, unless ``refresh`` is false (read-only callers such as the
    dashboard): then the report reads the rollup as it stands. An unknown team is ``analysis.report.UnknownTeam``.
    """
    if team is not None and team not in settings.teams:
        raise report.UnknownTeam(team, list(settings.teams))
    with diagnosing(lake):
        window = open_window(lake, settings, start=start, end=end, now=now, refresh=refresh)
        inputs = report_inputs(lake, settings, window, now=now)
        if team is not None:
            inputs = team_report_inputs(lake, settings, inputs, team)
        return report.build(inputs)


def team_report_inputs(lake: Lake, settings: Settings, inputs: report.ReportInputs, team: str) -> report.ReportInputs:
    """``inputs`` narrowed to ``team``'s namespaces (``analysis.team_scope``), with the GPUs its pods held."""
    namespaces = team_scope.team_namespaces(inputs.groups["namespace"].unique().to_list(), settings.teams).get(team, [])
    narrowed = team_scope.team_inputs(inputs, namespaces, gpus=team_gpus(lake, inputs.window, namespaces))
    return dataclasses.replace(narrowed, team=team, gpus_by_cluster={})


def team_gpus(lake: Lake, window: Window, namespaces: list[str]) -> int:
    """Distinct physical GPUs the pods of ``namespaces`` held in the window."""
    if not namespaces:
        return 0
    held = usage.in_window(lake.scan(GPU_MINUTES, start=window.start, end=window.end), window).filter(
        pl.col("namespace").is_in(namespaces) & pl.col("state").is_in(HELD_STATES)
    )
    return int(held.select(pl.col("gpu_uuid").n_unique()).collect().item())


def open_window(
    lake: Lake, settings: Settings, *, start: str | None, end: str | None, now: dt.datetime, refresh: bool
) -> Window:
    """The window a command asked for (default: ``report_days`` ending at the newest minute), in whole minutes, after
    checking the times and that the warehouse holds samples, and refreshing the rollup when ``refresh`` is set."""
    for value in (start, end):
        if value:
            parse_time(value, now)
    if not lake.parts(GPU_SAMPLES):
        raise EmptyWarehouse(str(lake.root))
    if refresh:
        ensure_fresh(lake, settings)
    window = resolve(start, end, newest=newest_minute(lake, now), default_days=settings.report_days, now=now)
    return Window(to_minute(window.start), to_minute(window.end))


def to_minute(at: dt.datetime) -> dt.datetime:
    """``at`` floored to its minute in UTC: GPU-time is kept per minute, so a window of whole minutes covers exactly
    the minutes it prints (``--start -1w`` is a week before the current minute, not to the microsecond)."""
    return at.astimezone(dt.UTC).replace(second=0, microsecond=0)


def ensure_fresh(lake: Lake, settings: Settings) -> None:
    """Refresh the rollup and its daily summaries when they are stale (a writer: read-only callers skip this)."""
    stored = settings.summaries.all()
    if not rollup.is_fresh(lake, settings.state_rules, settings.rollup, stored):
        rollup.refresh(lake, settings.state_rules, settings.rollup, summaries=stored)


@dataclass(frozen=True)
class PricedUsage:
    groups: pl.DataFrame
    """The window's minute groups (``analysis.usage.minute_groups``) priced by ``analysis.costs.priced``."""
    node_prices: pl.DataFrame
    """The window's ``nodes`` rows priced by ``analysis.pricing.price_nodes``."""
    catalog: pricing.PriceCatalog
    partly_reporting: pl.DataFrame | None = None
    """Nodes with GPUs that never reported in the window (``analysis.silent_gpus.partly_reporting``)."""
    silent: pl.DataFrame | None = None
    """Their silent GPUs per node and day (``analysis.silent_gpus.silent_days``): the no_data added to ``groups``."""


def priced_usage(lake: Lake, settings: Settings, window: Window) -> PricedUsage:
    """The window's minute groups, priced (added up from the daily summaries; no rows when the window is empty),
    with the ``no_data`` time of GPUs their node has but that never reported (``analysis.silent_gpus``)."""
    groups = rollup.summarized(lake, settings.summaries.groups, window.start, window.end)
    catalog = pricing.PriceCatalog.build(settings.price_overrides())
    nodes = lake.scan(NODES, start=window.start, end=window.end).collect()
    node_prices = pricing.price_nodes(nodes, catalog, bill_rates(lake, window))
    reporting = rollup.summarized(lake, settings.summaries.node_gpus, window.start, window.end)
    groups = silent_gpus.with_silent(groups, reporting, node_prices)
    model_prices = pricing.model_prices(groups["gpu_model"].unique().to_list(), catalog)
    partly = silent_gpus.partly_reporting(reporting, node_prices)
    silent = silent_gpus.silent_days(reporting, node_prices)
    return PricedUsage(priced(groups, node_prices, model_prices), node_prices, catalog, partly, silent)


def bill_rates(lake: Lake, window: Window) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The rates of the imported bill's periods that overlap ``window`` (``analysis.pricing.bill``); None when no
    bill was imported."""
    if not lake.parts(BILL_LINES):
        return None
    lines = lake.scan(BILL_LINES, end=window.end).filter(pl.col("billing_period_end") > window.start)
    return pricing.bill_rates(lines)


def empty_window(lake: Lake, window: Window) -> EmptyWindow:
    """The error for a window without GPU-minutes, saying where the data is."""
    spans = lake.series_spans(GPU_SAMPLES)
    first, last = spans["first"].min(), spans["last"].max()
    return EmptyWindow(
        window.start.isoformat(),
        window.end.isoformat(),
        first.isoformat() if isinstance(first, dt.datetime) else None,
        last.isoformat() if isinstance(last, dt.datetime) else None,
    )


def gpus_in_window(lake: Lake, window: Window) -> int:
    """Distinct physical GPUs sampled in the window, from the parts' footer summaries (no scan of the minutes)."""
    return int(_alive(lake, window)["gpu_uuid"].n_unique())


def gpus_by_cluster(lake: Lake, window: Window) -> dict[str, int]:
    """The same per cluster."""
    alive = _alive(lake, window).group_by("cluster").agg(pl.col("gpu_uuid").n_unique())
    return {str(cluster): int(n) for cluster, n in alive.iter_rows()}


def _alive(lake: Lake, window: Window) -> pl.DataFrame:
    spans = lake.series_spans(GPU_SAMPLES)
    return spans.filter((pl.col("first") < window.end) & (pl.col("last") >= window.start))


def report_inputs(
    lake: Lake,
    settings: Settings,
    window: Window,
    priced_groups: PricedUsage | None = None,
    *,
    now: dt.datetime | None = None,
) -> report.ReportInputs:
    """Everything the report needs for ``window``, added up from the rollup's daily summaries (whole days) and the
    edge days' minutes (``analysis.daily``); ``priced_groups``: the window's ``priced_usage`` when the caller has it
    already (it is not read again)."""
    daily_summaries = settings.summaries
    if priced_groups is None:
        priced_groups = priced_usage(lake, settings, window)
    if priced_groups.groups.height == 0:
        raise empty_window(lake, window)
    groups = priced_groups.groups
    histogram = daily.add_up_histogram(rollup.summarized(lake, daily_summaries.histogram, window.start, window.end))
    fit = window_fit(
        groups,
        rollup.summarized(lake, daily_summaries.mig_histogram, window.start, window.end),
        rollup.summarized(lake, daily_summaries.mig_devices, window.start, window.end),
        settings.mig_assumptions,
    )
    spot_result = spot.report(
        groups,
        priced_groups.node_prices,
        priced_groups.catalog,
        window,
        assumptions=settings.spot_assumptions,
        workload_kinds=settings.spot_workload_kinds,
        checkpoint_intervals_s=settings.spot_checkpoint_intervals_s,
        top_n=settings.report_top_n,
        owners=rollup.summarized(lake, daily_summaries.owners, window.start, window.end),
    )
    return report.ReportInputs(
        window=window,
        groups=groups,
        gpus=gpus_in_window(lake, window),
        gpus_by_cluster=gpus_by_cluster(lake, window),
        histogram=histogram,
        heatmap=usage.hour_of_week(histogram),
        rules=settings.state_rules,
        top_n=settings.report_top_n,
        teams=settings.teams,
        idle_mode=settings.idle_cost,
        mig_fit=fit,
        spot=spot_result,
        now=now or utc_now(),
        partly_reporting=priced_groups.partly_reporting,
    )
