"""The app's reads, cached per warehouse version (``Lake.version``: every visible part's path, size and mtime).

Every cached function takes the warehouse root and its version token, so new data (a collector's flush, a rollup)
is read on the next rerun and nothing older is served; settings are part of the key too (``settings_key``: the
source's ``key``). The reads are the ``Source``'s the dashboard was served with, which never write to the warehouse.
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
from analysis.recommend.files import render
from analysis.recommend.model import workloads_of
from analysis.recommend.plan import build_plan
from analysis.report import ReportInputs
from analysis.window import Window
from dashboards import charts
from dashboards.source import FleetView, History, Source
from warehouse.ingest import RejectedTimes, rejected_times
from warehouse.lake import Lake
from warehouse.malformed import MalformedLines, malformed_lines


def _lake(root: str) -> Lake:
    return Lake(Path(root))


@st.cache_data(show_spinner=False, max_entries=16)
def history(root: str, version: str, settings_key: str, _source: Source) -> History:
    return _source.history(_lake(root))


@st.cache_data(show_spinner="Reading the warehouse ...", max_entries=8)
def fleet_view(root: str, version: str, start: str, end: str, settings_key: str, _source: Source) -> FleetView:
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return _source.fleet_view(_lake(root), window)


@st.cache_data(show_spinner="Reading the MIG fit, spot candidates and percentiles ...", max_entries=8)
def full_inputs(root: str, version: str, start: str, end: str, settings_key: str, _source: Source) -> ReportInputs:
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return _source.full_inputs(_lake(root), window)


@st.cache_data(show_spinner="Reading samples ...", max_entries=8)
def sample_sources(root: str, version: str, start: str, end: str, _source: Source) -> pl.DataFrame:
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return _source.sample_sources(_lake(root), window)


@st.cache_data(show_spinner="Ranking recommendations ...", max_entries=8)
def recommendations(
    root: str, version: str, start: str, end: str, settings_key: str, _source: Source
) -> dict[str, Any]:
    """``{"items": [Recommendation.to_dict()...], "files": {name: text}}``: every ranked recommendation with its
    ``rank``, the workloads it patches (``workloads``: [namespace, name]), whether its cluster's plan applies it
    (``in_plan``) and, if so, what it banks there (``plan_savings_usd_month``: the node-hours it removes x their
    price; ``plan_expected_usd_month``)."""
    window = Window(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    found = _source.recommendations(_lake(root), window)
    plan = build_plan(found)
    applied = {a.rank: a for a in plan.applied}
    items = []
    for rank, item in enumerate(found.items, 1):
        a = applied.get(rank)
        items.append(
            {
                **item.to_dict(),
                "workloads": [list(w) for w in workloads_of(item)],
                "rank": rank,
                "in_plan": a is not None,
                "plan_savings_usd_month": a.savings_usd_month if a is not None else None,
                "plan_expected_usd_month": a.expected_savings_usd_month if a is not None else None,
            }
        )
    return {"items": items, "files": render(plan)}


@st.cache_data(show_spinner=False, max_entries=32)
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

    def full_report(self) -> dict[str, Any]:
        """The whole report of the filtered fleet, MIG fit, spot and percentiles included (a slower, cached read)."""
        w = self.window
        full = full_inputs(
            str(self.root),
            self.version,
            w.start.isoformat(),
            w.end.isoformat(),
            self.source.key,
            self.source,
        )
        return _build(narrow(full, self.filters, gpus=self.inputs.gpus if self.filters.active else None))

    def sources(self) -> pl.DataFrame:
        w = self.window
        return sample_sources(str(self.root), self.version, w.start.isoformat(), w.end.isoformat(), self.source)

    def rejected_times(self) -> RejectedTimes | None:
        """Rows ingest dropped for impossible timestamps. Not cached: it is one small state document, and a batch
        rejected whole changes no part, so the warehouse version would not see it."""
        return rejected_times(_lake(str(self.root)))

    def malformed_lines(self) -> MalformedLines | None:
        """Lines collectors skipped because they did not parse (not cached, as for ``rejected_times``)."""
        return malformed_lines(_lake(str(self.root)))


def page(root: Path, version: str, source: Source, hist: History, view: FleetView, filters: Filters) -> Page:
    buckets = filters.apply(view.buckets)
    gpus = timeline.gpu_count(buckets) if filters.active else None
    inputs = narrow(view.inputs, filters, gpus=gpus)
    return Page(
        root=root,
        version=version,
        source=source,
        history=hist,
        view=view,
        filters=filters,
        inputs=inputs,
        report=_build(inputs),
        buckets=buckets,
    )


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
