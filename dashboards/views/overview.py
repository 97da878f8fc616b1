"""Overview: spend, idle waste, mean utilization, GPU-hours by state over time, top wasters."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import timeline, utilization, waste
from dashboards import charts, columns, data, fmt, links, tables
from dashboards.tables import Column

page = data.current()
r = page.report
st.title("Overview")
st.caption(page.caption())
for stale in r["fleet"].get("stale_prices") or []:
    st.warning(f"Stale list prices: {stale['message']}")

spend, idle, util, gpus, hours = st.columns(5)
spend.metric("Spend", fmt.usd(r["fleet"]["cost_usd"]), help=page.help("GPU-hours x each node's GPU-hour price."))
idle.metric(
    "Idle waste",
    fmt.usd(r["idle_waste"]["cost_usd"]),
    delta=f"{fmt.share(r['idle_waste']['share_of_cost'])} of spend",
    delta_color="off",
    delta_arrow="off",
    help=page.help("GPU-hours idle_held + idle_allocated + unallocated, times their price."),
)
util.metric(
    "Mean utilization",
    fmt.pct(r["utilization"]["mean_pct"]),
    help=page.help("Time-weighted over observed GPU-minutes; SM activity where DCGM reports it, else GPU_UTIL."),
)
gpus.metric("GPUs", fmt.count(r["fleet"]["gpus"]), help=page.help("Physical GPUs sampled in the window."))
hours.metric("GPU-hours", fmt.hours(r["fleet"]["gpu_hours"]), help=page.help("Every state, no_data included."))

st.subheader("GPU-hours by state over time")
if page.buckets.height:
    st.altair_chart(charts.states_over_time(timeline.state_timeline(page.buckets), page.view.every), width="stretch")
else:
    st.info("No GPU-time in this window for these filters.")

states = pl.DataFrame(
    {
        "state": list(r["states"]),
        "gpu_hours": list(r["states"].values()),
        "cost_usd": [r["states_cost_usd"][s] for s in r["states"]],
    }
)
left, right = st.columns([2, 3])
with left:
    st.markdown("**By state**")
    tables.table(
        states,
        {"state": Column("state"), "gpu_hours": Column("GPU-hours", "hours"), "cost_usd": Column("cost", "usd")},
    )
with right:
    st.markdown("**Top wasters** (held GPUs below the active threshold; *fix* opens what removes the waste)")
    top = r["idle_waste"]["by_workload"][:5]
    if top:
        wasters = pl.DataFrame(top).with_columns(
            pl.struct("namespace", "workload")
            .map_elements(lambda k: links.fix_url(k["namespace"], k["workload"]), return_dtype=pl.String)
            .alias("fix")
        )
        tables.table(wasters, columns.WASTERS)
        first = top[0]
        st.page_link(
            links.RECOMMENDATIONS,
            label=f"What removes the top waste ({first['namespace']}/{first['workload']}, "
            f"{fmt.usd(first['cost_usd'])} idle)",
            icon=":material/arrow_forward:",
            query_params=links.fix_params(first["namespace"], first["workload"]),
        )
    else:
        st.info("No workload held a GPU idle in this window.")
    st.page_link(links.IDLE_WASTE, label="Every idle workload, with its evidence", icon=":material/list:")

st.subheader("By cluster")
clusters = pl.DataFrame(utilization.by(page.inputs.groups, "cluster", max(page.inputs.groups.height, 1)))
if clusters.height:
    clusters = clusters.join(waste.idle_by(page.inputs.groups, ["cluster"]), on="cluster", how="left").with_columns(
        pl.col("idle_cost_usd").fill_null(0.0)
    )
    tables.table(clusters, columns.CLUSTERS)
    st.caption("Narrow every page to one cluster with the sidebar's Cluster filter.")
else:
    st.info("No GPU-time in this window for these filters.")

st.subheader("Underuse and reconciliation with OpenCost and Kubecost")
underused = r.get("underused")
reconciliation = r.get("reconciliation")
if underused and reconciliation:
    st.metric(
        "Underused",
        fmt.usd(underused["cost_usd"]),
        delta=f"{fmt.hours(underused['gpu_hours'])} GPU-hours",
        delta_color="off",
        delta_arrow="off",
        help=page.help(underused["definition"]),
    )
    steps = {"start": "start", "plus": "+", "equals": "=", "of which": "of which", "moved": "moved"}
    for part, title in (("cost", "OpenCost's GPU cost to the fleet cost"), ("idle", "Kubecost's workload idle")):
        walk = reconciliation[part]
        st.markdown(f"**{title}**" + ("" if walk["adds_up"] else " (does not add up)"))
        st.caption(walk["definition"])
        lines = pl.DataFrame(walk["lines"]).with_columns(pl.col("kind").replace_strict(steps).alias("step"))
        tables.table(lines, columns.WALK)
    if reconciliation["by_namespace"]:
        st.markdown("**By namespace** (OpenCost by request, gpuledger by measured use)")
        tables.table(pl.DataFrame(reconciliation["by_namespace"]), columns.RECONCILED)
    st.caption(f"Prices: {reconciliation['prices']}.")
