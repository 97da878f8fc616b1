"""MIG fit: which workloads fit a MIG slice, the proposed packing per GPU, GPUs freed and savings."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import mig
from dashboards import charts, columns, data, fmt, tables

page = data.current()
fit = page.full_report()["mig_fit"]
st.title("MIG fit")
st.caption(page.caption())

now, needed, freed, savings = st.columns(4)
now.metric("GPUs now", fmt.count(fit["gpus_now"]), help=page.help("GPUs the fitting workloads hold today."))
needed.metric("GPUs needed", fmt.count(fit["gpus_needed"]), help=page.help("MIG GPUs the proposed packing uses."))
freed.metric("GPUs freed", fmt.count(fit.get("gpus_freed")), help=page.help())
savings.metric(
    "Savings per month",
    fmt.usd(fit["savings_usd_month"]),
    help=page.help("GPUs freed x the GPU-hour price paid for that model x 730 h."),
)
if page.filters.namespaces or page.filters.clusters:
    st.caption(
        "The packing is planned for the whole fleet; with a namespace or cluster filter the totals are those "
        "of the GPU models shown and the pictures keep the matching instances."
    )

layouts = fit.get("layouts", [])
st.subheader("Proposed packing")
if layouts:
    catalog = mig.load_catalog()
    slots = {m: catalog.gpu(m).memory_slots for m in {lay["gpu_model"] for lay in layouts}}
    st.altair_chart(charts.mig_layouts(layouts, slots), width="stretch")
    tables.table(pl.DataFrame(fit["by_model"], infer_schema_length=None), columns.MIG_MODELS)
else:
    st.info("No workload in this window fits a MIG slice smaller than the whole GPU.")

st.subheader("Workloads and their profiles")
workloads = pl.DataFrame(fit["workloads"], infer_schema_length=None)
if workloads.height:
    only_fits = st.toggle("Only workloads that fit a slice", value=False, key="mig_only_fits")
    if only_fits:
        workloads = workloads.filter(pl.col("fits"))
    not_capable = pl.col("reason").fill_null("").str.contains("not MIG-capable", literal=True)
    workloads = workloads.with_columns(
        pl.when(pl.col("profile").is_not_null())
        .then(pl.col("profile"))
        .when(not_capable)
        .then(pl.lit("not MIG-capable"))
        .otherwise(pl.lit("none (see why)"))
        .alias("profile")
    ).sort(["fits", "gpu_hours"], descending=[True, True], nulls_last=True)
    tables.table(workloads, columns.MIG_WORKLOADS)
    st.caption(
        f"Compute demand: p{round(fit['assumptions'].get('percentile', 0.95) * 100)} of utilization with a safety "
        f"margin, at most what a replica holds; memory demand: peak memory x "
        f"{fit['assumptions'].get('memory_margin', 1.1)}; no profile is claimed with less than "
        f"{fit['assumptions'].get('min_history_hours', 24.0):g} h of history. Workloads that fit a slice come "
        "first; p95 utilization not measured: no percentile was computed for it (e.g. a GPU that is not MIG-capable)."
    )
else:
    st.info("No workload held a GPU in this window.")
