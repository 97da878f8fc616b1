"""The recommendation job: read the warehouse once for the window, hand the frames to ``analysis.recommend``, and
write the files it renders.

The report's pieces (priced minute groups, MIG fit, spot candidates) come from ``reporting.report_inputs``, so a
recommendation and the report of the same window agree on every number they share.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path

from analysis import recommend
from analysis.recommend import KINDS, RecommendationSet
from analysis.recommend import usage as recommend_usage
from analysis.recommend.files import render
from analysis.recommend.plan import Plan
from gpuledger import reporting
from gpuledger.settings import Settings
from warehouse.files import write_atomic
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing
from warehouse.schema import GPU_MINUTES

log = logging.getLogger(__name__)
DEVICE_MINUTES_PER_GROUPING = 2_000_000
"""Held GPU-minutes per grouping of the exact per-device percentiles (``usage.device_usage``)."""
ALL_ROWS = 1_000_000_000
"""``report_top_n`` for the report pieces recommendations read: every spot candidate, not the report's top N."""


def recommendations(
    lake: Lake,
    settings: Settings,
    *,
    start: str | None,
    end: str | None,
    now: dt.datetime,
    refresh: bool = True,
) -> RecommendationSet:
    """Every recommendation for the requested window (default: ``report_days`` ending at the newest data).

    The rollup is refreshed first when stale, unless ``refresh`` is false (read-only callers such as the dashboard):
    then nothing is written to the warehouse.
    """
    with diagnosing(lake):
        window = reporting.open_window(lake, settings, start=start, end=end, now=now, refresh=refresh)
        priced = reporting.priced_usage(lake, settings, window)
        inputs = reporting.report_inputs(lake, settings.model_copy(update={"report_top_n": ALL_ROWS}), window, priced)
        options = settings.recommend_options
        batches = lake.batches(GPU_MINUTES, start=window.start, end=window.end, columns=recommend_usage.READ_COLUMNS)
        minutes = recommend_usage.fold(batches)
        groups = math.ceil(minutes.held.height / DEVICE_MINUTES_PER_GROUPING)
        devices = recommend_usage.device_usage(minutes, groups)
        demand = recommend_usage.held_demand(minutes, options.bucket_minutes)
        streaks = recommend_usage.idle_streaks(minutes, int(options.idle_reclaim_hours * 60))
        pod_hours = recommend_usage.pod_hours(minutes)
        del minutes
    result = recommend.build(
        recommend.RecommendInputs(
            window=window,
            groups=inputs.groups,
            nodes=priced.node_prices,
            devices=devices,
            demand=demand,
            streaks=streaks,
            mig_fit=inputs.mig_fit or {},
            spot=inputs.spot or {},
            catalog=priced.catalog,
            options=options,
            pod_hours=pod_hours,
        )
    )
    for warning in result.warnings:
        log.warning("%s", warning)
    return result


def plan(result: RecommendationSet) -> Plan:
    """One consistent plan per cluster (``analysis.recommend.plan``)."""
    return recommend.build_plan(result)


def export(plan: Plan, out: Path) -> list[Path]:
    """Write ``files.render(plan)`` into ``out`` (created when missing): one folder per cluster and the top-level
    README.md and index.json, each file atomically (a temporary file beside it, then a rename). Files an earlier run
    wrote that this plan has not (a kind's YAML, the layout without cluster folders, a cluster folder no longer in
    the plan) are removed; nothing else in ``out`` is touched. Returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    files = render(plan)
    written = []
    for name, text in files.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text)
        written.append(target)
    ours = {f"{kind}.yaml" for kind in KINDS} | {"README.md", "index.json"}
    candidates = [out, *(p for p in out.iterdir() if p.is_dir() and (p / "index.json").is_file())]
    for folder in candidates:
        for name in ours:
            stale = folder / name
            if stale.relative_to(out).as_posix() not in files and stale.is_file():
                stale.unlink()
        if folder != out and not any(folder.iterdir()):
            folder.rmdir()
    return written
