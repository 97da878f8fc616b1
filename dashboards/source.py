"""What the dashboard reads and from whom: the ``Source`` the command that serves it passes in (``gpuledger.viewing``
reads the warehouse with the user's settings), and the read model it returns.

The dashboard never imports the ``gpuledger`` wiring: the display builds on what it is given (the dependency points
from ``gpuledger`` to ``dashboards``, never back)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from analysis.report import ReportInputs
from analysis.window import Window
from warehouse.lake import Lake


@dataclass(frozen=True)
class History:
    """What the warehouse holds: the first and last sample, and the newest rolled-up minute."""

    first_sample: dt.datetime | None
    last_sample: dt.datetime | None
    newest_minute: dt.datetime | None
    rollup_fresh: bool
    summaries_fresh: bool = True
    """The rollup's daily summaries are current (else pages compute them from the minutes: right, but slower)."""


@dataclass(frozen=True)
class FleetView:
    """One window of the fleet, as the first page needs it: the report's inputs without the histogram, MIG fit and
    spot (``Source.full_inputs`` reads those), and the GPU-time per time bucket (``analysis.timeline``)."""

    window: Window
    inputs: ReportInputs
    buckets: pl.DataFrame
    every: str


class Source(Protocol):
    """The dashboard's reads of a warehouse, read-only, under one set of settings."""

    @property
    def key(self) -> str:
        """The settings as text: part of every cache key, so other settings never get another's cached numbers."""
        ...

    @property
    def report_days(self) -> float: ...

    @property
    def teams(self) -> Mapping[str, Sequence[str]]: ...

    @property
    def idle_cost(self) -> str: ...

    def history(self, lake: Lake) -> History: ...

    def window_of(self, start: str | None, end: str | None, newest: dt.datetime | None) -> Window: ...

    def fleet_view(self, lake: Lake, window: Window) -> FleetView: ...

    def full_inputs(self, lake: Lake, window: Window) -> ReportInputs: ...

    def sample_sources(self, lake: Lake, window: Window) -> pl.DataFrame: ...

    def recommendations(self, lake: Lake, window: Window, version: str) -> dict[str, Any]:
        """The window's ranked recommendations and plan (``analysis.recommend.listing``): the copy stored with the
        warehouse for exactly this window, warehouse ``version`` and settings when there is one, else ranked now."""
        ...
