"""The app's reads, cached per warehouse version (``Lake.version``: every visible part's path, size and mtime).

Every cached function takes the warehouse root and its version token, so new data (a collector's flush, a rollup)
is read on the next rerun and nothing older is served; settings are part of the key too (``settings_key``: the
source's ``key``). The reads are the ``Source``'s the dashboard was served with, which never write to the warehouse.

The frames are cached as resources (``st.cache_resource``: one shared, immutable object, where ``st.cache_data``
would unpickle a copy of the window's buckets on every rerun), which also lets the server read the default window
before Streamlit's runtime exists (``server.warm_default``). Pages only read what they are given (Streamlit copies
a chart spec before it adds to it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from analysis import report, timeline
from analysis.filters import Filters, narrow
from analysis.report import ReportInputs
from analysis.window import Window
from dashboards import charts
from dashboards.source import FleetView, History, Source
from warehouse.ingest import RejectedTimes, rejected_times
from warehouse.lake import Lake
from warehouse.malformed import MalformedLines, malformed_lines


def _lake(root: str) -> Lake:
    return Lake(Path(root))


@st.cache_resource(show_spinner=False, max_entries=16)
def history(root: str, version: str, settings_key: str, _source: Source) -> History:
    return _source.history(_lake(root))


@st.cache_resource(show_spinner="Reading the warehouse ...", max_entries=8)
def fleet_view(root: str, version: str, start: str, end: str, settings_key: str, _source: Source) -> FleetView:
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return _source.fleet_view(_lake(root), window)


@st.cache_resource(show_spinner="Reading the MIG fit, spot candidates and percentiles ...", max_entries=8)
def full_inputs(root: str, version: str, start: str, end: str, settings_key: str, _source: Source) -> ReportInputs:
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return _source.full_inputs(_lake(root), window)


@st.cache_resource(show_spinner="Reading samples ...", max_entries=8)
def sample_sources(root: str, version: str, start: str, end: str, _source: Source) -> pl.DataFrame:
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return _source.sample_sources(_lake(root), window)


@st.cache_resource(show_spinner="Ranking recommendations ...", max_entries=8)
def recommendations(
    root: str, version: str, start: str, end: str, settings_key: str, _source: Source
) -> dict[str, Any]:
    """The window's ranked recommendations and plan (``Source.recommendations``: stored with the warehouse for this
    data, or ranked now, which takes seconds to minutes)."""
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return _source.recommendations(_lake(root), window, version)


HEATMAP_GPUS = 64
"""The GPU heatmap's rows at most (the first GPUs by node): more is unreadable, and slow to draw."""


@st.cache_resource(show_spinner=False, max_entries=32)
def heatmap_spec(
    root: str,
    version: str,
    start: str,
    end: str,
    settings_key: str,
    fleet: str,
    node: str | None,
    _buckets: pl.DataFrame,
    every: str,
    max_gpus: int,
) -> tuple[dict[str, Any], int]:
    """The GPU heatmap's Vega-Lite spec for the first ``max_gpus`` GPUs of ``_buckets`` (the page's, narrowed by the
    filters named in ``fleet`` and to ``node``), and how many GPUs there are: built once per warehouse version, as
    writing ~10,000 cells out as a chart takes longer than anything else on the page."""
    per_gpu = timeline.gpus(_buckets)
    keys = per_gpu.head(max_gpus).select(timeline.GPU_KEYS)
    shown = _buckets.join(keys, on=timeline.GPU_KEYS, how="semi", nulls_equal=True)
    return charts.gpu_heatmap(timeline.gpu_heatmap(shown, every), every).to_dict(), per_gpu.height


@dataclass(frozen=True)
class Page:
    """What every page draws from: the (filtered) report, its inputs, and the filtered timeline."""

    root: Path
    version: str
    source: Source
    history: History
    view: FleetView
    filters: Filters
    inputs: ReportInputs
    report: dict[str, Any]
    buckets: pl.DataFrame

    @property
    def window(self) -> Window:
        return self.view.window

    def window_text(self) -> str:
        w = self.window
        return f"{w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC (end exclusive, {w.hours / 24:,.1f} days)"

    def filter_text(self) -> str:
        f = self.filters
        parts = [
            f"{name}: {', '.join(values)}"
            for name, values in (("cluster", f.clusters), ("namespace", f.namespaces), ("GPU model", f.gpu_models))
            if values
        ]
        return "; ".join(parts) if parts else "whole fleet"

    def price_text(self) -> str:
        sources = self.report["fleet"]["price_sources"]
        return (
            "; ".join(f"{s['price_source']}{' (fallback)' if s['price_fallback'] else ''}" for s in sources)
            or "no prices"
        )

    def caption(self) -> str:
        """The window, filters and price sources every number on a page is for (shown under the headline)."""
        return f"Window: {self.window_text()}. Fleet: {self.filter_text()}. Priced by: {self.price_text()}."

    def help(self, what: str = "") -> str:
        """Hover text of a headline number: what it is, its window and its price sources."""
        lead = f"{what}\n\n" if what else ""
        return f"{lead}Window: {self.window_text()}\n\nFleet: {self.filter_text()}\n\nPriced by: {self.price_text()}"

    def key(self) -> CacheKey:
        return cache_key(self.root, self.version, self.window, self.source)

    def full_report(self) -> dict[str, Any]:
        """The whole report of the filtered fleet, MIG fit, spot and percentiles included (a slower, cached read)."""
        full = narrow(
            full_inputs(*self.key(), self.source), self.filters, gpus=self.inputs.gpus if self.filters.active else None
        )
        return fleet_report(*self.key(), f"{self.filters!r}, full", full)

    def heatmap(self, node: str | None, buckets: pl.DataFrame) -> tuple[dict[str, Any], int]:
        """The GPU heatmap's spec for ``buckets`` (the page's, or one ``node``'s of them) and how many GPUs they
        hold (``heatmap_spec``)."""
        return heatmap_spec(
            *self.key(),
            self.filter_text(),
            node,
            buckets,
            self.view.every,
            HEATMAP_GPUS,
        )

    def sources(self) -> pl.DataFrame:
        return sample_sources(*self.key()[:4], self.source)  # samples do not depend on the settings

    def rejected_times(self) -> RejectedTimes | None:
        """Rows ingest dropped for impossible timestamps. Not cached: it is one small state document, and a batch
        rejected whole changes no part, so the warehouse version would not see it."""
        return rejected_times(_lake(str(self.root)))

    def malformed_lines(self) -> MalformedLines | None:
        """Lines collectors skipped because they did not parse (not cached, as for ``rejected_times``)."""
        return malformed_lines(_lake(str(self.root)))


CacheKey = tuple[str, str, str, str, str]


def cache_key(root: Path | str, version: str, window: Window, source: Source) -> CacheKey:
    """What the cached reads of one window are keyed on: the warehouse, its version, the window (ISO start and
    end) and the settings (``Source.key``), in the order the cached functions take them."""
    return str(root), version, window.start.isoformat(), window.end.isoformat(), source.key


def page(root: Path, version: str, source: Source, hist: History, view: FleetView, filters: Filters) -> Page:
    key = cache_key(root, version, view.window, source)
    buckets, inputs = narrowed(*key, repr(filters), view, filters)
    return Page(
        root=root,
        version=version,
        source=source,
        history=hist,
        view=view,
        filters=filters,
        inputs=inputs,
        report=fleet_report(*key, repr(filters), inputs),
        buckets=buckets,
    )


@st.cache_resource(show_spinner=False, max_entries=32)
def narrowed(
    root: str,
    version: str,
    start: str,
    end: str,
    settings_key: str,
    filters_key: str,
    _view: FleetView,
    _filters: Filters,
) -> tuple[pl.DataFrame, ReportInputs]:
    """The window's buckets and report inputs narrowed by the sidebar's filters (``filters_key``: their ``repr``)."""
    buckets = _filters.apply(_view.buckets)
    gpus = timeline.gpu_count(buckets) if _filters.active else None
    return buckets, narrow(_view.inputs, _filters, gpus=gpus)


@st.cache_resource(show_spinner=False, max_entries=32)
def fleet_report(
    root: str, version: str, start: str, end: str, settings_key: str, filters_key: str, _inputs: ReportInputs
) -> dict[str, Any]:
    """The report of ``_inputs``, the window narrowed by the filters (``filters_key`` says which, and whether they
    are the full inputs), built once per filters and shared: pages only read it."""
    return _build(_inputs)


def _build(inputs: ReportInputs) -> dict[str, Any]:
    if inputs.groups.height == 0:  # a filter that leaves nothing: an all-zero report, not an error
        return report.build(dataclasses.replace(inputs, gpus=0))
    return report.build(inputs)


KEY = "gpuledger_page"


def current() -> Page:
    """The page data the app put in the session for this run."""
    found = st.session_state.get(KEY)
    if not isinstance(found, Page):
        st.error("Open the dashboard through its main page (`gpuledger dashboard`).")
        st.stop()
    return found
