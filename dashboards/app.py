"""The gpuledger dashboard: ``gpuledger dashboard --warehouse DIR``.

This script runs on every interaction: it finds the warehouse, reads the chosen window (cached per warehouse
version), applies the sidebar filters, leaves the result in the session for the page, and runs the page.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import streamlit as st

from analysis.errors import AnalysisError
from analysis.filters import Filters
from dashboards import context, data, fmt
from dashboards.source import FleetView, History
from warehouse.errors import WarehouseError
from warehouse.lake import Lake

VIEWS = Path(__file__).resolve().parent / "views"
# The page icon is a file the dashboard serves itself: for a `:material/...:` page icon Streamlit's front end fetches
# the picture from fonts.gstatic.com, which an air-gapped cluster cannot reach (an emoji it draws locally).
ICON = Path(__file__).resolve().parent / "icon.png"
PAGES = [
    ("overview.py", "Overview", ":material/dashboard:"),
    ("idle_waste.py", "Idle waste", ":material/hourglass_empty:"),
    ("teams.py", "Teams", ":material/groups:"),
    ("gpus.py", "GPUs", ":material/memory:"),
    ("mig_fit.py", "MIG fit", ":material/grid_view:"),
    ("spot.py", "Spot", ":material/savings:"),
    ("recommendations.py", "Recommendations", ":material/checklist:"),
    ("data_health.py", "Data health", ":material/monitor_heart:"),
]


def help_page(title: str, message: str, root: Path | None) -> None:
    """What to do when there is nothing to show: the one-line reason and the commands that fix it."""
    where = str(root) if root else "DIR"
    st.title("gpuledger")
    st.subheader(title)
    st.info(message)
    st.markdown("Fill a warehouse, then reload this page:")
    st.code(
        f"gpuledger simulate --warehouse {where}          # a simulated fleet, in seconds\n"
        f"gpuledger collect  --warehouse {where}          # this node's GPUs through NVML\n"
        f"gpuledger scrape   --warehouse {where} --prometheus URL --start -7d\n"
        f"gpuledger dashboard --warehouse {where}",
        language="bash",
    )
    st.stop()


def window_bounds(choice: str, hist: History, report_days: float) -> tuple[str | None, str | None]:
    """Start and end (ISO) of a window choice; (None, None) is the report's default window."""
    newest = hist.newest_minute
    if choice == "report" or newest is None:
        return None, None
    end = newest + dt.timedelta(minutes=1)
    if choice == "all":
        first = hist.first_sample or newest
        return first.replace(second=0, microsecond=0).isoformat(), end.isoformat()
    days = {"1d": 1, "3d": 3, "7d": 7, "30d": 30}[choice]
    return (end - dt.timedelta(days=days)).isoformat(), end.isoformat()


def sidebar_window(hist: History, report_days: float) -> tuple[str | None, str | None]:
    choices = {
        "report": f"Last {report_days:g} days (report default)",
        "1d": "Last 24 hours",
        "3d": "Last 3 days",
        "7d": "Last 7 days",
        "30d": "Last 30 days",
        "all": "Whole history",
        "custom": "Custom dates",
    }
    choice = st.sidebar.selectbox("Time window", list(choices), format_func=choices.__getitem__, key="window")
    if choice != "custom" or hist.newest_minute is None:
        return window_bounds(choice, hist, report_days)
    first = (hist.first_sample or hist.newest_minute).date()
    last = hist.newest_minute.date()
    picked = st.sidebar.date_input("Dates (UTC)", value=(first, last), min_value=first, max_value=last, key="dates")
    if not isinstance(picked, tuple) or len(picked) != 2:
        st.sidebar.caption("Pick a first and a last day.")
        return window_bounds("report", hist, report_days)
    start = dt.datetime.combine(picked[0], dt.time(), dt.UTC)
    end = dt.datetime.combine(picked[1], dt.time(), dt.UTC) + dt.timedelta(days=1)
    return start.isoformat(), end.isoformat()


def sidebar_filters(view: FleetView) -> Filters:
    groups = view.inputs.groups

    def options(column: str) -> list[str]:
        return sorted(v for v in groups[column].unique().to_list() if v is not None)

    return Filters.of(
        clusters=st.sidebar.multiselect("Cluster", options("cluster"), key="f_cluster", placeholder="all clusters"),
        namespaces=st.sidebar.multiselect(
            "Namespace", options("namespace"), key="f_namespace", placeholder="all namespaces"
        ),
        gpu_models=st.sidebar.multiselect("GPU model", options("gpu_model"), key="f_model", placeholder="all models"),
    )


def main() -> None:
    st.set_page_config(page_title="gpuledger", page_icon=str(ICON), layout="wide")
    served = context.served()
    root = served.warehouse if served else None
    if served is None or root is None:
        help_page(
            "No warehouse",
            "No warehouse given: start the dashboard with `gpuledger dashboard --warehouse DIR` "
            "(or set `warehouse` in gpuledger.toml).",
            None,
        )
        return
    source = served.source
    settings_key = source.key
    try:
        lake = Lake(root)
        version = lake.version()
        hist = data.history(str(root), version, settings_key, source)
    except (WarehouseError, AnalysisError) as exc:
        help_page("Nothing to show yet", str(exc), root)
        return
    st.sidebar.markdown(f"**gpuledger** · `{root.name}`")
    start, end = sidebar_window(hist, source.report_days)
    try:
        window = source.window_of(start, end, hist.newest_minute)
        view = data.fleet_view(
            str(root), version, window.start.isoformat(), window.end.isoformat(), settings_key, source
        )
    except (WarehouseError, AnalysisError) as exc:
        if not hist.rollup_fresh:
            st.warning(stale_text(root))
        help_page("Nothing in this window", str(exc), root)
        return
    filters = sidebar_filters(view)
    st.sidebar.caption(
        f"Samples from {fmt.when(hist.first_sample)} to {fmt.when(hist.last_sample)}. Warehouse version {version}."
    )
    if not hist.rollup_fresh:
        st.warning(stale_text(root))
    elif not hist.summaries_fresh:
        st.info(
            "The rollup's daily summaries are missing or stale, so pages read the minutes (slower, same numbers): "
            f"run `gpuledger warehouse rollup --warehouse {root}` to store them."
        )
    st.session_state[data.KEY] = data.page(root, version, source, hist, view, filters)
    pages = [
        st.Page(str(VIEWS / name), title=title, icon=icon, default=i == 0)
        for i, (name, title, icon) in enumerate(PAGES)
    ]
    try:
        st.navigation(pages).run()
    finally:  # a page that stops early (st.stop) has been drawn too
        context.rendered()


def stale_text(root: Path) -> str:
    return (
        "The per-minute rollup is behind the samples, so the newest data is not shown yet. The dashboard never "
        f"writes to the warehouse: run `gpuledger warehouse rollup --warehouse {root}` to bring it up to date."
    )


main()
