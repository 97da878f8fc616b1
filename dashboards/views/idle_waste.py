"""Idle waste: every workload that held GPUs without using them, with the evidence, filterable."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import waste
from dashboards import data, fmt

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
st.dataframe(
    shown.select(
        "namespace",
        "workload",
        "gpu_hours",
        "idle_held_hours",
        "peak_mem_gib",
        "last_active",
        "cost_usd",
        "gpu_models",
        "price_source",
        "split_by",
    ),
    hide_index=True,
    column_config={
        "gpu_hours": st.column_config.NumberColumn("idle GPU-hours", format="%.1f"),
        "idle_held_hours": st.column_config.NumberColumn("with memory held", format="%.1f"),
        "peak_mem_gib": st.column_config.NumberColumn("peak GiB held", format="%.1f"),
        "last_active": st.column_config.TextColumn("last active (UTC)"),
        "cost_usd": st.column_config.NumberColumn("idle cost", format="dollar"),
        "gpu_models": st.column_config.TextColumn("GPU models"),
        "price_source": st.column_config.TextColumn("priced by"),
        "split_by": st.column_config.TextColumn(
            "split by", help="How GPU-minutes it shared with other pods were split (empty: it shared none)."
        ),
    },
)
st.caption(
    f"{shown.height} of {board.height} workloads. Idle: below {r['assumptions']['active_threshold_pct']:g}% "
    f"utilization while a pod held the GPU; memory held: more than {r['assumptions']['held_memory_gib']:g} GiB in "
    "use. Last active: the last minute in the window the workload was active (empty: never). A GPU several pods "
    "shared is charged to each its share: active minutes by SM share, idle-held ones by memory share, else equally "
    "(split by)."
)

st.subheader("Idle cost by namespace")
st.dataframe(
    pl.DataFrame(r["idle_waste"]["by_namespace"]),
    hide_index=True,
    column_config={
        "idle_gpu_hours": st.column_config.NumberColumn("idle GPU-hours", format="%.1f"),
        "idle_cost_usd": st.column_config.NumberColumn("idle cost", format="dollar"),
    },
)
