"""Altair charts of frames that ``analysis`` computed; no figure is computed here."""

from __future__ import annotations

from typing import Any, cast

import altair as alt
import polars as pl

from analysis.states import STATES

STATE_COLORS = {
    "active": "#2e9e5b",
    "idle_held": "#e8833a",
    "idle_allocated": "#f2c14e",
    "unallocated": "#9aa5b1",
    "no_data": "#d64550",
}
NO_DATA_GREY = "#c4c9d0"
_STATE_SCALE = alt.Scale(domain=list(STATES), range=[STATE_COLORS[s] for s in STATES])

alt.data_transformers.disable_max_rows()  # the largest chart (the GPU heatmap) is bounded by the page instead


def states_over_time(timeline: pl.DataFrame, every: str) -> alt.Chart:
    """Stacked area of GPU-hours by state per time bucket (``analysis.timeline.state_timeline``)."""
    return (
        alt.Chart(timeline.to_pandas())
        .mark_area(interpolate="step-after")
        .encode(
            x=alt.X("bucket:T", title=f"time (UTC, {every} buckets)"),
            y=alt.Y("gpu_hours:Q", stack="zero", title=f"GPU-hours per {every}"),
            color=alt.Color("state:N", scale=_STATE_SCALE, sort=list(STATES), legend=alt.Legend(orient="top")),
            order=alt.Order("order:Q"),
            tooltip=[
                alt.Tooltip("bucket:T", title="from", format="%Y-%m-%d %H:%M"),
                "state:N",
                alt.Tooltip("gpu_hours:Q", format=",.2f"),
            ],
        )
        .properties(height=280)
    )


def hbar(frame: pl.DataFrame, value: str, label: str, title: str, color: str = "#4c78a8") -> alt.Chart:
    """A horizontal bar per row, largest on top."""
    return (
        alt.Chart(frame.to_pandas())
        .mark_bar(color=color)
        .encode(
            x=alt.X(f"{value}:Q", title=title),
            y=alt.Y(f"{label}:N", sort="-x", title=None),
            tooltip=[f"{label}:N", alt.Tooltip(f"{value}:Q", format=",.2f")],
        )
        .properties(height=alt.Step(26))
    )


def gpu_heatmap(cells: pl.DataFrame, every: str) -> alt.Chart:
    """GPU x time, coloured by mean utilization; cells without data are grey (``analysis.timeline.gpu_heatmap``)."""
    data = cells.select(
        "gpu", "gpu_uuid", "gpu_model", "bucket", "bucket_end", "mean_pct", "main_state", "gpu_hours"
    ).to_pandas()
    base = alt.Chart(data).encode(
        x=alt.X("bucket:T", title=f"time (UTC, {every} buckets)"),
        x2="bucket_end:T",
        y=alt.Y("gpu:N", title=None, sort=None, axis=alt.Axis(labelLimit=360, labelOverlap=False, labelFontSize=11)),
        tooltip=[
            "gpu:N",
            "gpu_uuid:N",
            "gpu_model:N",
            alt.Tooltip("bucket:T", title="from", format="%Y-%m-%d %H:%M"),
            alt.Tooltip("mean_pct:Q", title="mean utilization %", format=".1f"),
            alt.Tooltip("main_state:N", title="main state"),
        ],
    )
    # A bucket no sample covers has no cell: the plot's grey background shows through, as does a null mean.
    return (
        base.mark_rect()
        .encode(
            color=alt.condition(
                "datum.mean_pct === null || !isFinite(datum.mean_pct)",
                alt.value(NO_DATA_GREY),
                alt.Color("mean_pct:Q", title="util %", scale=alt.Scale(scheme="viridis", domain=[0, 100])),
            )
        )
        .properties(height=alt.Step(16))
        .configure_view(fill=NO_DATA_GREY, stroke=None)
    )


def mig_layouts(layouts: list[dict[str, Any]], slots: dict[str, int]) -> alt.LayerChart:
    """One row per proposed MIG GPU: its instances as blocks over the GPU's memory slots, labelled by profile."""
    rows = []
    for layout in layouts:
        label = f"{layout['gpu_model']} #{layout['index'] + 1}"
        for p in layout["placements"]:
            who = f"{p['namespace']}/{p['workload']}" if p.get("workload") else "(free)"
            rows.append(
                {
                    "gpu": label,
                    "start": p["start"],
                    "end": p["start"] + p["size"],
                    "profile": p["profile"],
                    "workload": who,
                    "replica": p.get("replica", 0),
                    "mid": p["start"] + p["size"] / 2,
                }
            )
    frame = pl.DataFrame(
        rows,
        schema={
            "gpu": pl.String,
            "start": pl.Int64,
            "end": pl.Int64,
            "profile": pl.String,
            "workload": pl.String,
            "replica": pl.Int64,
            "mid": pl.Float64,
        },
    ).to_pandas()
    width = max(slots.values(), default=8)
    base = alt.Chart(frame).encode(y=alt.Y("gpu:N", title=None, sort=None, axis=alt.Axis(labelLimit=260)))
    blocks = base.mark_bar(stroke="white", strokeWidth=2, cornerRadius=3).encode(
        x=alt.X("start:Q", title="memory slots", scale=alt.Scale(domain=[0, width]), axis=alt.Axis(tickMinStep=1)),
        x2="end:Q",
        color=alt.Color("workload:N", legend=alt.Legend(orient="bottom", columns=3)),
        tooltip=["gpu:N", "profile:N", "workload:N", "replica:Q", "start:Q", "end:Q"],
    )
    labels = base.mark_text(color="white", fontWeight="bold").encode(x="mid:Q", text="profile:N")
    return cast(alt.LayerChart, alt.layer(blocks, labels, height=alt.Step(48)))


def spot_scatter(candidates: pl.DataFrame) -> alt.Chart:
    """Net savings per month against expected interruptions per month, one point per candidate."""
    return (
        alt.Chart(candidates.to_pandas())
        .mark_circle(opacity=0.8)
        .encode(
            x=alt.X("interruptions_per_month:Q", title="expected interruptions per month"),
            y=alt.Y("net_savings_usd_month:Q", title="net savings per month (USD)"),
            size=alt.Size("gpu_hours:Q", title="GPU-hours"),
            color=alt.Color("recommended:N", scale=alt.Scale(domain=[True, False], range=["#2e9e5b", "#9aa5b1"])),
            tooltip=[
                "namespace:N",
                "workload:N",
                "instance_type:N",
                "interruption_risk:N",
                alt.Tooltip("net_savings_usd_month:Q", format="$,.2f"),
                alt.Tooltip("interruption_cost_usd_month:Q", format="$,.2f"),
                "reason:N",
            ],
        )
        .properties(height=320)
    )
