"""MIG fit (analysis.mig.fit, through analysis.mig.savings.mig_fit): golden fits worked by hand, and properties."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.mig.savings import WORKLOAD_COLUMNS
from tests.mig_minutes import (
    CATALOG,
    H100,
    H200,
    WEEK,
    assert_no_nan,
    bucket_end,
    fit_all,
    margin,
    minutes,
    one,
    utilizations,
)


def test_p95_20pct_with_15gib_on_h100_fits_2g_20gb() -> None:
    """A week of minutes: 9 in 10 at 10% of the GPU, 1 in 10 at 20%; 15 GiB held. By hand:

    p95 = end of the bucket holding 0.20 = 0.05 x (1.02^82 - 1) = 0.20362 (the 20% minutes weigh ~10% > 5%);
    confidence = min(7 days, 10080 / 1440) = 7, margin = 1 + 0.15 x (1 + 1/7) = 1.1714 -> compute 0.2385;
    memory = 15 x 1.1 = 16.5 GiB.
    H100 profiles, smallest first (real GFD memory/SMs; 132 SMs in all):
      1g.10gb:  9.75 GiB < 16.5 -> fails on memory (and 16/132 = 0.121 < 0.2385 on compute)
      1g.20gb: 19.6 GiB holds it, but 26/132 = 0.197 < 0.2385 -> fails on compute
      2g.20gb: 19.6 GiB >= 16.5 and 32/132 = 0.2424 >= 0.2385 -> fits.
    """
    result = fit_all(minutes("svc", H100, WEEK, lambda i: 0.2 if i % 10 == 0 else 0.1, 15.0))
    row = one(result, "svc")
    p95 = 0.05 * (1.02**82 - 1)
    assert row["util_pct_p95"] == pytest.approx(100 * p95) == pytest.approx(20.362, abs=1e-3)
    assert row["confidence"] == pytest.approx(7.0)
    assert row["compute_demand"] == pytest.approx(p95 * (1 + 0.15 * 8 / 7)) == pytest.approx(0.2385, abs=1e-4)
    assert row["memory_demand_gib"] == pytest.approx(16.5)
    assert (row["profile"], row["fits"], row["reason"]) == ("2g.20gb", True, None)
    gpu = CATALOG.gpu(H100)
    assert gpu.profile("1g.10gb").memory_gib == 9.75 < 16.5
    assert gpu.profile("1g.20gb").memory_gib > 16.5 and gpu.profile("1g.20gb").compute_fraction < row["compute_demand"]
    assert gpu.profile("2g.20gb").compute_fraction == 32 / 132 >= row["compute_demand"]
    assert row["peak_mem_gib"] == 15.0 and row["gpu_hours"] == pytest.approx(168.0)
    assert_no_nan(result)


def test_memory_bound_workloads() -> None:
    """Light compute (5%) but 30 GiB on an H100: 33 GiB needed, 2g.20gb has 19.6 -> 3g.40gb (39.4 GiB).
    92 GiB on an H200: 101.2 GiB needed, the largest sub-GPU profile (3g/4g.71gb) has 69.75 -> the whole GPU."""
    result = fit_all(
        minutes("embed", H100, WEEK, lambda i: 0.05, 30.0) + minutes("big", H200, WEEK, lambda i: 0.05, 92.0)
    )
    embed = one(result, "embed")
    assert embed["memory_demand_gib"] == pytest.approx(33.0)
    assert embed["compute_demand"] == pytest.approx(bucket_end(0.05) * margin(7))
    assert embed["compute_demand"] < 0.07
    assert (embed["profile"], embed["fits"]) == ("3g.40gb", True)
    big = one(result, "big")
    assert (big["profile"], big["fits"]) == ("7g.141gb", False)
    assert big["reason"] == (
        "needs the whole GPU: its peak memory is 92.0 GiB, x 1.1 margin = 101.2 GiB, more than the 69.8 GiB of the "
        "largest MIG slice on H200 (3g.71gb). Keep it on a whole GPU, or bring its peak memory under 63.4 GiB to fit "
        "3g.71gb."
    )


def test_compute_bound_workloads() -> None:
    """5 GiB each on H100s. p95 40%: 0.40036 x 1.1714 = 0.469 > 3g.40gb's 60/132 = 0.455, <= 4g.40gb's 64/132 =
    0.485 -> 4g.40gb. p95 50%: 0.5100 x 1.1714 = 0.597 > 0.485 -> the whole GPU."""
    result = fit_all(
        minutes("train", H100, WEEK, lambda i: 0.40, 5.0) + minutes("heavy", H100, WEEK, lambda i: 0.50, 5.0)
    )
    train = one(result, "train")
    assert train["compute_demand"] == pytest.approx(bucket_end(0.40) * margin(7)) == pytest.approx(0.469, abs=1e-3)
    assert (train["profile"], train["fits"]) == ("4g.40gb", True)
    heavy = one(result, "heavy")
    demand = bucket_end(0.50) * margin(7)
    assert (heavy["profile"], heavy["fits"]) == ("7g.80gb", False)
    assert f"= {demand:.2f} of a GPU," in heavy["reason"]
    # 64/132 = 0.485 of a GPU over the 1.1714 margin: p95 compute under 41.4% fits 4g.40gb
    assert heavy["reason"] == (
        "needs the whole GPU: its p95 compute is 51.0% of the GPU, x 1.17 margin (168.0 h of history) = 0.60 of a "
        "GPU, more than the 0.48 of a GPU of the largest MIG slice on H100 80GB HBM3 (4g.40gb). Keep it on a whole "
        "GPU, or bring its p95 compute under 41.4% of the GPU to fit 4g.40gb."
    )


def test_l4_workload_is_not_mig_capable(fixtures: Path) -> None:
    prom = (fixtures / "dcgm-exporter/l4_aws_full_help.prom").read_text()
    (model,) = set(re.findall(r'modelName="([^"]+)"', prom))
    result = fit_all(minutes("infer", model, 600, lambda i: 0.1, 4.0))
    row = one(result, "infer")
    assert (row["profile"], row["fits"], row["reason"]) == (
        None,
        False,
        "GPU model NVIDIA L4 is not MIG-capable: it cannot be cut into MIG slices; to share it, use time-slicing "
        "instead",
    )
    assert result.layouts == () and result.gpus_now == 0 and result.savings_usd_month == 0.0
    assert_no_nan(result)


def test_unknown_and_missing_gpu_models_say_so_and_never_nan() -> None:
    rows = minutes("a", "NVIDIA Quantum Q1", 60, lambda i: 0.1, 1.0) + minutes("b", None, 60, lambda i: 0.1, 1.0)
    result = fit_all(rows)
    assert one(result, "a")["reason"].startswith("GPU model 'NVIDIA Quantum Q1' is not in the MIG catalog")
    assert one(result, "b")["reason"] == (
        "GPU model unknown: the telemetry names no gpu_model, so MIG fit is not assessed; have dcgm-exporter report "
        "modelName, or run the node agent, on its nodes"
    )
    assert not result.workloads["fits"].any()
    assert_no_nan(result)


def test_missing_readings_say_so() -> None:
    result = fit_all(
        minutes("blind", H100, 60, lambda i: None, 1.0, util_mean_pct=None)
        + minutes("nomem", H100, 60, lambda i: 0.1, None)
        + minutes("nan", H100, 60, lambda i: float("nan"), 1.0, util_mean_pct=12.0)
    )
    blind = one(result, "blind")
    assert (blind["fits"], blind["reason"], blind["confidence"]) == (
        False,
        "no utilization readings in the window: MIG fit sizes a slice from sm_active or util_pct and this "
        "workload's GPUs reported neither; export DCGM_FI_PROF_SM_ACTIVE or DCGM_FI_DEV_GPU_UTIL from dcgm-exporter, "
        "or run the node agent on its nodes",
        0,
    )
    assert blind["compute_demand"] is None and blind["util_pct_p95"] is None
    assert one(result, "nomem")["reason"] == (
        "no memory readings in the window: MIG fit needs the peak framebuffer memory used (fb_used) and this "
        "workload's GPUs reported none; export DCGM_FI_DEV_FB_USED from dcgm-exporter, or run the node agent on its "
        "nodes"
    )
    # a NaN sm_active is no reading: util_mean_pct (12%) stands in
    assert one(result, "nan")["util_pct_p95"] == pytest.approx(100 * bucket_end(0.12))
    assert_no_nan(result)


def test_an_empty_window_gives_an_empty_result() -> None:
    result = fit_all([])
    assert result.workloads.is_empty() and result.workloads.columns == list(WORKLOAD_COLUMNS)
    assert result.by_model.is_empty()
    assert (result.gpus_now, result.gpus_needed, result.savings_usd_month, result.layouts) == (0, 0, 0.0, ())
    report = result.to_report()
    assert report["workloads"] == [] and report["savings_usd_month"] == 0.0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(utilizations, st.floats(0.5, 75.0), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_a_higher_percentile_never_picks_a_smaller_profile(
    utils: list[float], mem_gib: float, p1: float, p2: float
) -> None:
    low, high = sorted((p1, p2))
    rows = minutes("w", H100, 3 * 1440, lambda i: utils[i % len(utils)], mem_gib)
    a, b = one(fit_all(rows, percentile=low), "w"), one(fit_all(rows, percentile=high), "w")
    assert a["util_pct_p95"] <= b["util_pct_p95"]
    gpu = CATALOG.gpu(H100)
    assert gpu.rank(a["profile"]) <= gpu.rank(b["profile"])
    assert not (b["fits"] and not a["fits"])
