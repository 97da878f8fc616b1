"""MIG demand on shared GPUs (``analysis.mig.demand``): each holder of a shared minute gets it with its utilization x
its share, history counts device-minutes, peak memory stays the GPU's; the stored daily parts do the same."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from analysis import daily
from analysis.mig.demand import combine_demand_parts, demand, demand_from_parts, demand_parts
from analysis.units import GIB
from analysis.window import Window
from gpuledger import jobs
from gpuledger.reporting import report_inputs
from gpuledger.settings import Settings
from tests.conftest import T0 as ROLLUP_T0
from tests.conftest import allocation_rows, sample_rows
from tests.mig_minutes import H100, WEEK, bucket_end, frame, minutes
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES


def holder(namespace: str, workload: str, pod: str, share: float) -> dict[str, Any]:
    return {"namespace": namespace, "pod": pod, "container": "main", "workload": workload, "share": share}


def shared(n: int, util: float, mem_gib: float, *holders: dict[str, Any], uuid: str = "GPU-shared") -> list[dict]:
    """``n`` active minutes of one H100 several pods held, split by SM share; the row names its first holder."""
    first = holders[0]
    return minutes(
        first["workload"],
        H100,
        n,
        lambda i: util,
        mem_gib,
        uuid=uuid,
        namespace=first["namespace"],
        pod=first["pod"],
        holders=len(holders),
        split_method="sm share",
        holder_shares=list(holders),
    )


def by_workload(result: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["workload"]: row for row in result.iter_rows(named=True)}


def test_each_holder_of_a_shared_gpu_demands_its_share_of_the_utilization() -> None:
    """A week of one H100 at 80% that two pods share 3:1 by SM share: the trainer's p95 is the bucket of 0.6, the
    server's of 0.2, each is charged its share of the 168 GPU-hours, and both keep the GPU's peak memory."""
    rows = shared(WEEK, 0.8, 30.0, holder("ml", "trainer", "trainer-0", 0.75), holder("web", "serve", "serve-0", 0.25))
    got = by_workload(demand(frame(rows)))
    assert set(got) == {"trainer", "serve"}
    for workload, share in (("trainer", 0.75), ("serve", 0.25)):
        row = got[workload]
        assert row["util_pct_p95"] == pytest.approx(100 * bucket_end(0.8 * share))
        assert row["gpu_hours"] == pytest.approx(168 * share)
        assert (row["minutes"], row["replicas"], row["history_hours"]) == (WEEK, 1, pytest.approx(168.0))
        assert row["peak_mem_gib"] == pytest.approx(30.0)
        assert row["compute_held"] == 1.0
    assert got["trainer"]["gpu_hours"] + got["serve"]["gpu_hours"] == pytest.approx(168.0)


def test_two_replicas_on_one_gpu_are_two_replicas_not_twice_the_history() -> None:
    """Two replicas of one workload time-sliced on one GPU for a day: a day of history (not two), two replicas,
    each at half the GPU's 80%, and the day's 24 GPU-hours between them."""
    rows = shared(1440, 0.8, 10.0, holder("ml", "svc", "svc-0", 0.5), holder("ml", "svc", "svc-1", 0.5))
    (row,) = demand(frame(rows)).iter_rows(named=True)
    assert (row["minutes"], row["replicas"]) == (1440, 2)
    assert row["history_hours"] == pytest.approx(24.0)
    assert row["gpu_hours"] == pytest.approx(24.0)
    assert row["util_pct_p95"] == pytest.approx(100 * bucket_end(0.4))


def test_unshared_workloads_are_unchanged_by_a_shared_gpu_beside_them() -> None:
    alone = minutes("embed", H100, WEEK, lambda i: 0.05 + 0.001 * (i % 50), 8.0)
    alone += minutes("embed", H100, WEEK, lambda i: 0.07, 8.0, uuid="GPU-embed-2", pod="embed-1")
    beside = shared(600, 0.8, 30.0, holder("ml", "trainer", "trainer-0", 0.6), holder("web", "serve", "serve-0", 0.4))
    with_shared = demand(frame(alone + beside)).filter(pl.col("workload") == "embed")
    assert_frame_equal(demand(frame(alone)), with_shared)


def test_daily_parts_of_shared_minutes_add_up_to_the_windows_demand() -> None:
    """Two days cut at midnight and added up (``combine_demand_parts``) give the single pass's answer."""
    rows = shared(2 * 1440, 0.8, 10.0, holder("ml", "svc", "svc-0", 0.7), holder("ml", "svc", "svc-1", 0.3))
    rows += shared(
        2 * 1440, 0.5, 20.0, holder("ml", "svc", "svc-2", 0.4), holder("web", "serve", "serve-0", 0.6), uuid="GPU-b"
    )
    whole = frame(rows)
    midnight = rows[0]["ts"] + dt.timedelta(days=1)
    days = [whole.filter(pl.col("ts") < midnight), whole.filter(pl.col("ts") >= midnight)]
    parts = [demand_parts(day) for day in days]
    histograms = pl.concat([h.collect() for h, _ in parts])
    devices = pl.concat([d.collect() for _, d in parts])
    assumptions = daily.DailySummaries.for_assumptions(Settings().mig_assumptions).mig_devices.assumptions
    hist, held = combine_demand_parts(histograms, devices, None, assumptions)
    assert_frame_equal(demand_from_parts(hist, held, assumptions), demand(whole, assumptions))
    svc = by_workload(demand(whole, assumptions))["svc"]
    assert (svc["replicas"], svc["minutes"]) == (3, 2 * 1440)  # svc-0 and svc-1 on one GPU, svc-2 on another


def two_pods(lake: Lake) -> None:
    """GPU-a (an H200 at 90%) held by two pods for 10 minutes, their processes at 60% and 30% SM."""
    append(lake, GPU_SAMPLES, sample_rows(util=90.0, fb_used=8 * GIB))
    for namespace, pod, pid, sm in (("team-a", "trainer-0", 11, 60.0), ("team-b", "serve-0", 22, 30.0)):
        rows = allocation_rows(namespace=namespace, pod=pod, workload=pod.removesuffix("-0"))
        n = rows.num_rows
        rows = rows.append_column("pid", pa.array([pid] * n, pa.int64()))
        rows = rows.append_column("process_util_pct", pa.array([sm] * n, pa.float32()))
        rows = rows.append_column("process_fb_used_bytes", pa.array([4 * GIB] * n, pa.int64()))
        append(lake, GPU_ALLOCATIONS, rows)


def stored_fit(lake: Lake, settings: Settings) -> dict[str, dict[str, Any]]:
    """The report's MIG fit of the whole day, from the stored daily parts."""
    day = ROLLUP_T0.replace(hour=0, minute=0, second=0, microsecond=0)
    inputs = report_inputs(lake, settings, Window(day, day + dt.timedelta(days=1)))
    assert inputs.mig_fit is not None
    return {w["workload"]: w for w in inputs.mig_fit["workloads"]}


def test_stored_mig_parts_split_a_shared_gpu_and_older_parts_are_recomputed(
    lake: Lake, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MIG demand parts the rollup stores carry the split (the trainer had 2/3 of the H200's 90%, the server
    1/3); parts stored by the previous MIG demand version are stale, so the next refresh stores them anew."""
    two_pods(lake)
    with monkeypatch.context() as patch:
        patch.setattr(daily, "MIG_DEMAND_VERSION", "1")
        rollup.refresh(lake, settings.state_rules, settings.rollup, summaries=settings.summaries.all())
        assert rollup.is_fresh(lake, settings.state_rules, settings.rollup, settings.summaries.all())
    assert not rollup.is_fresh(lake, settings.state_rules, settings.rollup, settings.summaries.all())
    jobs.refresh(lake, settings)
    assert rollup.is_fresh(lake, settings.state_rules, settings.rollup, settings.summaries.all())
    got = stored_fit(lake, settings)
    assert got["trainer"]["util_pct_p95"] == pytest.approx(round(100 * bucket_end(0.9 * 2 / 3), 1), abs=0.05)
    assert got["serve"]["util_pct_p95"] == pytest.approx(round(100 * bucket_end(0.9 * 1 / 3), 1), abs=0.05)
    assert got["trainer"]["gpu_hours"] + got["serve"]["gpu_hours"] == pytest.approx(10 / 60, abs=0.01)
    assert got["trainer"]["peak_mem_gib"] == got["serve"]["peak_mem_gib"] == pytest.approx(8.0)
