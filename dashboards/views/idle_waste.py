"""Idle waste: every workload that held GPUs without using them, with the evidence, filterable."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import waste
from dashboards import columns, data, fmt, links, tables

UNALLOCATED = "(unallocated: no pod held the GPU)"
page = data.current()
r = page.report
st.title("Idle waste")
st.caption(page.caption())

cost, hours, share = st.columns(3)
cost.metric("Idle waste", fmt.usd(r["idle_waste"]["cost_usd"]), help=page.help("Idle GPU-hours times their price."))
hours.metric(
    "Idle GPU-hours",
    fmt.hours(r["idle_waste"]["gpu_hours"]),
    help=page.help("idle_held + idle_allocated + unallocated GPU-hours."),
)
share.metric("Share of spend", fmt.share(r["idle_waste"]["share_of_cost"]), help=page.help())

board = pl.DataFrame(waste.idle_leaderboard(page.inputs.groups, page.inputs.groups.height or 1))
st.subheader("Idle workloads, most expensive first")
if board.height == 0:
    st.info("No workload held a GPU idle in this window.")
    st.stop()
if links.SEARCH in st.query_params and "idle_search" not in st.session_state:  # a link from a recommendation
    st.session_state["idle_search"] = st.query_params[links.SEARCH]
search = st.text_input("Filter by namespace or workload", key="idle_search", placeholder="e.g. research or jupyter")
top_hours = max(1.0, float(board.select(pl.col("gpu_hours").max()).item() or 0.0))
min_hours = st.slider("At least this many idle GPU-hours", 0.0, top_hours, 0.0, key="idle_min")
shown = board.filter(pl.col("gpu_hours") >= min_hours)
if search:
    needle = search.lower()
    shown = shown.filter(
        pl.col("namespace").str.to_lowercase().str.contains(needle, literal=True)
        | pl.col("workload").str.to_lowercase().str.contains(needle, literal=True)
    )
shown = shown.with_columns(
    pl.struct("namespace", "workload")
    .map_elements(lambda k: links.fix_url(k["namespace"], k["workload"]), return_dtype=pl.String)
    .alias("fix")
)
if shown.height:
    tables.table(shown, columns.IDLE_WORKLOADS)
else:
    st.info("No idle workload matches this filter: clear the search or lower the hours.")
st.caption(
    f"{shown.height} of {board.height} workloads. Idle: below {r['assumptions']['active_threshold_pct']:g}% "
    f"utilization while a pod held the GPU; memory held: more than {r['assumptions']['held_memory_gib']:g} GiB in "
    "use. Last active: the last minute in the window the workload was active (never in window: not once). A GPU "
    "several pods shared is charged to each its share: active minutes by SM share, idle-held ones by memory share, "
    "else equally (split by). Fix: the recommendations that remove the waste."
)

st.subheader("Idle cost by namespace")
by_namespace = pl.DataFrame(r["idle_waste"]["by_namespace"], infer_schema_length=None)
if by_namespace.height:
    tables.table(
        by_namespace.with_columns(
            pl.col("namespace")
            .map_elements(lambda n: links.fix_url(n, None), return_dtype=pl.String, skip_nulls=False)
            .alias("fix"),
        ).with_columns(pl.col("namespace").fill_null(UNALLOCATED)),
        columns.IDLE_NAMESPACES,
    )
    st.caption(f"{UNALLOCATED}: GPU-time no pod held, paid for and idle; node-group changes remove it.")
