"""Spot: which workloads could move to spot capacity, savings against interruption risk."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboards import charts, columns, data, fmt, tables

page = data.current()
spot = page.full_report()["spot"]
st.title("Spot")
st.caption(page.caption())

net, gross, interruptions, count = st.columns(4)
net.metric(
    "Net savings per month",
    fmt.usd(spot["savings_usd_month"]),
    help=page.help("On-demand minus spot price for the recommended candidates, minus the expected interruptions."),
)
gross.metric("Gross savings per month", fmt.usd(spot.get("gross_savings_usd_month")), help=page.help())
interruptions.metric("Interruption cost per month", fmt.usd(spot.get("interruption_cost_usd_month")), help=page.help())
count.metric("Recommended", fmt.count(spot.get("recommended")), help=page.help("Eligible, net savings above zero."))

candidates = pl.DataFrame(spot["candidates"], infer_schema_length=None)
if candidates.height == 0:
    st.info("No on-demand workload in this window is a spot candidate.")
    st.stop()
st.altair_chart(charts.spot_scatter(candidates), width="stretch")
only = st.toggle("Only recommended candidates", value=False, key="spot_only")
shown = candidates.filter(pl.col("recommended")) if only else candidates
tables.table(shown.sort("net_savings_usd_month", descending=True, nulls_last=True), columns.SPOT)
with st.expander("Assumptions"):
    for line in spot.get("assumptions", []):
        st.markdown(f"- {line}")
