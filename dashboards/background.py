"""The server's reads for pages nobody has opened yet, in a worker process at the lowest CPU priority.

On a small node (two cores) those reads (the samples per node, the ranking of the recommendations when none is
stored) take seconds of CPU on every core Polars has, exactly while a visitor's first pages are being drawn.
Run in a worker at ``nice`` 19 (``worker``), they take only the CPU the pages leave over, and a page that needs one
of them waits for the same cache entry (Streamlit locks it) instead of computing it again. The results come back
pickled (Polars frames travel as Arrow IPC) and are cached like any other read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from analysis.report import ReportInputs
from analysis.window import Window
from dashboards.source import FleetView, History, Source
from dashboards.worker import Worker
from warehouse.lake import Lake


def _read(source: Source, method: str, root: str, window: Window) -> Any:
    return getattr(source, method)(Lake(Path(root)), window)


def _ranked(source: Source, root: str, window: Window, version: str) -> dict[str, Any]:
    return source.recommendations(Lake(Path(root)), window, version)


@dataclass(frozen=True)
class InBackground:
    """``source`` with its slow reads (``full_inputs``, ``sample_sources``, ``recommendations``) run in ``worker``."""

    source: Source
    worker: Worker

    def _in_child(self, method: str, lake: Lake, window: Window) -> Any:
        return self.worker.call(_read, self.source, method, str(lake.root), window)

    @property
    def key(self) -> str:
        return self.source.key

    @property
    def report_days(self) -> float:
        return self.source.report_days

    @property
    def teams(self) -> Mapping[str, Sequence[str]]:
        return self.source.teams

    @property
    def idle_cost(self) -> str:
        return self.source.idle_cost

    def history(self, lake: Lake) -> History:
        return self.source.history(lake)

    def window_of(self, start: str | None, end: str | None, newest: dt.datetime | None) -> Window:
        return self.source.window_of(start, end, newest)

    def fleet_view(self, lake: Lake, window: Window) -> FleetView:
        return self.source.fleet_view(lake, window)

    def full_inputs(self, lake: Lake, window: Window) -> ReportInputs:
        found: ReportInputs = self._in_child("full_inputs", lake, window)
        return found

    def sample_sources(self, lake: Lake, window: Window) -> pl.DataFrame:
        found: pl.DataFrame = self._in_child("sample_sources", lake, window)
        return found

    def recommendations(self, lake: Lake, window: Window, version: str) -> dict[str, Any]:
        found: dict[str, Any] = self.worker.call(_ranked, self.source, str(lake.root), window, version)
        return found
