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
from warehouse.lake import SUMMARIES_DIR, Lake
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
    shutil.rmtree(root / SUMMARIES_DIR)
    at = open_page(app(root), "overview")
    assert not [w.value for w in at.warning if not w.value.startswith("Stale list prices:")]
    assert any("daily summaries" in i.value and "gpuledger warehouse rollup" in i.value for i in at.info)
    shown = metrics(at)
    for label, value in expected(report)["overview"].items():
        assert shown.get(label) == value, (label, shown)
    assert not (root / SUMMARIES_DIR).exists(), "the dashboard wrote to the warehouse"


def test_dashboard_command_is_documented_and_binds_localhost(cli: Callable[..., Result]) -> None:
    result = cli("dashboard", "--help")
    assert result.exit_code == 0
    assert "--host" in result.output and "127.0.0.1" in result.output


def shown_tables(at: AppTest) -> list[tuple[Any, dict[str, Any]]]:
    """Every table on the page: its data and its column config (label, type and format per column)."""
    return [(df.value, json.loads(df.proto.columns or "{}")) for df in at.dataframe]


@pytest.mark.parametrize("page", PAGES)
def test_every_table_has_human_columns_and_no_none_cell(
    page: str, app: Callable[[Path | None], AppTest], sim_warehouse: Path
) -> None:
    at = open_page(app(sim_warehouse), page)
    if page == "gpus":  # the drill-down into one node adds its GPUs and who held them
        at.selectbox(key="gpu_node").select_index(1).run()
        assert not at.exception
    for frame, config in shown_tables(at):
        for name in frame.columns:
            label = (config.get(name) or {}).get("label")
            assert label and "_" not in label, (page, name, label)
            column = frame[name]
            assert not column.isna().any(), (page, label, "an empty cell shows as None")
            assert not (column.astype(str) == "").any(), (page, label, "an empty cell shows nothing")


def test_idle_cost_by_namespace_names_unallocated_time(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    assert any(row["namespace"] is None for row in report["idle_waste"]["by_namespace"]), "the fixture has some"
    at = open_page(app(sim_warehouse), "idle_waste")
    by_namespace = at.dataframe[-1].value
    assert any(str(n).startswith("(unallocated") for n in by_namespace["namespace"])
    assert all(str(u).startswith("recommendations?") for u in by_namespace["fix"])


def test_teams_lines_add_up_to_the_spend_shown(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    at = open_page(app(sim_warehouse), "teams")
    for mode in ("separate", "shared"):
        at.radio(key="idle_mode").set_value(mode).run()
        cents = sum(round(float(v) * 100) for v in at.dataframe[0].value["total_cost_usd"])
        assert cents == round(report["fleet"]["cost_usd"] * 100), mode
        assert any(f"Totals add up to {fmt.usd(report['fleet']['cost_usd'])}." in c.value for c in at.caption)


def test_cents_adding_up_moves_only_rounding_cents() -> None:
    assert fmt.cents_adding_up([10.004, 20.004, 0.004], 30.01) == ([10.0, 20.01, 0.0], 1)
    assert fmt.cents_adding_up([1.0, 2.0], 3.0) == ([1.0, 2.0], 0)
    assert fmt.cents_adding_up([1.0, 2.0], 4.0) == ([1.0, 2.0], 0), "a dollar off is not rounding"


def test_mig_workloads_that_fit_come_first(app: Callable[[Path | None], AppTest], sim_warehouse: Path) -> None:
    at = open_page(app(sim_warehouse), "mig_fit")
    fits = [str(v) for v in at.dataframe[-1].value["fits"]]
    assert fits == sorted(fits, key=lambda v: v not in ("True", "yes"))
    assert "not MIG-capable" in set(at.dataframe[-1].value["profile"])


def test_overview_breaks_the_fleet_down_by_cluster(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    at = open_page(app(sim_warehouse), "overview")
    by_cluster = next(frame for frame, _ in shown_tables(at) if "cluster" in frame.columns)
    clusters = at.multiselect(key="f_cluster").options
    assert len(clusters) > 1, "the fixture has several clusters"
    assert sorted(by_cluster["cluster"]) == sorted(clusters)
    assert round(float(by_cluster["cost_usd"].sum()), 2) == pytest.approx(report["fleet"]["cost_usd"], abs=0.05)
    first = by_cluster.iloc[0]
    at.multiselect(key="f_cluster").select(first["cluster"]).run()
    assert metrics(at)["Spend"] == fmt.usd(first["cost_usd"])


def test_a_waste_links_to_what_removes_it_and_back(
    app: Callable[[Path | None], AppTest], sim_warehouse: Path, report: dict[str, Any]
) -> None:
    at = open_page(app(sim_warehouse), "overview")
    top = report["idle_waste"]["by_workload"][0]
    link = next(p.proto for p in at.get("page_link") if p.proto.label.startswith("What removes the top waste"))
    assert link.page == "recommendations"
    assert link.query_string == f"namespace={top['namespace']}&workload={top['workload']}"
    wasters = next(frame for frame, _ in shown_tables(at) if "fix" in frame.columns)
    assert wasters["fix"][0] == f"recommendations?{link.query_string}"

    at.query_params.update({"namespace": top["namespace"], "workload": top["workload"]})
    at.switch_page("views/recommendations.py").run()
    assert not at.exception
    focus = " ".join(i.value for i in at.info)
    assert f"{top['namespace']}/{top['workload']}" in focus
    back = [p.proto for p in at.get("page_link")]
    assert any(p.label == "Show every recommendation" for p in back)
    evidence = next(p for p in back if p.label == "See the evidence on its page")
    assert evidence.page in ("idle_waste", "mig_fit", "spot", "gpus")
    ranked = next(frame for frame, _ in shown_tables(at) if "evidence" in frame.columns)
    assert {u.split("?")[0] for u in ranked["evidence"]} <= {"idle_waste", "mig_fit", "spot", "gpus"}


def test_a_recommendation_matches_the_waste_it_targets_or_changes() -> None:
    from dashboards import links

    idle = {"target": {"namespace": "ml", "workload": "train", "cluster": "c"}, "workloads": []}
    pool = {"target": {"namespace": None, "workload": None, "node_group": "h100"}, "workloads": [["ml", "train"]]}
    assert links.matches(idle, links.fix_params("ml", "train"))
    assert links.matches(pool, links.fix_params("ml", "train")), "a spot pool that moves the workload"
    assert not links.matches(idle, links.fix_params("ml", "other"))
    assert links.matches(pool, links.fix_params(None, None)) and not links.matches(idle, links.fix_params(None, None))
    assert links.evidence_url("mig", {}) == "mig_fit"
    assert links.evidence_url("idle-reclaim", {"namespace": "ml", "workload": "train"}) == "idle_waste?q=train"
