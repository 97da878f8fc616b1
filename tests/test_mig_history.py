"""MIG demand that is a demand (issue 13, point 5): compute demand never exceeds what a workload holds, too little
history claims no profile, and every reason a workload does not fit is a sentence a user can act on.

Hand-made minute frames (``tests.mig_minutes``), the real H200 capture run through the NVML sampler, the warehouse
and the minute rollup (as ``tests/test_h200_phases.py`` does), and the recommendation builder on a hand-made fleet.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from analysis.mig.assumptions import InvalidMigAssumption, MigAssumptions
from analysis.mig.demand import combine_demand_parts, demand, demand_from_parts, demand_parts
from analysis.mig.savings import MigFit, mig_fit
from analysis.states import StateRules
from collector.nvml import NvmlSampler
from collector.rows import combine
from gpuledger.settings import Settings
from tests.mig_minutes import CATALOG, H100, H200, P5_GPU_HOUR, WEEK, bucket_end, fit_all, margin, minutes, one
from tests.nvml_standin import CapturedNVML
from tests.recommend_inputs import Fleet, recommendations_of
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.rollup import RollupConfig
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
SLOW = 60.0
"""The capture's ~55 s of 100 ms samples, slowed 60x: ~55 minutes, the pod holding the GPU for ~49 of them."""


def _reason(result: MigFit, workload: str) -> str:
    reason = one(result, workload)["reason"]
    assert isinstance(reason, str)
    return reason


def test_one_hour_of_history_claims_no_profile() -> None:
    """An H100 workload seen for 60 minutes (5%, 5 GiB: a week of it fits 1g.10gb) beside two week-long ones that
    pack onto one GPU: the new one gets no profile, is not packed and frees nothing."""
    rows = minutes("new", H100, 60, lambda i: 0.05, 5.0)
    rows += minutes("a", H100, WEEK, lambda i: 0.05, 5.0) + minutes("b", H100, WEEK, lambda i: 0.05, 5.0)
    result = fit_all(rows)
    new = one(result, "new")
    assert (new["profile"], new["fits"], new["history_hours"]) == (None, False, pytest.approx(1.0))
    assert new["reason"] == (
        "not enough history (1.0 h of 24 h): MIG fit claims a slice only from 24 h of observed minutes, as a shorter "
        "history can miss the daily peak; look again once it has run 23.0 h more, or lower mig_min_history_hours"
    )
    # its demand is still shown, and stays within the one GPU it holds
    assert new["compute_demand"] == pytest.approx(bucket_end(0.05) * margin(1 / 24))
    assert new["compute_held"] == 1.0
    placed = {p.workload for layout in result.layouts for p in layout.placements}
    assert placed == {"a", "b"}
    assert (result.gpus_now, result.gpus_needed, result.gpus_freed) == (2, 1, 1)
    assert result.savings_usd_month == pytest.approx(P5_GPU_HOUR * 730)
    report = result.to_report()
    assert report["assumptions"]["min_history_hours"] == 24.0
    (row,) = [w for w in report["workloads"] if w["workload"] == "new"]
    assert row["history_hours"] == 1.0 and row["reason"].startswith("not enough history (1.0 h of 24 h): ")


def test_a_short_history_whose_memory_already_rules_out_every_slice_says_so() -> None:
    """An hour at 92 GiB on an H200: 101.2 GiB needed against the 69.75 GiB of its largest slice. No profile is
    claimed, and the sentence adds that more history cannot make it fit."""
    result = fit_all(minutes("big", H200, 60, lambda i: 0.05, 92.0))
    assert (one(result, "big")["profile"], one(result, "big")["fits"]) == (None, False)
    assert _reason(result, "big") == (
        "not enough history (1.0 h of 24 h): MIG fit claims a slice only from 24 h of observed minutes, as a shorter "
        "history can miss the daily peak; look again once it has run 23.0 h more, or lower mig_min_history_hours. "
        "Its peak memory so far x 1.1 margin, 101.2 GiB, is already more than the 69.8 GiB of the largest MIG slice "
        "on H200 (3g.71gb), and more history can only raise it, so it is likely to keep needing a whole GPU"
    )


def test_the_history_needed_is_a_setting() -> None:
    """With ``min_history`` 1 h the same hour is enough: p95 0.052 (the end of 5%'s bucket) x margin 4.75 = 0.247 of
    a GPU, more than 2g.20gb's 32/132 = 0.242, so 3g.40gb; with 0 every history is; a day of minutes is exactly the
    default 24 h, and a week-like margin's 1g.10gb."""
    rows = minutes("new", H100, 60, lambda i: 0.05, 5.0)
    assert one(fit_all(rows, min_history=dt.timedelta(hours=1)), "new")["profile"] == "3g.40gb"
    assert one(fit_all(rows, min_history=dt.timedelta(0)), "new")["fits"]
    assert one(fit_all(minutes("day", H100, 1440, lambda i: 0.05, 5.0)), "day")["profile"] == "1g.10gb"
    assert Settings(mig_min_history_hours=6).mig_assumptions.min_history == dt.timedelta(hours=6)
    assert Settings().mig_assumptions.min_history == dt.timedelta(hours=24)
    with pytest.raises(InvalidMigAssumption, match=r"the history needed must be >= 0 hours"):
        MigAssumptions(min_history=dt.timedelta(hours=-1))


def test_a_saturated_one_gpu_pod_with_65_minutes_needs_at_most_one_gpu() -> None:
    """The issue's case: a one-GPU pod at 100% for 65 minutes. Confidence 65/1440 day -> margin 1 + 0.15 x (1 +
    1440/65) = 4.47, so the percentile x margin is ~4.5 GPUs (the issue saw 4.50); the pod holds one GPU, so its
    demand is 1.0."""
    rows = minutes("hot", H100, 65, lambda i: 1.0, 5.0)
    result = fit_all(rows)
    hot = one(result, "hot")
    assert margin(65 / 1440) == pytest.approx(4.4731, abs=1e-4)
    assert (hot["compute_demand"], hot["compute_held"], hot["util_pct_p95"]) == (1.0, 1.0, 100.0)
    assert (hot["profile"], hot["fits"]) == (None, False)
    assert _reason(result, "hot").startswith("not enough history (1.1 h of 24 h): ")
    # with any history allowed, the capped demand still needs the whole GPU, and the sentence says so and why
    anyway = fit_all(rows, min_history=dt.timedelta(0))
    assert one(anyway, "hot")["compute_demand"] == 1.0
    assert (one(anyway, "hot")["profile"], one(anyway, "hot")["fits"]) == ("7g.80gb", False)
    assert _reason(anyway, "hot") == (
        "needs the whole GPU: its p95 compute is 100.0% of the GPU, x 4.47 margin (1.1 h of history) = 4.47 of a GPU, "
        "capped at the 1.00 of a GPU it holds, more than the 0.48 of a GPU of the largest MIG slice on H100 80GB "
        "HBM3 (4g.40gb). Keep it on a whole GPU, or bring its p95 compute under 10.8% of the GPU to fit 4g.40gb."
    )


def test_two_gpus_held_at_once_each_need_at_most_one() -> None:
    """Demand is per replica: a workload saturating two GPUs for a week needs 1.0 of a GPU for each."""
    rows = minutes("pair", H100, WEEK, lambda i: 1.0, 10.0, uuid="GPU-1")
    rows += minutes("pair", H100, WEEK, lambda i: 1.0, 10.0, uuid="GPU-2")
    row = one(fit_all(rows), "pair")
    assert (row["replicas"], row["compute_demand"], row["compute_held"]) == (2, 1.0, 1.0)


def test_a_mig_instance_caps_demand_at_its_share() -> None:
    """A week saturating a 3g.40gb instance of an H100 (60 of 132 SMs): p95 0.4545 x 1.17 would be 0.53 of a GPU,
    more than the instance could ever show; demand is the 0.4545 it holds, which 3g.40gb fits."""
    rows = minutes("sliced", H100, WEEK, lambda i: 1.0, 20.0, mig_profile="3g.40gb", mig_instance_id=1)
    row = one(fit_all(rows), "sliced")
    assert row["compute_held"] == pytest.approx(60 / 132)
    assert row["compute_demand"] == pytest.approx(60 / 132)
    assert (row["profile"], row["fits"]) == ("3g.40gb", True)


@pytest.fixture(scope="module")
def h200_minutes(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The real H200 capture (tests/fixtures/nvml-h200) through the NVML sampler on the stand-in, the warehouse and
    the minute rollup, slowed 60x; a pod holds the GPU from ``idle_context`` on (the saturated phase included), as
    the kubelet reports it. The capture's own process readings are left out: who holds a minute is the holder
    rule's business (tests/test_h200_phases.py), here only what the pod's minutes measure matters."""
    capture = Path(__file__).parent / "fixtures" / "nvml-h200"
    trace = [json.loads(line) for line in (capture / "nvml_trace.jsonl").read_text().splitlines() if line]
    marks = [json.loads(line) for line in (capture / "phases.jsonl").read_text().splitlines() if line]
    first = trace[0]["ts"]
    now = [T0]
    sampler = NvmlSampler(
        cluster="lab", node="h200-node", nvml=CapturedNVML(capture, lambda: now[0]), clock=lambda: now[0]
    )
    sampler.open()
    readings = []
    for row in trace[:-1]:
        now[0] = T0 + dt.timedelta(seconds=row["ts"] - first + 0.001)
        readings.append(sampler.read())
    rows = combine(readings)
    stretch = pl.col("ts").cast(pl.Int64).sub(int(T0.timestamp() * 1e6)).mul(SLOW).cast(pl.Int64)
    stretched = (pl.lit(int(T0.timestamp() * 1e6)) + stretch).cast(pl.Datetime("us", "UTC")).alias("ts")
    captured = pl.from_arrow(rows.samples)
    assert isinstance(captured, pl.DataFrame)
    samples = captured.with_columns(stretched)
    held_from = T0 + dt.timedelta(seconds=(marks[0]["ts"] - first) * SLOW)
    pod_ts = samples.filter(pl.col("ts") >= held_from)["ts"]
    pod = pl.DataFrame(
        {
            "ts": pod_ts,
            "cluster": "lab",
            "node": "h200-node",
            "gpu_uuid": samples["gpu_uuid"][0],
            "namespace": "research",
            "pod": "bench-h200-0",
            "container": "main",
            "workload": "bench-h200",
            "source": "nvml",
        }
    )
    lake = Lake(tmp_path_factory.mktemp("h200") / "wh", create=True)
    append(lake, GPU_SAMPLES, samples.to_arrow())
    append(lake, GPU_ALLOCATIONS, pod.to_arrow())
    rollup.refresh(lake, StateRules(), RollupConfig(expected_interval_s=0.1 * SLOW))
    return lake.scan(GPU_MINUTES).collect()


def test_the_real_h200_capture_with_under_an_hour_claims_no_profile(h200_minutes: pl.DataFrame) -> None:
    """~49 minutes held, a quarter of them saturated (~97%) and 60 GiB held: against the real H200 profile table
    (its capture's 3g.71gb holds 69.75 GiB >= 66 GiB), without the cap the short-history margin (~30x) would ask
    for ~5 GPUs. Demand is the one GPU it holds; the answer is not enough history, and nothing is packed."""
    result = mig_fit(h200_minutes.lazy(), prices={H200: 10.0}, price_sources={H200: "test price"})
    row = one(result, "bench-h200")
    assert row["gpu_model"] == H200 and CATALOG.gpu(H200).profile("3g.71gb").memory_gib == 69.75
    assert 0.7 < row["history_hours"] < 1.0
    assert row["util_pct_p95"] > 90 and row["util_pct_p95"] / 100 * margin(row["confidence"]) > 4
    assert (row["compute_demand"], row["compute_held"]) == (1.0, 1.0)
    assert 60 <= row["memory_demand_gib"] <= 69.75
    assert (row["profile"], row["fits"]) == (None, False)
    assert row["reason"].startswith(f"not enough history ({row['history_hours']:.1f} h of 24 h): ")
    assert result.layouts == () and result.gpus_now == 0 and result.savings_usd_month == 0.0
    # the report's path (daily parts added up) gives the same demand
    histogram, devices = demand_parts(h200_minutes.lazy())
    hist, held = combine_demand_parts(histogram.collect(), devices.collect(), None, MigAssumptions())
    assert demand_from_parts(hist, held).row(0, named=True) == demand(h200_minutes.lazy()).row(0, named=True)


def test_the_real_h200_capture_with_history_allowed_says_why_in_a_sentence(h200_minutes: pl.DataFrame) -> None:
    result = mig_fit(
        h200_minutes.lazy(),
        prices={H200: 10.0},
        price_sources={H200: "test price"},
        assumptions=MigAssumptions(min_history=dt.timedelta(0)),
    )
    reason = _reason(result, "bench-h200")
    assert reason.startswith("needs the whole GPU: its p95 compute is ")
    assert "capped at the 1.00 of a GPU it holds, more than the " in reason
    assert (
        "of the largest MIG slice on H200 (4g.71gb). Keep it on a whole GPU, or bring its p95 compute under " in reason
    )
    assert "memory" not in reason  # 66 GiB fits 3g.71gb: only compute rules the slices out


def test_a_short_history_exports_no_mig_layout() -> None:
    """Two small H100 replicas (5%, 8 GiB) pack onto one GPU's 1g.10gb slices with a day of history, and the
    exported text cites the README's definition; with one hour the same fleet gets no `mig` recommendation, so no
    mig-parted config and no patch."""
    fleets = {}
    for hours in (24, 1):
        f = Fleet(hours)
        f.node("n1", "p5.48xlarge", "spot", H100, 8, "h100-serve")
        for i in range(2):
            f.gpu("n1", f"GPU-{i}", util=5.0, mem_gib=8, total_gib=80, pod=("serve", f"embed-{i}", "embed", "embed"))
        fleets[hours] = f.inputs()
    (rec,) = recommendations_of("mig", fleets[24])
    configmap, patch = rec.manifests
    assert "the layout has a valid placement: README.md, Definitions, MIG fit)" in configmap.comments[0]
    assert not any("analysis/mig.py" in c for m in rec.manifests for c in m.comments)  # a module that is gone
    assert patch.comments[0].endswith("fit 1g.10gb, measured over 24.0 h of history.")
    assert recommendations_of("mig", fleets[1]) == []
    (row,) = fleets[1].mig_fit["workloads"]
    assert (row["profile"], row["fits"]) == (None, False)
    assert row["reason"].startswith("not enough history (1.0 h of 24 h): ")
    assert fleets[1].mig_fit["layouts"] == [] and fleets[1].mig_fit["savings_usd_month"] == 0.0


def test_every_reason_is_a_sentence_with_what_to_do() -> None:
    """Each way a workload can fail to fit, side by side: each reason says what was measured (or is missing), what
    it was held against, and what to do."""
    rows = minutes("short", H100, 30, lambda i: 0.1, 2.0)
    rows += minutes("memory", H200, WEEK, lambda i: 0.05, 92.0)
    rows += minutes("compute", H100, WEEK, lambda i: 0.5, 5.0)
    rows += minutes("blind", H100, WEEK, lambda i: None, 1.0, util_mean_pct=None)
    rows += minutes("nomem", H100, WEEK, lambda i: 0.1, None)
    rows += minutes("l4", "NVIDIA L4", WEEK, lambda i: 0.1, 4.0)
    rows += minutes("unnamed", None, WEEK, lambda i: 0.1, 4.0)
    result = fit_all(rows)
    actions = {
        "short": "look again once it has run 23.5 h more, or lower mig_min_history_hours",
        "memory": "Keep it on a whole GPU, or bring its peak memory under 63.4 GiB to fit 3g.71gb.",
        "compute": "Keep it on a whole GPU, or bring its p95 compute under 41.4% of the GPU to fit 4g.40gb.",
        "blind": "export DCGM_FI_PROF_SM_ACTIVE or DCGM_FI_DEV_GPU_UTIL from dcgm-exporter, or run the node agent",
        "nomem": "export DCGM_FI_DEV_FB_USED from dcgm-exporter, or run the node agent on its nodes",
        "l4": "it cannot be cut into MIG slices; to share it, use time-slicing instead",
        "unnamed": "have dcgm-exporter report modelName, or run the node agent, on its nodes",
    }
    measured = {
        "short": "not enough history (0.5 h of 24 h)",
        "memory": "its peak memory is 92.0 GiB, x 1.1 margin = 101.2 GiB, more than the 69.8 GiB of the largest",
        "compute": "its p95 compute is 51.0% of the GPU, x 1.17 margin (168.0 h of history) = 0.60 of a GPU, more",
        "blind": "no utilization readings in the window",
        "nomem": "no memory readings in the window",
        "l4": "GPU model NVIDIA L4 is not MIG-capable",
        "unnamed": "the telemetry names no gpu_model",
    }
    for workload in actions:
        reason = _reason(result, workload)
        assert measured[workload] in reason and actions[workload] in reason, (workload, reason)
        assert "(compute:" not in reason and "sub-GPU profile" not in reason  # the old terse forms
    assert not result.workloads["fits"].any() and result.layouts == ()
