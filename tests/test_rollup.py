"""The minute rollup pins the time definitions: coverage, max_gap, lifetimes, holders, and one state per minute."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from polars.testing import assert_frame_equal

from analysis.states import StateRules
from analysis.units import GIB
from tests.conftest import T0, allocation_rows, sample_rows
from warehouse import rollup
from warehouse.ingest import append, conform
from warehouse.lake import Lake
from warehouse.maintenance import compact
from warehouse.rollup import RollupConfig
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES

RULES = StateRules()
DEFAULT = RollupConfig()


def minutes(lake: Lake, rules: StateRules = RULES, config: RollupConfig = DEFAULT) -> pl.DataFrame:
    rollup.refresh(lake, rules, config)
    return lake.scan(GPU_MINUTES).collect().sort("gpu_uuid", "ts")


def expected(states: list[str], start: dt.datetime = T0) -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": [start + dt.timedelta(minutes=i) for i in range(len(states))], "state": states},
        schema={"ts": pl.Datetime("us", "UTC"), "state": pl.String},
    )


def test_a_gap_longer_than_max_gap_is_no_data_never_idle(lake: Lake) -> None:
    # Samples every 60 s at minutes 0-2 and 8-9; max_gap = 2 x 60 s. The sample at 2:00 covers [2:00, 4:00):
    # minute 3 is observed, minutes 4-7 are no_data, even though the GPU reads 0% around them.
    append(lake, GPU_SAMPLES, sample_rows(minutes=[0, 1, 2, 8, 9], util=[50, 50, 50, 0, 0]))  # type: ignore[arg-type]
    got = minutes(lake)
    want = expected(["active"] * 4 + ["no_data"] * 4 + ["unallocated"] * 2)
    assert_frame_equal(got.select("ts", "state"), want)
    assert got["samples"].to_list() == [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    assert got.filter(pl.col("state") == "no_data")["util_mean_pct"].null_count() == 4


def test_states_per_case(lake: Lake) -> None:
    # One GPU per case, ten minutes each.
    cases = {
        "GPU-active": dict(util=50.0),
        "GPU-held-mem": dict(util=0.0, fb_used=2 * GIB),
        "GPU-held-nomem": dict(util=0.0, fb_used=GIB // 2),
        "GPU-free": dict(util=0.0, fb_used=GIB // 2),
        "GPU-sm-busy": dict(util=0.0, sm_active=0.5),
        "GPU-sm-idle": dict(util=90.0, sm_active=0.01, fb_used=2 * GIB),
    }
    for gpu, kwargs in cases.items():
        append(lake, GPU_SAMPLES, sample_rows(gpu=gpu, **kwargs))  # type: ignore[arg-type]
        if gpu != "GPU-free":
            append(lake, GPU_ALLOCATIONS, allocation_rows(gpu=gpu, pod=f"pod-{gpu.lower()}"))
    got = minutes(lake).group_by("gpu_uuid").agg(pl.col("state").unique()).sort("gpu_uuid")
    assert dict(got.iter_rows()) == {
        "GPU-active": ["active"],
        "GPU-free": ["unallocated"],
        "GPU-held-mem": ["idle_held"],
        "GPU-held-nomem": ["idle_allocated"],
        "GPU-sm-busy": ["active"],
        "GPU-sm-idle": ["idle_held"],
    }


def test_holders_follow_the_same_coverage_rule(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(util=0.0, fb_used=4 * GIB))
    append(lake, GPU_ALLOCATIONS, allocation_rows(minutes=range(5)))
    got = minutes(lake)
    assert_frame_equal(got.select("ts", "state"), expected(["idle_held"] * 6 + ["unallocated"] * 4))
    assert got["workload"].to_list() == ["trainer"] * 6 + [None] * 4
    assert got["holders"].to_list() == [1] * 6 + [0] * 4


def test_minute_aggregates_of_ten_second_samples(lake: Lake) -> None:
    utils = [float(10 * (i % 6)) for i in range(12)]  # 0..50 twice
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(12), interval_s=10, util=utils))
    got = minutes(lake)
    assert got["samples"].to_list() == [6, 6]
    assert got["util_mean_pct"].to_list() == [25.0, 25.0]
    assert got["util_max_pct"].to_list() == [50.0, 50.0]
    assert got["energy_j"].to_list() == [300.0 * 60, 300.0 * 60]


def test_coverage_crosses_midnight(lake: Lake) -> None:
    start = dt.datetime(2026, 11, 2, 23, 58, tzinfo=dt.UTC)
    append(lake, GPU_SAMPLES, sample_rows(minutes=[0, 1, 5, 6], start=start))  # type: ignore[arg-type]
    got = minutes(lake)
    assert_frame_equal(
        got.select("ts", "state"),
        expected(["active", "active", "active", "no_data", "no_data", "active", "active"], start),
    )
    assert {Lake.partition_of(p.relative_to(lake.root)).date for p in lake.parts(GPU_MINUTES)} == {
        dt.date(2026, 11, 2),
        dt.date(2026, 11, 3),
    }


def test_a_configured_interval_overrides_the_inferred_one(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(minutes=[0, 5]))  # type: ignore[arg-type]
    assert minutes(lake)["state"].to_list() == ["active"] * 6  # inferred interval 300 s: the gap is covered
    tight = minutes(lake, config=RollupConfig(expected_interval_s=60))
    assert tight["state"].to_list() == ["active", "active", "no_data", "no_data", "no_data", "active"]


def test_states_sum_to_lifetime_gpu_time(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(gpu="GPU-a", minutes=range(0, 300, 3)))
    append(lake, GPU_SAMPLES, sample_rows(gpu="GPU-b", minutes=range(100, 200)))
    got = minutes(lake)
    per_gpu = dict(got.group_by("gpu_uuid").len().iter_rows())
    assert per_gpu == {"GPU-a": 298, "GPU-b": 100}  # first to last sample, one row per minute
    assert got.filter(pl.col("state").is_null()).height == 0


def test_refresh_recomputes_only_what_changed(lake: Lake) -> None:
    day1 = sample_rows(minutes=range(0, 60))
    day3 = sample_rows(minutes=range(0, 60), start=T0 + dt.timedelta(days=2))
    append(lake, GPU_SAMPLES, day1)
    append(lake, GPU_SAMPLES, day3)
    first = rollup.refresh(lake, RULES)
    assert (first.computed, first.fresh) == (3, 0)
    assert rollup.refresh(lake, RULES).computed == 0
    assert rollup.is_fresh(lake, RULES)
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(60, 70), start=T0 + dt.timedelta(days=2)))
    assert not rollup.is_fresh(lake, RULES)
    again = rollup.refresh(lake, RULES)
    assert again.computed == 1  # day 3 only (day 2's lifetime clip is unchanged)
    stricter = rollup.refresh(lake, StateRules(active_threshold_pct=60.0))
    assert stricter.computed == 3
    states = lake.scan(GPU_MINUTES).collect()["state"]
    assert set(states) == {
        "unallocated",
        "no_data",
    }  # 50% utilization is below a 60% threshold; day 2 is a gap


def test_each_partition_has_one_part_after_refreshes(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows())
    for threshold in (5.0, 50.0, 70.0):
        rollup.refresh(lake, StateRules(active_threshold_pct=threshold))
    assert len(lake.parts(GPU_MINUTES)) == 1


def test_mig_instances_roll_up_separately(lake: Lake) -> None:
    whole = sample_rows(gpu="GPU-p", util=0.0)
    for mig_id, util in ((1, 80.0), (2, 0.0)):
        part = sample_rows(gpu="GPU-p", util=util).append_column("mig_instance_id", pa.array([mig_id] * 10, pa.int32()))
        append(lake, GPU_SAMPLES, part)
    append(lake, GPU_SAMPLES, whole)
    got = (
        minutes(lake)
        .group_by("mig_instance_id")
        .agg(pl.col("state").first(), pl.len())
        .sort("mig_instance_id", nulls_last=True)
    )
    assert got.rows() == [(1, "active", 10), (2, "unallocated", 10), (None, "unallocated", 10)]


def test_lifetimes_from_part_footers_equal_a_full_scan(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(gpu="GPU-a", minutes=range(0, 2000, 5)))
    append(lake, GPU_SAMPLES, sample_rows(gpu="GPU-b", minutes=range(100, 200), cluster="c2"))
    append(lake, GPU_SAMPLES, sample_rows(gpu="GPU-a", minutes=range(2000, 2100)))
    # A part written by another tool into the same layout has no footer summary: it is scanned instead.
    foreign = lake.root / "gpu_samples" / "date=2026-11-05" / "cluster=c1" / "part-foreign.parquet"
    foreign.parent.mkdir(parents=True)
    rows = conform(GPU_SAMPLES, sample_rows(gpu="GPU-c", minutes=range(3), start=T0 + dt.timedelta(days=3)))
    pq.write_table(rows, foreign)
    compact(lake, target_rows=10_000)

    def scanned() -> pl.DataFrame:
        return (
            lake.scan(GPU_SAMPLES)
            .group_by("cluster", "gpu_uuid", pl.col("mig_instance_id").fill_null(-1).alias("mig_id"))
            .agg(pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
            .sort("cluster", "gpu_uuid", "mig_id")
            .collect()
        )

    assert_frame_equal(rollup.gpu_lifetimes(lake), scanned())
    assert rollup.gpu_lifetimes(lake).height == 3
