"""GPUs: utilization per GPU over time (heatmap) and a drill-down into one node."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import timeline, utilization, waste
from dashboards import columns, data, fmt, tables

page = data.current()
r = page.report
st.title("GPUs")
st.caption(page.caption())

gpus, hours, util, alloc = st.columns(4)
gpus.metric("GPUs", fmt.count(r["fleet"]["gpus"]), help=page.help("Physical GPUs sampled in the window."))
hours.metric("GPU-hours", fmt.hours(r["fleet"]["gpu_hours"]), help=page.help())
util.metric("Mean utilization", fmt.pct(r["utilization"]["mean_pct"]), help=page.help())
alloc.metric(
    "Allocated",
    fmt.share(r["utilization"]["allocation_rate"]),
    help=page.help("Share of observed GPU-time a pod or process held."),
)

groups = page.inputs.groups
nodes = pl.DataFrame(utilization.by(groups, "node", max(groups.height, 1)))
if nodes.height == 0:
    st.info("No GPU-time in this window for these filters.")
    st.stop()
idle = waste.idle_by(groups, ["node"])
nodes = nodes.join(idle, on="node", how="left").with_columns(pl.col("idle_cost_usd").fill_null(0.0))

st.subheader("Nodes")
tables.table(nodes, columns.NODES)

everything = "(all nodes)"
node = st.selectbox("Drill down into a node", [everything, *nodes["node"].to_list()], key="gpu_node")
buckets = page.buckets if node == everything else page.buckets.filter(pl.col("node") == node)
per_gpu = timeline.gpus(buckets)
spec, gpu_count = page.heatmap(None if node == everything else node, buckets)
st.subheader("Utilization per GPU over time")
if gpu_count > data.HEATMAP_GPUS:
    st.caption(f"The first {data.HEATMAP_GPUS} of {gpu_count} GPUs by node; pick a node to see its GPUs.")
st.vega_lite_chart(spec=spec, width="stretch")
st.caption(
    "Mean utilization per bucket (SM activity where DCGM reports it, else GPU_UTIL); grey: no data (no sample "
    "covers that GPU and bucket)."
)

if node != everything:
    st.subheader(f"Node {node}")
    tables.table(per_gpu, columns.GPU_STATES)
    held = (
        groups.filter(pl.col("node") == node)
        .group_by("namespace", "workload", "state", pl.col("split_method").fill_null("").alias("split_by"))
        .agg(pl.col("gpu_hours").sum().round(2), pl.col("cost_usd").sum().round(2))
        .sort("gpu_hours", "namespace", "workload", "state", "split_by", descending=[True, False, False, False, False])
    )
    st.markdown("**Who held its GPUs** (GPU-hours and cost by state; split by: how a shared GPU's minutes were split)")
    tables.table(held, columns.HOLDERS)
