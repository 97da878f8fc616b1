"""Every dashboard page, run with Streamlit's AppTest on a real simulated warehouse: no exception, and the headline
numbers equal those of `gpuledger report --format json` on the same warehouse."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from streamlit.testing.v1 import AppTest

from dashboards import context, fmt
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing
from warehouse import rollup
from warehouse.lake import Lake
from warehouse.schema import GPU_MINUTES

APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")


@pytest.fixture(scope="module")
def report(sim_warehouse: Path) -> dict[str, Any]:
    from click.testing import CliRunner

    from gpuledger.cli import main

    env = {k: None for k in os.environ if k.startswith("GPULEDGER_")}
    result = CliRunner(env=env).invoke(main, ["report", "--warehouse", str(sim_warehouse), "--format", "json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


@pytest.fixture
def app(settings: Settings) -> Iterator[Callable[[Path | None], AppTest]]:
    def make(warehouse: Path | None) -> AppTest:
        context.configure(warehouse, Viewing(settings))
        return AppTest.from_file(APP, default_timeout=60)

    yield make
    context.reset()


def open_page(at: AppTest, name: str) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if name != "overview":
        at.switch_page(f"views/{name}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def expected(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    fleet, waste, util = report["fleet"], report["idle_waste"], report["utilization"]
    mig, spot = report["mig_fit"], report["spot"]
    return {
        "overview": {
            "Spend": fmt.usd(fleet["cost_usd"]),
            "Idle waste": fmt.usd(waste["cost_usd"]),
            "Mean utilization": fmt.pct(util["mean_pct"]),
            "GPUs": fmt.count(fleet["gpus"]),
            "GPU-hours": fmt.hours(fleet["gpu_hours"]),
        },
        "idle_waste": {
            "Idle waste": fmt.usd(waste["cost_usd"]),
            "Idle GPU-hours": fmt.hours(waste["gpu_hours"]),
            "Share of spend": fmt.share(waste["share_of_cost"]),
        },
        "teams": {"Spend": fmt.usd(fleet["cost_usd"])},
        "gpus": {
            "GPUs": fmt.count(fleet["gpus"]),
            "GPU-hours": fmt.hours(fleet["gpu_hours"]),
            "Mean utilization": fmt.pct(util["mean_pct"]),
            "Allocated": fmt.share(util["allocation_rate"]),
        },
        "mig_fit": {
            "GPUs now": fmt.count(mig["gpus_now"]),
            "GPUs needed": fmt.count(mig["gpus_needed"]),
            "Savings per month": fmt.usd(mig["savings_usd_month"]),
        },
        "spot": {"Net savings per month": fmt.usd(spot["savings_usd_month"])},
        "recommendations": {},
        "data_health": {"No-data GPU-hours": fmt.hours(report["states"]["no_data"])},
    }


PAGES = ["overview", "idle_waste", "teams", "gpus", "mig_fit", "spot", "recommendations", "data_health"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_the_reports_numbers(
    page: str, app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    at = open_page(app(sim_warehouse), page)
    shown = metrics(at)
    for label, value in expected(report)[page].items():
        assert shown.get(label) == value, (page, label, shown)
    assert any(report["window"]["start"][:10] in c.value for c in at.caption), "the window is shown"


def test_recommendations_page_counts_what_recommending_ranks(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, settings: Settings
) -> None:
    import datetime as dt

    from gpuledger import recommending

    found = recommending.recommendations(
        Lake(sim_warehouse), settings, start=None, end=None, now=dt.datetime.now(dt.UTC), refresh=False
    )
    at = open_page(app(sim_warehouse), "recommendations")
    shown = metrics(at)
    assert shown["Recommendations"] == fmt.count(len(found.items))
    plan = recommending.plan(found)
    assert shown["Plan savings per month"] == fmt.usd(
        sum(a.savings_usd_month for c in plan.clusters for a in c.applied)
    )


def test_idle_waste_leaderboard_holds_the_report_rows_with_evidence(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    at = open_page(app(sim_warehouse), "idle_waste")
    board = at.dataframe[0].value
    top = report["idle_waste"]["by_workload"]
    assert list(board["workload"][: len(top)]) == [row["workload"] for row in top]
    assert {"idle_held_hours", "peak_mem_gib", "last_active", "price_source"} <= set(board.columns)
    at.text_input(key="idle_search").input(top[0]["namespace"]).run()
    assert set(at.dataframe[0].value["namespace"]) == {top[0]["namespace"]}


def test_namespace_filter_narrows_every_number(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    row = report["utilization"]["by_namespace"][0]
    at = open_page(app(sim_warehouse), "overview")
    at.multiselect(key="f_namespace").select(row["namespace"]).run()
    assert not at.exception
    shown = metrics(at)
    assert shown["Spend"] == fmt.usd(row["cost_usd"])
    assert shown["GPU-hours"] == fmt.hours(row["gpu_hours"])
    assert any(f"namespace: {row['namespace']}" in c.value for c in at.caption)


def test_teams_toggle_keeps_the_total_and_offers_a_csv(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    at = open_page(app(sim_warehouse), "teams")
    lines = at.dataframe[0].value
    assert "(idle: unallocated)" in set(lines["team"])
    at.radio(key="idle_mode").set_value("shared").run()
    assert not at.exception
    shared = at.dataframe[0].value
    assert "(idle: unallocated)" not in set(shared["team"])
    assert round(float(shared["total_cost_usd"].sum()), 2) == pytest.approx(report["fleet"]["cost_usd"], abs=0.05)
    assert at.get("download_button"), "a CSV download is offered"


def test_empty_and_missing_warehouses_show_a_helpful_page(
    app: Callable[[Path | None], AppTest], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    Lake(empty, create=True)
    at = app(empty)
    at.run()
    assert not at.exception
    assert any("holds no GPU samples yet" in i.value for i in at.info)
    missing = app(tmp_path / "nowhere")
    missing.run()
    assert not missing.exception
    assert any("nowhere" in i.value for i in missing.info)


def test_stale_rollup_shows_a_notice_and_nothing_is_written(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, tmp_path: Path
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    lake = Lake(root)
    lake.parts(GPU_MINUTES)[0].unlink()  # the rollup now misses a partition
    before = sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    at = open_page(app(root), "overview")
    assert any("gpuledger warehouse rollup" in w.value for w in at.warning)
    after = sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    assert after == before, "the dashboard wrote to the warehouse"


def test_without_daily_summaries_the_numbers_hold_and_a_note_says_why_it_is_slower(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, tmp_path: Path, report: dict[str, Any]
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    shutil.rmtree(root / rollup.SUMMARIES_DIR)
    at = open_page(app(root), "overview")
    assert not [w.value for w in at.warning if not w.value.startswith("Stale list prices:")]
    assert any("daily summaries" in i.value and "gpuledger warehouse rollup" in i.value for i in at.info)
    shown = metrics(at)
    for label, value in expected(report)["overview"].items():
        assert shown.get(label) == value, (label, shown)
    assert not (root / rollup.SUMMARIES_DIR).exists(), "the dashboard wrote to the warehouse"


def test_dashboard_command_is_documented_and_binds_localhost(cli: Callable[..., Result]) -> None:
    result = cli("dashboard", "--help")
    assert result.exit_code == 0
    assert "--host" in result.output and "127.0.0.1" in result.output
