"""MIG packing and savings (analysis.mig.pack, analysis.mig.savings): golden packings worked by hand, and the
property that every packing is valid."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.mig.catalog import MigGpu
from analysis.mig.pack import PackItem, pack
from analysis.mig.savings import REPORT_COLUMNS, MissingGpuPrice, mig_fit
from tests.mig_minutes import CATALOG, H100, T0, WEEK, fit_all, frame, minutes, one


def _packing_workloads() -> list[dict[str, Any]]:
    """Six H100 workloads, each on its own GPU today:
    ml/a, ml/b, ml/c: 30 GiB, 5% -> 3g.40gb; ml/d: 15 GiB, p95 20% -> 2g.20gb; ml/e, ml/f: 5 GiB, 5% -> 1g.10gb."""
    rows = []
    for name in "abc":
        rows += minutes(name, H100, WEEK, lambda i: 0.05, 30.0)
    rows += minutes("d", H100, WEEK, lambda i: 0.2 if i % 10 == 0 else 0.1, 15.0)
    for name in "ef":
        rows += minutes(name, H100, WEEK, lambda i: 0.05, 5.0)
    return rows


def test_packing_known_workloads_onto_h100s() -> None:
    """By hand: a 3g.40gb only fits at slot 0 or 4, and at most twice per GPU, so the three 3g need two GPUs.
    First-fit decreasing: GPU 0 takes a and b (3g at 0 and 4: all 8 slots, 6 of 7 slices); GPU 1 takes c (3g),
    then d (2g.20gb) and e, f (1g.10gb) in the free half: 3 + 2 + 1 + 1 = 7 slices, mig-parted's all-balanced.
    Six GPUs held today, two needed: four freed, x 6.88 USD/GPU-hour x 730 h = 20,089.60 USD a month."""
    result = fit_all(_packing_workloads())
    assert dict(result.workloads.select("workload", "profile").iter_rows()) == {
        "a": "3g.40gb", "b": "3g.40gb", "c": "3g.40gb", "d": "2g.20gb", "e": "1g.10gb", "f": "1g.10gb"
    }  # fmt: skip
    layouts = [[(p.profile, p.start, p.workload) for p in layout.placements] for layout in result.layouts]
    assert layouts == [
        [("3g.40gb", 0, "a"), ("3g.40gb", 4, "b")],
        [("2g.20gb", 0, "d"), ("1g.10gb", 2, "e"), ("1g.10gb", 3, "f"), ("3g.40gb", 4, "c")],
    ]
    assert [layout.slices_used for layout in result.layouts] == [6, 7]
    assert result.layouts[1].mig_devices() == {"2g.20gb": 1, "1g.10gb": 2, "3g.40gb": 1}
    assert (result.gpus_now, result.gpus_needed, result.gpus_freed) == (6, 2, 4)
    assert result.savings_usd_month == pytest.approx(4 * 6.88 * 730) == pytest.approx(20089.60)
    by_model = result.by_model.row(0, named=True)
    assert by_model["price_source"] == "p5.48xlarge us-east-1 on-demand / 8"
    report = result.to_report()
    assert {"workloads", "gpus_now", "gpus_needed", "savings_usd_month"} <= set(report)
    assert set(REPORT_COLUMNS) <= set(report["workloads"][0])
    assert report["savings_usd_month"] == 20089.6
    assert report["assumptions"]["percentile"] == 0.95 and report["assumptions"]["half_life_hours"] == 24.0
    assert report["assumptions"]["price_sources"] == {H100: "p5.48xlarge us-east-1 on-demand / 8"}


def test_workloads_sharing_gpus_today_free_nothing() -> None:
    """Two 3g.40gb workloads that already share one GPU (different minutes) need one GPU: nothing freed."""
    rows = minutes("a", H100, WEEK, lambda i: 0.05, 30.0, uuid="GPU-shared")
    rows += minutes("b", H100, WEEK, lambda i: 0.05, 30.0, uuid="GPU-shared", start=T0 + dt.timedelta(days=7))
    result = mig_fit(frame(rows), prices={}, price_sources={})  # no price needed when nothing is freed
    assert (result.gpus_now, result.gpus_needed, result.gpus_freed, result.savings_usd_month) == (1, 1, 0, 0.0)


def test_replicas_held_at_once_each_get_an_instance() -> None:
    rows = minutes("inf", H100, WEEK, lambda i: 0.05, 5.0, uuid="GPU-1")
    rows += minutes("inf", H100, WEEK, lambda i: 0.05, 5.0, uuid="GPU-2")
    result = fit_all(rows)
    row = one(result, "inf")
    assert (row["replicas"], row["gpus_held"], row["profile"]) == (2, 2, "1g.10gb")
    assert [(p.profile, p.replica) for p in result.layouts[0].placements] == [("1g.10gb", 0), ("1g.10gb", 1)]
    assert (result.gpus_now, result.gpus_needed) == (2, 1)


def test_freeing_gpus_without_a_price_is_refused() -> None:
    with pytest.raises(MissingGpuPrice, match=r"no GPU-hour price for NVIDIA H100 80GB HBM3, of which MIG"):
        mig_fit(frame(_packing_workloads()), prices={}, price_sources={})


@st.composite
def pack_inputs(draw: st.DrawFn) -> tuple[MigGpu, list[PackItem]]:
    gpu = draw(st.sampled_from(CATALOG.gpus))
    names = draw(st.lists(st.sampled_from([p.name for p in gpu.profiles]), max_size=24))
    return gpu, [PackItem(n, "ns", f"w{i}") for i, n in enumerate(names)]


@settings(max_examples=200, deadline=None)
@given(pack_inputs())
def test_packing_respects_slices_counts_placements_and_overlap(case: tuple[MigGpu, list[PackItem]]) -> None:
    gpu, items = case
    layouts = pack(gpu, items)
    placed = [p for layout in layouts for p in layout.placements]
    assert sorted((p.workload, p.profile) for p in placed) == sorted((i.workload, i.profile) for i in items)
    for layout in layouts:
        assert layout.placements, "no empty GPUs"
        assert layout.slices_used <= gpu.compute_slices
        for name, count in layout.mig_devices().items():
            assert count <= gpu.profile(name).max_instances
        used = [0] * gpu.memory_slots
        for p in layout.placements:
            profile = gpu.profile(p.profile)
            assert p.start in profile.placements and p.size == profile.memory_slots
            for slot in range(p.start, p.start + p.size):
                used[slot] += 1
        assert max(used, default=0) <= 1, layout
    assert len(layouts) >= math.ceil(sum(gpu.profile(i.profile).slices for i in items) / gpu.compute_slices)
