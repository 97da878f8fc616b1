"""Shared GPU-minutes split by measured use (``analysis.shares``): the rules on hand-made frames, the rollup that
stores them, the groups that use them, and the time-sliced H200 of the NVML stand-in."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from analysis import shares
from analysis.states import StateRules
from analysis.units import GIB
from analysis.usage import minute_groups
from analysis.window import Window
from collector.nvml import Holder, NvmlSampler
from tests.conftest import T0, allocation_rows, sample_rows
from tests.nvml_standin import SECOND_PID_OFFSET, CapturedNVML
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES

KEY = ["minute"]


def holders(state: str, sm: list[float | None], memory: list[float | None]) -> pl.LazyFrame:
    n = len(sm)
    return pl.LazyFrame(
        {
            "minute": [T0] * n,
            "state": [state] * n,
            "namespace": [f"team-{i}" for i in range(n)],
            "pod": [f"pod-{i}" for i in range(n)],
            "container": ["main"] * n,
            "workload": [f"w{i}" for i in range(n)],
            "sm_pct": sm,
            "memory_bytes": memory,
        },
        schema_overrides={"sm_pct": pl.Float64, "memory_bytes": pl.Float64},
    )


def split_of(frame: pl.LazyFrame) -> tuple[str, list[float]]:
    row = shares.shares_of(frame, KEY).collect().row(0, named=True)
    return row["split_method"], [h["share"] for h in row["holder_shares"]]


def test_an_active_minute_is_split_by_sm_share() -> None:
    assert split_of(holders("active", [60.0, 20.0], [1.0, 9.0])) == ("sm share", [0.75, 0.25])


def test_a_holder_without_an_sm_reading_counts_zero() -> None:
    assert split_of(holders("active", [30.0, None], [None, None])) == ("sm share", [1.0, 0.0])


def test_an_idle_held_minute_is_split_by_memory_share() -> None:
    assert split_of(holders("idle_held", [0.0, 0.0], [3 * GIB, 1 * GIB])) == ("memory share", [0.75, 0.25])


def test_without_measurements_the_split_is_equal_and_says_so() -> None:
    method, got = split_of(holders("active", [None, None, None], [None, None, None]))
    assert method == "equal" and sum(got) == pytest.approx(1.0, abs=1e-15) and got[0] == pytest.approx(1 / 3)
    assert split_of(holders("idle_allocated", [0.0, 0.0], [5.0, 1.0])) == ("equal", [0.5, 0.5])


def test_shares_of_a_minute_sum_to_one() -> None:
    method, got = split_of(holders("active", [33.3, 33.3, 33.4, 0.1, 7.7], [None] * 5))
    assert method == "sm share" and sum(got) == pytest.approx(1.0, abs=1e-15)


def two_pods(
    lake: Lake, util: float, fb_used: int, a: tuple[float | None, int | None], b: tuple[float | None, int | None]
) -> None:
    """GPU-a held by two pods of two namespaces for 10 minutes, each with one process."""
    append(lake, GPU_SAMPLES, sample_rows(util=util, fb_used=fb_used))
    for (sm, memory), namespace, pod, pid in ((a, "team-a", "trainer-0", 11), (b, "team-b", "serve-0", 22)):
        rows = allocation_rows(namespace=namespace, pod=pod, workload=pod.removesuffix("-0"))
        n = rows.num_rows
        rows = rows.append_column("pid", pa.array([pid] * n, pa.int64()))
        rows = rows.append_column("process_util_pct", pa.array([sm] * n, pa.float32()))
        rows = rows.append_column("process_fb_used_bytes", pa.array([memory] * n, pa.int64()))
        append(lake, GPU_ALLOCATIONS, rows)


def rolled(lake: Lake) -> pl.DataFrame:
    rollup.refresh(lake, StateRules())
    return lake.scan(GPU_MINUTES).collect().sort("ts")


def groups(lake: Lake) -> pl.DataFrame:
    rollup.refresh(lake, StateRules())
    window = Window(T0, T0 + dt.timedelta(hours=1))
    return minute_groups(lake.scan(GPU_MINUTES), window, []).collect()


def test_the_rollup_stores_the_split_and_the_minute_keeps_one_state(lake: Lake) -> None:
    two_pods(lake, 90.0, 8 * GIB, (60.0, 6 * GIB), (30.0, 2 * GIB))
    got = rolled(lake)
    assert got.height == 10 and set(got["state"]) == {"active"} and set(got["holders"]) == {2}
    assert set(got["split_method"]) == {"sm share"}
    first = got["holder_shares"][0].to_list()
    assert [(h["namespace"], h["workload"], h["share"]) for h in first] == [
        ("team-a", "trainer", pytest.approx(2 / 3)),
        ("team-b", "serve", pytest.approx(1 / 3)),
    ]


def test_groups_charge_each_holder_its_share_and_add_up_to_the_gpu_time(lake: Lake) -> None:
    two_pods(lake, 0.0, 8 * GIB, (0.0, 6 * GIB), (0.0, 2 * GIB))
    got = groups(lake)
    hours = {r["workload"]: (r["gpu_hours"], r["split_method"]) for r in got.iter_rows(named=True)}
    assert hours == {
        "trainer": (pytest.approx(10 / 60 * 0.75), "memory share"),
        "serve": (pytest.approx(10 / 60 * 0.25), "memory share"),
    }
    assert got["gpu_hours"].sum() == pytest.approx(10 / 60)


def test_one_holder_keeps_todays_path(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(util=90.0))
    append(lake, GPU_ALLOCATIONS, allocation_rows())
    got = rolled(lake)
    assert got["split_method"].null_count() == 10 and got["holder_shares"].null_count() == 10
    assert groups(lake)["split_method"].to_list() == [None]


def test_a_process_outside_any_pod_is_a_holder_of_its_own(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(util=0.0, fb_used=4 * GIB))
    n = 10
    rows = allocation_rows().drop(["namespace", "pod", "container", "workload"])
    rows = rows.append_column("pid", pa.array([4242] * n, pa.int64()))
    rows = rows.append_column("process_fb_used_bytes", pa.array([3 * GIB] * n, pa.int64()))
    rows = rows.append_column("process_name", pa.array(["ollama"] * n, pa.string()))
    append(lake, GPU_ALLOCATIONS, rows)
    got = rolled(lake)
    assert set(got["state"]) == {"idle_held"}
    assert set(got["namespace"]) == {rollup.OUTSIDE_PODS} and set(got["workload"]) == {"ollama"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def proc_tree(root: Path, pods: dict[int, str]) -> Path:
    """A /proc with each pid's environment naming its pod (HOSTNAME), as the kubelet sets it."""
    for pid, pod in pods.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "environ").write_bytes(f"PATH=/usr/bin\0HOSTNAME={pod}\0".encode())
        (root / str(pid) / "comm").write_text("python3\n")
    return root


def time_sliced_h200(lake: Lake, fixtures: Path, tmp_path: Path, at_s: float, second_after_s: float) -> None:
    """One H200 time-sliced between a training pod (the capture's process, pid 442) and a serving pod (the same
    trace's process ``second_after_s`` later, another phase), sampled every 2 s from ``at_s`` (five samples, one
    minute)."""
    clock = Clock()
    nvml = CapturedNVML(fixtures / "nvml-h200", clock, second_process_after_s=second_after_s)
    proc = proc_tree(tmp_path / "proc", {442: "trainer-0", 442 + SECOND_PID_OFFSET: "serve-0"})
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=nvml, clock=clock, proc_root=proc)
    gpu = sampler.open()[0].uuid
    sampler.holders = lambda: [
        Holder(gpu, None, "ml-training", "trainer-0", "pytorch", "trainer"),
        Holder(gpu, None, "inference", "serve-0", "vllm", "serve"),
    ]
    for step in range(5):
        clock.now = T0 + dt.timedelta(seconds=at_s + 2 * step)
        rows = sampler.sample()
        append(lake, GPU_SAMPLES, rows.samples)
        append(lake, GPU_ALLOCATIONS, rows.allocations)


def by_workload(lake: Lake) -> dict[str, tuple[float, str]]:
    return {r["workload"]: (r["gpu_hours"] * 60, r["split_method"]) for r in groups(lake).iter_rows(named=True)}


def test_time_sliced_h200_active_minutes_go_to_the_pod_that_computed(
    lake: Lake, fixtures: Path, tmp_path: Path
) -> None:
    # 16-26 s into the capture (samples at 17-25 s) is the saturated phase (util 99-100%, pid 442 holds 1,130 MiB);
    # 13 s later is the memory_held_idle phase (util 0, 62,660 MiB): the serving pod holds memory and computes nothing.
    time_sliced_h200(lake, fixtures, tmp_path, at_s=17.0, second_after_s=13.0)
    got = by_workload(lake)
    assert got["trainer"] == (pytest.approx(1.0), "sm share")
    assert got["serve"] == (pytest.approx(0.0), "sm share")


def test_time_sliced_h200_idle_held_minutes_go_by_memory(lake: Lake, fixtures: Path, tmp_path: Path) -> None:
    # 28-49 s is memory_held_idle (samples at 31-39 s: util 0, pid 442 holds 62,660 MiB); 14 s earlier the second
    # process is in the
    # saturated phase, holding 1,130 MiB. The device reads 0%: idle_held, split by memory, checked by hand:
    # 62,660 / (62,660 + 1,130) of the minute to the trainer.
    time_sliced_h200(lake, fixtures, tmp_path, at_s=31.0, second_after_s=-14.0)
    got = by_workload(lake)
    want = 62660 / (62660 + 1130)
    assert got["trainer"][1] == "memory share"
    assert got["trainer"][0] == pytest.approx(want, abs=2e-3)
    assert got["serve"][0] == pytest.approx(1 - want, abs=2e-3)
    assert got["trainer"][0] + got["serve"][0] == pytest.approx(1.0)


def test_agent_metrics_carry_per_pod_process_series_that_the_parser_reads_back(
    lake: Lake, fixtures: Path, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from collector.dcgm import parse_exposition
    from collector.metrics import LiveMetrics

    clock = Clock()
    nvml = CapturedNVML(fixtures / "nvml-h200", clock, second_process_after_s=13.0)
    proc = proc_tree(tmp_path / "proc", {442: "trainer-0", 442 + SECOND_PID_OFFSET: "serve-0"})
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=nvml, clock=clock, proc_root=proc)
    gpu = sampler.open()[0].uuid
    sampler.holders = lambda: [
        Holder(gpu, None, "ml-training", "trainer-0", "pytorch", "trainer"),
        Holder(gpu, None, "inference", "serve-0", "vllm", "serve"),
    ]
    clock.now = T0 + dt.timedelta(seconds=20)
    metrics = LiveMetrics()
    metrics.update(sampler.sample())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    text = generate_latest(registry).decode()
    device = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and "pod=" not in line]
    assert len(device) == 1  # the GPU's own series, without pod labels

    rows = parse_exposition(text, cluster="c1", scraped_at=clock.now)
    row = nvml.trace_row()
    assert rows.samples.num_rows == 1 and rows.samples["util_pct"][0].as_py() == row["util_gpu"]
    got = {r["pod"]: (r["process_util_pct"], r["process_fb_used_bytes"]) for r in rows.allocations.to_pylist()}
    later = nvml.trace_row(13.0)
    assert got == {
        "trainer-0": (row["util_gpu"], row["procs"][0]["used"] // (1 << 20) * (1 << 20)),
        "serve-0": (
            None if later["util_gpu"] == 0 else later["util_gpu"],
            later["procs"][0]["used"] // (1 << 20) * (1 << 20),
        ),
    }


def test_dcgm_device_series_without_pod_labels_is_never_a_pods() -> None:
    from collector.dcgm import parse_exposition

    labels = 'gpu="0",UUID="GPU-1",modelName="NVIDIA H200",Hostname="n1"'
    text = "\n".join(
        [
            f'DCGM_FI_DEV_GPU_UTIL{{{labels},pod="a-0",namespace="ta",container="c"}} 70',
            f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} 95",
            f'DCGM_FI_DEV_GPU_UTIL{{{labels},pod="b-0",namespace="tb",container="c"}} 20',
            f'DCGM_FI_DEV_FB_USED{{{labels},pod="a-0",namespace="ta",container="c"}} 1024',
            f"DCGM_FI_DEV_FB_USED{{{labels}}} 3072",
            f'DCGM_FI_DEV_FB_USED{{{labels},pod="b-0",namespace="tb",container="c"}} 2048',
            f"DCGM_FI_DEV_FB_FREE{{{labels}}} 1000",
            "",
        ]
    )
    rows = parse_exposition(text, cluster="c1", scraped_at=T0)
    assert rows.samples["util_pct"].to_pylist() == [95.0]
    assert rows.samples["fb_used_bytes"].to_pylist() == [3072 << 20]
    got = {r["pod"]: (r["process_util_pct"], r["process_fb_used_bytes"]) for r in rows.allocations.to_pylist()}
    assert got == {"a-0": (70.0, 1024 << 20), "b-0": (20.0, 2048 << 20)}


def test_dcgm_pod_labelled_copies_without_a_device_series_stay_the_devices_sample() -> None:
    from collector.dcgm import parse_exposition

    labels = 'gpu="0",UUID="GPU-1",modelName="NVIDIA H200",Hostname="n1"'
    text = "\n".join(
        [
            f'DCGM_FI_DEV_GPU_UTIL{{{labels},pod="a-0",namespace="ta",container="c"}} 95',
            f'DCGM_FI_DEV_GPU_UTIL{{{labels},pod="b-0",namespace="tb",container="c"}} 95',
            "",
        ]
    )
    rows = parse_exposition(text, cluster="c1", scraped_at=T0)
    assert rows.samples["util_pct"].to_pylist() == [95.0]
    assert [r["process_util_pct"] for r in rows.allocations.to_pylist()] == [None, None]
