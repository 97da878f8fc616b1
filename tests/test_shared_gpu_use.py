"""A shared GPU as the rest of gpuledger sees it: the simulated fleet's time-sliced GPU, per-pod recommendation and
alert figures that are each holder's share, history that counts a GPU-minute once, and the dashboard pages that
show the split."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from alerts.rules import AlertRules, Conditions, findings
from analysis import conditions, shares
from analysis.recommend import usage
from analysis.states import StateRules
from analysis.units import GIB
from analysis.usage import minute_groups
from analysis.window import Window
from collector.fleet import SHARED_NAMESPACE, SHARED_WORKLOAD, plan
from collector.simulate import FleetTelemetry
from dashboards import context
from gpuledger.cli import main
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing
from tests.conftest import T0, allocation_rows, sample_rows
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES

END = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
WINDOW = Window(T0, T0 + dt.timedelta(hours=1))
APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")


def test_the_simulated_fleet_time_slices_one_gpu_between_two_teams() -> None:
    fleet = plan(64, 2, 42, END)
    assert fleet.shared is not None
    first = fleet.nodes[[n.pool.name for n in fleet.nodes].index("l4-serve") + 1]
    uuid = [u for n in fleet.nodes for u in n.gpu_uuids][fleet.shared.gpu]
    assert uuid == first.gpu_uuids[0], "the first GPU of the time-slicing node"
    allocations = pl.from_arrow(FleetTelemetry(fleet).day(1).allocations)
    assert isinstance(allocations, pl.DataFrame)
    on_gpu = allocations.filter(pl.col("gpu_uuid") == uuid)
    pods = on_gpu.group_by("namespace", "workload").agg(
        pl.len(), pl.col("process_util_pct").null_count(), pl.col("process_fb_used_bytes").min()
    )
    assert dict(pods.select("namespace", "workload").iter_rows()) == {
        "search": "autocomplete",
        SHARED_NAMESPACE: SHARED_WORKLOAD,
    }
    assert set(pods["len"]) == {1440} and set(pods["process_util_pct"]) == {0}
    assert pods.select(pl.col("process_fb_used_bytes").min()).item() > 2 * GIB  # both hold real memory
    assert allocations.filter(pl.col("gpu_uuid") != uuid)["process_util_pct"].null_count() == (
        allocations.height - on_gpu.height
    ), "per-process readings only where the GPU is shared"


def test_the_shared_gpu_is_deterministic_and_leaves_the_other_gpus_alone() -> None:
    def day(fleet_seed: int, shared: bool = True) -> tuple[pa.Table, pa.Table]:
        fleet = plan(64, 2, fleet_seed, END)
        if not shared:
            fleet = dataclasses.replace(fleet, shared=None)
        batch = FleetTelemetry(fleet).day(1)
        return batch.samples, batch.allocations

    a, b = day(7), day(7)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    fleet = plan(64, 2, 7, END)
    assert fleet.shared is not None
    uuid = [u for n in fleet.nodes for u in n.gpu_uuids][fleet.shared.gpu]
    alone = day(7, shared=False)
    others = pl.col("gpu_uuid") != uuid
    with_shared, without = pl.from_arrow(a[0]), pl.from_arrow(alone[0])
    assert isinstance(with_shared, pl.DataFrame) and isinstance(without, pl.DataFrame)
    assert with_shared.filter(others).equals(without.filter(others))
    gpu = with_shared.filter(~others)["util_pct"].sum()
    assert gpu > without.filter(~others)["util_pct"].sum(), "the GPU reads both pods' work"


def shared_lake(lake: Lake, util: float, a: tuple[float, int], b: tuple[float, int], same_workload: bool) -> None:
    """GPU-a held for 10 minutes by two pods, each with one process reading (SM %, memory bytes)."""
    append(lake, GPU_SAMPLES, sample_rows(util=util, fb_used=a[1] + b[1]))
    second = ("team-a", "trainer") if same_workload else ("team-b", "serve")
    pods = (("team-a", "trainer-0", "trainer", 11, a), (*second[:1], f"{second[1]}-1", second[1], 22, b))
    for namespace, pod, workload, pid, (sm, memory) in pods:
        rows = allocation_rows(namespace=namespace, pod=pod, workload=workload)
        n = rows.num_rows
        rows = rows.append_column("pid", pa.array([pid] * n, pa.int64()))
        rows = rows.append_column("process_util_pct", pa.array([sm] * n, pa.float32()))
        rows = rows.append_column("process_fb_used_bytes", pa.array([memory] * n, pa.int64()))
        append(lake, GPU_ALLOCATIONS, rows)
    rollup.refresh(lake, StateRules())


def test_a_pods_device_usage_on_a_shared_gpu_is_its_share(lake: Lake) -> None:
    shared_lake(lake, 80.0, (60.0, 6 * GIB), (20.0, 2 * GIB), same_workload=False)
    got = usage.device_usage(usage.read(lake.scan(GPU_MINUTES), WINDOW)).sort("workload")
    rows = {r["workload"]: r for r in got.iter_rows(named=True)}
    assert rows["trainer"]["minutes"] == pytest.approx(7.5) and rows["serve"]["minutes"] == pytest.approx(2.5)
    assert rows["trainer"]["active_minutes"] == pytest.approx(7.5)
    assert rows["trainer"]["observed_minutes"] == 10 and rows["serve"]["observed_minutes"] == 10
    assert rows["trainer"]["busy_p95"] == pytest.approx(0.6) and rows["serve"]["busy_p95"] == pytest.approx(0.2)
    assert set(got["split_by"]) == {"sm share"}
    assert float(got["minutes"].sum()) == pytest.approx(10.0), "GPU-time adds up to the GPU's"


def test_idle_reclaim_streaks_charge_each_holder_its_memory_share(lake: Lake) -> None:
    shared_lake(lake, 0.0, (0.0, 6 * GIB), (0.0, 2 * GIB), same_workload=False)
    got = usage.idle_streaks(usage.read(lake.scan(GPU_MINUTES), WINDOW), min_minutes=5)
    streaks = {r["workload"]: r for r in got.iter_rows(named=True)}
    assert streaks["trainer"]["minutes"] == 10 and streaks["serve"]["minutes"] == 10
    assert streaks["trainer"]["gpu_minutes"] == pytest.approx(7.5)
    assert streaks["serve"]["gpu_minutes"] == pytest.approx(2.5)
    assert streaks["serve"]["observed_gpu_minutes"] == 10 and streaks["serve"]["split_by"] == "memory share"


def test_idle_alerts_name_every_holder_of_a_shared_gpu_with_its_share(lake: Lake) -> None:
    shared_lake(lake, 0.0, (0.0, 6 * GIB), (0.0, 2 * GIB), same_workload=False)
    minutes = lake.scan(GPU_MINUTES)
    streaks = conditions.idle_streaks(minutes).collect()
    by = {r["workload"]: r for r in streaks.iter_rows(named=True)}
    assert by["trainer"]["hours"] == pytest.approx(10 / 60) and by["serve"]["hours"] == pytest.approx(10 / 60)
    assert by["trainer"]["gpu_hours"] == pytest.approx(7.5 / 60) and by["serve"]["split_by"] == "memory share"
    found = findings(Conditions(idle_streaks=streaks), AlertRules(idle_hours=0.1))["idle_gpu"]
    texts = {f.subject: f.text for f in found}
    assert set(texts) == {"team-a/trainer", "team-b/serve"}
    assert texts["team-b/serve"].endswith("; shared GPU: its share 0.0 GPU-hours, split by memory share")
    assert "its share 0.1 GPU-hours" in texts["team-a/trainer"]


def test_replicas_sharing_a_gpu_do_not_lengthen_its_history(lake: Lake) -> None:
    shared_lake(lake, 80.0, (60.0, 6 * GIB), (20.0, 2 * GIB), same_workload=True)
    got = usage.device_usage(usage.read(lake.scan(GPU_MINUTES), WINDOW))
    assert got.height == 2 and set(got["workload"]) == {"trainer"}
    assert float(got["observed_minutes"].sum()) == pytest.approx(10.0), "each GPU-minute once, not once per pod"
    assert float(got["minutes"].sum()) == pytest.approx(10.0)
    streaks = usage.idle_streaks(usage.read(lake.scan(GPU_MINUTES), WINDOW), min_minutes=1)
    assert streaks.height == 0, "the workload was active"


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest simulated fleet with the time-slicing node (64 GPUs), one day: a Sunday, whose low load leaves the
    shared GPU idle with memory held at times."""
    root = tmp_path_factory.mktemp("shared") / "wh"
    args = ["simulate", "--warehouse", str(root), "--gpus", "64", "--days", "1", "--end", "2026-11-23"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def shared_report(shared_fleet: Path) -> dict[str, Any]:
    env = {k: None for k in os.environ if k.startswith("GPULEDGER_")}
    result = CliRunner(env=env).invoke(main, ["report", "--warehouse", str(shared_fleet), "--format", "json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_a_shared_gpu_does_not_inflate_the_fleets_gpu_hours(shared_fleet: Path, shared_report: dict[str, Any]) -> None:
    minutes = Lake(shared_fleet).scan(GPU_MINUTES).collect()
    assert set(minutes.filter(pl.col("holders") > 1)["split_method"]) == {"sm share", "memory share"}
    start, end = (dt.datetime.fromisoformat(shared_report["window"][k]) for k in ("start", "end"))
    in_window = minutes.filter(pl.col("ts").is_between(start, end, closed="left"))
    silent = sum(n["silent_gpu_hours"] for n in shared_report["partly_reporting_nodes"])
    assert shared_report["fleet"]["gpu_hours"] == pytest.approx(in_window.height / 60.0 + silent, abs=1e-3) == 64 * 24
    assert sum(shared_report["states"].values()) == pytest.approx(64 * 24, abs=1e-3)
    teams = {t["team"]: t for t in shared_report["cost_allocation"]["by_team"]}
    assert teams[SHARED_NAMESPACE]["split_by"] == teams["search"]["split_by"] == "memory share, sm share"
    groups = minute_groups(Lake(shared_fleet).scan(GPU_MINUTES), Window(start, end), []).collect()
    split = groups.filter(pl.col("split_method").is_not_null())
    shared_minutes = in_window.filter(pl.col("split_method").is_not_null()).height
    assert split["minutes"].sum() == 2 * shared_minutes, "minutes: one per holder of a shared minute"
    assert float(split["gpu_hours"].sum()) == pytest.approx(shared_minutes / 60.0), "GPU-hours: each minute once"


@pytest.fixture
def app(settings: Settings) -> Iterator[Callable[[Path], AppTest]]:
    def make(warehouse: Path) -> AppTest:
        context.configure(warehouse, Viewing(settings))
        return AppTest.from_file(APP, default_timeout=60)

    yield make
    context.reset()


def page(at: AppTest, name: str) -> AppTest:
    at.run()
    at.switch_page(f"views/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_idle_waste_and_teams_pages_show_the_split(app: Callable[[Path], AppTest], shared_fleet: Path) -> None:
    board = page(app(shared_fleet), "idle_waste").dataframe[0].value
    split = dict(zip(board["workload"], board["split_by"], strict=True))
    assert "memory share" in split[SHARED_WORKLOAD] and split["nightly-embeddings"] == "not shared"
    teams = page(app(shared_fleet), "teams").dataframe[0].value
    by_team = dict(zip(teams["team"], teams["split_by"], strict=True))
    assert by_team[SHARED_NAMESPACE] == "memory share, sm share" and by_team["(idle: unallocated)"] == "not shared"


def test_data_health_says_how_many_gpu_minutes_were_split_and_how(
    app: Callable[[Path], AppTest], shared_fleet: Path, shared_report: dict[str, Any]
) -> None:
    at = page(app(shared_fleet), "data_health")
    start, end = (dt.datetime.fromisoformat(shared_report["window"][k]) for k in ("start", "end"))
    split = (
        Lake(shared_fleet)
        .scan(GPU_MINUTES)
        .filter(pl.col("ts").is_between(start, end, closed="left") & pl.col("split_method").is_not_null())
        .group_by("split_method")
        .len()
        .collect()
    )
    counts = dict(split.iter_rows())
    note = next(i.value for i in at.info if "were held by several pods" in i.value)
    assert note.startswith(f"{sum(counts.values()):,} GPU-minutes were held by several pods or processes")
    for method, n in counts.items():
        assert f"{n:,} by {method}" in note
    table = next(d.value for d in at.dataframe if "split_method" in d.value.columns)
    assert dict(zip(table["split_method"], table["gpu_minutes"], strict=True)) == pytest.approx(counts)


def test_gpus_drill_down_names_the_split(app: Callable[[Path], AppTest], shared_fleet: Path) -> None:
    shared = Lake(shared_fleet).scan(GPU_MINUTES).filter(pl.col("holders") > 1)
    (node,) = shared.select(pl.col("node").unique()).collect()["node"].to_list()
    at = page(app(shared_fleet), "gpus")
    at.selectbox(key="gpu_node").set_value(node).run()
    assert not at.exception
    held = next(d.value for d in at.dataframe if "split_by" in d.value.columns)
    reranker = held[held["workload"] == SHARED_WORKLOAD]
    assert set(reranker["split_by"]) == {"sm share", "memory share"}
    assert shares.METHODS[0] in set(held["split_by"])


def test_the_markdown_report_names_the_split_beside_idle_workloads_and_teams(shared_fleet: Path) -> None:
    env = {k: None for k in os.environ if k.startswith("GPULEDGER_")}
    result = CliRunner(env=env).invoke(main, ["report", "--warehouse", str(shared_fleet)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = "| team | namespaces | GPU-hours | used | held idle | shared idle | total | shared split by | priced by |"
    assert header in lines
    recsys = next(line for line in lines if line.startswith("| recsys | recsys |"))
    assert recsys.split(" | ")[-2] == "memory share, sm share"  # the last cell: the price-source footnote markers
    idle_header = next(line for line in lines if line.startswith("| namespace | workload | idle GPU-hours"))
    assert idle_header.endswith("| priced by | shared split by |")
