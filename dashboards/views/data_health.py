"""Data health: where the samples come from, the last sample per node, gaps (no_data), and the prices in use."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import shares, timeline
from dashboards import columns, data, fmt, tables

page = data.current()
r = page.report
hist = page.history
st.title("Data health")
st.caption(page.caption())

sources = page.filters.apply(page.sources())
gaps = timeline.gaps(page.buckets, page.view.every)
fallback = [s for s in r["fleet"]["price_sources"] if s["price_fallback"]]

last, no_data, gap_count, prices = st.columns([1.4, 1, 1, 1])
last.metric(
    "Last sample (UTC)",
    fmt.when(hist.last_sample).removesuffix(" UTC"),
    help=page.help("Newest sample in the warehouse."),
)
no_data.metric(
    "No-data GPU-hours",
    fmt.hours(r["states"]["no_data"]),
    help=page.help("GPU-time no sample covers (beyond max_gap): paid for, never counted as idle."),
)
gap_count.metric("Gaps", fmt.count(gaps.height), help=page.help("Stretches of no_data per GPU, bucket-aligned."))
prices.metric(
    "Price sources",
    fmt.count(len(r["fleet"]["price_sources"])),
    delta=f"{len(fallback)} fallback" if fallback else "no fallback",
    delta_color="inverse" if fallback else "off",
    delta_arrow="off",
    help=page.help("A fallback price is used when a node's instance type has no price."),
)
rejected = page.rejected_times()
if rejected is not None:
    counts = {
        "samples": rejected.by_table.get("gpu_samples", 0),
        "allocation rows": rejected.by_table.get("gpu_allocations", 0),
    }
    what = " and ".join(f"{fmt.count(n)} {name}" for name, n in counts.items() if n)
    st.warning(
        f"{what} rejected for impossible timestamps (last on {fmt.when(rejected.last_rejected_at)}): stamped "
        f"{fmt.when(rejected.earliest_stamp)} to {fmt.when(rejected.latest_stamp)}, outside 2000-01-01 to a day "
        "after ingest, and not stored. Check the clock of the node or exporter that sent them."
    )
malformed = page.malformed_lines()
if malformed is not None:
    st.warning(
        f"{fmt.count(malformed.lines)} malformed line(s) skipped in {fmt.count(malformed.scrapes)} scrape(s) of "
        f"{', '.join(sorted(malformed.by_source))} (last on {fmt.when(malformed.last_at)}, "
        f"{fmt.count(malformed.last_lines)} then); every other sample of those pages was stored. The collector's "
        "log names the first bad line of each page."
    )
if hist.rollup_fresh:
    st.success(f"The per-minute rollup is up to date (newest minute {fmt.when(hist.newest_minute)}).")

silent = r.get("partly_reporting_nodes") or []
if silent:
    st.subheader("Nodes with GPUs that never report")
    st.warning(
        "; ".join(n["text"] for n in silent) + ". Their silent GPUs' time is no_data on that node: paid for and "
        "unobserved, in the cost and in no_data. The GPU count is the instance type's, else GPU Feature Discovery's "
        "label, else what was seen."
    )
    tables.table(pl.DataFrame(silent, infer_schema_length=None), columns.SILENT_NODES)

split = shares.split_summary(page.inputs.groups)
st.subheader("Shared GPUs")
if split.height:
    st.info(
        f"{fmt.count(round(float(split['gpu_minutes'].sum())))} GPU-minutes were held by several pods or processes "
        "and split among them: "
        + ", ".join(
            f"{fmt.count(round(m))} by {method}"
            for method, m in split.select("split_method", "gpu_minutes").iter_rows()
        )
        + ". Active minutes by SM share, idle-held ones by memory share (per-process readings), else equally."
    )
    tables.table(split, columns.SPLITS)
else:
    st.success("No GPU-minute in the window was shared by several pods or processes.")

st.subheader("Sources and last sample per node")
tables.table(sources, columns.SOURCES)
st.caption("Samples in the window, per node and source (nvml, dcgm-exporter, prometheus, simulator).")

st.subheader("Gaps (no_data)")
if gaps.height:
    tables.table(gaps, columns.GAPS)
    st.caption(f"Consecutive {page.view.every} buckets holding no_data, merged per GPU; longest first.")
else:
    st.success("No gaps: every GPU-minute in the window is covered by a sample.")

st.subheader("Prices in use")
tables.table(pl.DataFrame(r["fleet"]["price_sources"], infer_schema_length=None), columns.PRICES)
per_node = (
    page.inputs.groups.group_by("cluster", "node", "gpu_model", "price_source", "price_fallback")
    .agg(pl.col("usd_per_gpu_hour").mean().round(4), pl.col("gpu_hours").sum().round(2))
    .sort("cluster", "node")
)
with st.expander("Price per node"):
    tables.table(per_node, columns.NODE_PRICES)
