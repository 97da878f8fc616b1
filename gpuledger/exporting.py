"""The FOCUS export job: the report's window and priced minute groups (``gpuledger.reporting``), as FOCUS rows
(``analysis.focus``), written to a file (``exposition.focus_file``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analysis import focus
from analysis.window import Window, parse_time
from exposition import focus_file
from gpuledger import reporting
from gpuledger.settings import Settings
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing


@dataclass(frozen=True)
class FocusExport:
    path: Path
    window: Window
    rows: int
    cost_usd: float
    gpu_hours: float
    bytes_written: int


def export_focus(
    lake: Lake,
    settings: Settings,
    out: Path,
    *,
    start: str | None,
    end: str | None,
    now: dt.datetime,
    progress: Callable[[str], None] = lambda _: None,
) -> FocusExport:
    """Write the window's GPU allocation to ``out`` as FOCUS (CSV or Parquet by its extension).

    The window and the prices are the report's (``reporting.open_window``, ``reporting.priced_usage``), so the
    rows' BilledCost adds up to the report's fleet cost. ``out`` is checked before anything is read; a window
    without GPU-minutes is an error and nothing is written."""
    focus_file.check_target(out)
    for value in (start, end):
        if value:
            parse_time(value, now)  # a bad time fails before any work, in one line
    with diagnosing(lake):
        progress("reading the window")
        window = reporting.open_window(lake, settings, start=start, end=end, now=now, refresh=True)
        usage = reporting.priced_usage(lake, settings, window)
        if usage.groups.height == 0:
            raise reporting.empty_window(lake, window)
        progress(f"building FOCUS rows from {usage.groups.height:,} priced minute groups")
        rows = focus.focus_rows(usage.groups, usage.node_prices, window, settings.teams)
    progress(f"writing {rows.height:,} rows to {out}")
    written = focus_file.write(rows, out)
    return FocusExport(
        path=out,
        window=window,
        rows=rows.height,
        cost_usd=float(rows["BilledCost"].sum() or 0.0),
        gpu_hours=float(rows["ConsumedQuantity"].sum() or 0.0),
        bytes_written=written,
    )
