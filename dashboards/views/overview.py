"""Overview: spend, idle waste, mean utilization, GPU-hours by state over time, top wasters."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import timeline
from dashboards import charts, data, fmt

page = data.current()
r = page.report
st.title("Overview")
st.caption(page.caption())
for stale in r["fleet"].get("stale_prices") or []:
    st.warning(f"Stale list prices: {stale['message']}")

spend, waste, util, gpus, hours = st.columns(5)
spend.metric("Spend", fmt.usd(r["fleet"]["cost_usd"]), help=page.help("GPU-hours x each node's GPU-hour price."))
waste.metric(
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
        "GPU-hours": list(r["states"].values()),
        "cost (USD)": [r["states_cost_usd"][s] for s in r["states"]],
    }
)
left, right = st.columns([2, 3])
with left:
    st.markdown("**By state**")
    st.dataframe(
        states,
        hide_index=True,
        column_config={
            "GPU-hours": st.column_config.NumberColumn(format="%.1f"),
            "cost (USD)": st.column_config.NumberColumn(format="dollar"),
        },
    )
with right:
    st.markdown("**Top wasters** (held GPUs below the active threshold)")
    top = r["idle_waste"]["by_workload"][:5]
    if top:
        st.dataframe(
            pl.DataFrame(top).select(
                "namespace", "workload", "gpu_hours", "cost_usd", "peak_mem_gib", "last_active", "price_source"
            ),
            hide_index=True,
            column_config={
                "gpu_hours": st.column_config.NumberColumn("idle GPU-hours", format="%.1f"),
                "cost_usd": st.column_config.NumberColumn("idle cost", format="dollar"),
                "peak_mem_gib": st.column_config.NumberColumn("peak GiB", format="%.1f"),
                "price_source": st.column_config.TextColumn("priced by"),
            },
        )
    else:
        st.info("No workload held a GPU idle in this window.")

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
    steps = {"start": "", "plus": "+", "equals": "=", "of which": "of which", "moved": "moved"}
    money = {
        "gpu_hours": st.column_config.NumberColumn("GPU-hours", format="%.1f"),
        "cost_usd": st.column_config.NumberColumn("cost", format="dollar"),
    }
    for part, title in (("cost", "OpenCost's GPU cost to the fleet cost"), ("idle", "Kubecost's workload idle")):
        walk = reconciliation[part]
        st.markdown(f"**{title}**" + ("" if walk["adds_up"] else " (does not add up)"))
        st.caption(walk["definition"])
        lines = pl.DataFrame(walk["lines"]).with_columns(pl.col("kind").replace_strict(steps).alias("step"))
        st.dataframe(lines.select("step", "line", "gpu_hours", "cost_usd", "why"), hide_index=True, column_config=money)
    if reconciliation["by_namespace"]:
        st.markdown("**By namespace** (OpenCost by request, gpuledger by measured use)")
        st.dataframe(pl.DataFrame(reconciliation["by_namespace"]), hide_index=True)
    st.caption(f"Prices: {reconciliation['prices']}.")
