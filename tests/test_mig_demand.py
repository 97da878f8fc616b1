"""MIG demand (analysis.mig.demand, analysis.mig.assumptions): which minutes count, decay, confidence, the
assumptions' checks, and properties."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from analysis.errors import AnalysisError
from analysis.mig.assumptions import InvalidMigAssumption, MigAssumptions
from analysis.mig.demand import demand
from analysis.mig.savings import mig_fit
from tests.mig_minutes import (
    H100,
    H200,
    P5_GPU_HOUR,
    T0,
    WEEK,
    bucket_end,
    fit_all,
    frame,
    minutes,
    one,
    utilizations,
)


def test_only_observed_held_minutes_count() -> None:
    base = minutes("svc", H100, WEEK, lambda i: 0.1, 5.0)
    noise = minutes("svc", H100, 600, lambda i: 1.0, 79.0, start=T0 + dt.timedelta(days=8), state="no_data")
    noise += [{**row, "workload": None} for row in minutes("svc", H100, 600, lambda i: 1.0, 79.0, uuid="GPU-x")]
    clean, noisy = fit_all(base).workloads, fit_all(base + noise).workloads
    assert_frame_equal(clean, noisy)


def test_minutes_on_a_mig_instance_count_as_its_share_of_the_gpu() -> None:
    """sm_active on a 3g.40gb instance is relative to the instance: 0.5 of it is 0.5 x 60/132 = 0.227 of the GPU."""
    rows = minutes("onmig", H100, WEEK, lambda i: 0.5, 10.0, mig_profile="3g.40gb", mig_instance_id=1)
    row = one(fit_all(rows), "onmig")
    assert row["util_pct_p95"] == pytest.approx(100 * bucket_end(0.5 * 60 / 132))
    assert row["gpu_hours"] == pytest.approx(168 * 60 / 132)
    # 0.2300 x 1.1714 = 0.269: more than 2g.20gb's 0.242, so 3g.40gb
    assert row["compute_demand"] == pytest.approx(0.2694, abs=1e-4)
    assert row["profile"] == "3g.40gb"


def test_recent_minutes_weigh_more() -> None:
    """A day at 80% then a day at 10%. With a 24 h half-life the older day weighs (1/2 - 1/4) / (1 - 1/4) = 1/3
    of the total, so p60 lands on 10%; with a half-life of ~forever both days weigh 1/2 and p60 lands on 80%."""
    rows = minutes("shift", H100, 2 * 1440, lambda i: 0.8 if i < 1440 else 0.1, 5.0)
    decayed = one(fit_all(rows, percentile=0.6), "shift")
    flat = one(fit_all(rows, percentile=0.6, half_life=dt.timedelta(days=100_000)), "shift")
    assert decayed["util_pct_p95"] == pytest.approx(100 * bucket_end(0.1))
    assert flat["util_pct_p95"] == pytest.approx(100 * bucket_end(0.8))
    assert one(fit_all(rows, percentile=0.7), "shift")["util_pct_p95"] == pytest.approx(100 * bucket_end(0.8))


def test_short_histories_get_a_bigger_margin() -> None:
    """Confidence = min(span days, minutes / 1440): half an hour -> 1/48 -> margin 1 + 0.15 x 49 = 8.35, so a
    10% workload needs 0.85 of a GPU (and, with half an hour of the 24 h needed, is claimed no profile); with a week
    of the same minutes it needs 0.119 and fits 1g.10gb."""
    result = fit_all(minutes("new", H100, 30, lambda i: 0.1, 2.0) + minutes("old", H100, WEEK, lambda i: 0.1, 2.0))
    new, old = one(result, "new"), one(result, "old")
    assert new["confidence"] == pytest.approx(1 / 48) and old["confidence"] == pytest.approx(7)
    assert new["compute_demand"] == pytest.approx(bucket_end(0.1) * 8.35)
    assert (new["profile"], old["profile"]) == (None, "1g.10gb")
    assert new["reason"].startswith("not enough history (0.5 h of 24 h): ")
    # sparse minutes over a long span: the count, not the span, bounds confidence
    sparse = fit_all(minutes("sparse", H100, 0, lambda i: 0.1, 2.0, offsets=list(range(0, WEEK, 60))))
    assert one(sparse, "sparse")["confidence"] == pytest.approx(168 / 1440)


def test_bad_assumptions_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidMigAssumption, match=r"percentile must be in \(0, 1\], got 95"):
        MigAssumptions(percentile=95)
    with pytest.raises(InvalidMigAssumption, match="margins are multipliers >= 1"):
        MigAssumptions(compute_margin=0.15)
    assert issubclass(InvalidMigAssumption, AnalysisError)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4 * 1440), min_size=1, max_size=400, unique=True),
    st.data(),
)
def test_more_history_never_lowers_confidence(offsets: list[int], data: st.DataObject) -> None:
    offsets.sort()
    kept = [o for o in offsets if data.draw(st.booleans())] or offsets[:1]
    conf = {}
    for label, steps in (("some", kept), ("all", offsets)):
        rows = minutes("w", H100, 0, lambda i: 0.3, 4.0, offsets=steps)
        conf[label] = demand(frame(rows))["confidence"][0]
    assert 0 < conf["some"] <= conf["all"]


@settings(max_examples=15, deadline=None)
@given(utilizations, st.integers(0, 2**32 - 1))
def test_demand_is_deterministic(utils: list[float], seed: int) -> None:
    rows = minutes("a", H100, 2 * 1440, lambda i: utils[i % len(utils)], 7.0)
    rows += minutes("b", H200, 1440, lambda i: utils[-1 - i % len(utils)], 20.0, uuid="GPU-b")
    first = demand(frame(rows))
    assert_frame_equal(first, demand(frame(rows)))
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    assert_frame_equal(first, demand(frame(shuffled)))


def test_peaks_known_in_advance_skip_compute_for_memory_bound_workloads() -> None:
    """Given each workload's peak memory up front (the report passes it from its minute groups), a workload whose
    memory alone rules out every sub-GPU profile gets no compute histogram, and the same answer as without it."""
    rows = minutes("embed", H100, WEEK, lambda i: 0.05, 30.0) + minutes("big", H200, WEEK, lambda i: 0.05, 92.0)
    peaks = frame(rows).group_by("namespace", "workload", "gpu_model").agg(pl.col("fb_used_max_bytes").max()).collect()
    plain = fit_all(rows)
    skipped = mig_fit(
        frame(rows),
        prices={H100: P5_GPU_HOUR, H200: 10.0},
        price_sources={H100: "p5.48xlarge us-east-1 on-demand / 8", H200: "test price"},
        peaks=peaks,
    )
    for name in ("embed", "big"):
        a, b = one(plain, name), one(skipped, name)
        assert (a["profile"], a["fits"], a["reason"]) == (b["profile"], b["fits"], b["reason"])
    assert one(skipped, "big")["compute_demand"] is None and one(skipped, "big")["util_pct_p95"] is None
    assert one(skipped, "embed")["compute_demand"] == pytest.approx(one(plain, "embed")["compute_demand"])
    assert (skipped.gpus_now, skipped.gpus_needed, skipped.savings_usd_month) == (
        plain.gpus_now,
        plain.gpus_needed,
        plain.savings_usd_month,
    )
