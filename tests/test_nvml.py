"""The NVML sampler against a stand-in built from the real H200 capture (the real pynvml's errors and constants)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest

from collector.nvml import Holder, NvmlQuery, NvmlSampler, NvmlUnavailable
from tests.nvml_standin import CapturedNVML
from warehouse.ingest import append, conform
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def capture(fixtures: Path) -> Path:
    return fixtures / "nvml-h200"


def sampler_for(capture: Path, clock: Clock, **standin) -> tuple[NvmlSampler, CapturedNVML]:
    nvml = CapturedNVML(capture, clock, **standin)
    sampler = NvmlSampler(cluster="c1", node="gpu-node-1", nvml=nvml, clock=clock, energy_every_s=60)
    sampler.open()
    return sampler, nvml


def test_one_sample_holds_the_captured_values(capture: Path) -> None:
    clock = Clock()
    sampler, nvml = sampler_for(capture, clock)
    clock.advance(20.0)  # the trace's saturated phase
    row = nvml.trace_row()
    rows = sampler.sample()
    [sample] = rows.samples.to_pylist()
    static = json.loads((capture / "nvml_static.json").read_text())["devices"][0]
    assert sample["gpu_uuid"] == static["nvmlDeviceGetUUID"] and sample["gpu_model"] == "NVIDIA H200"
    assert sample["fb_total_bytes"] == 150_754_820_096
    assert (sample["util_pct"], sample["fb_used_bytes"]) == (row["util_gpu"], row["mem_used"])
    assert sample["power_w"] == pytest.approx(row["power_mw"] / 1000)
    assert (sample["temp_c"], sample["sm_clock_mhz"]) == (row["temp_c"], row["sm_clock_mhz"])
    assert sample["clock_event_reasons"] == row["clock_reasons"]
    assert sample["energy_j"] == pytest.approx(row["energy_mj"] / 1000)
    conform(GPU_SAMPLES, rows.samples)
    conform(GPU_ALLOCATIONS, rows.allocations)


def test_energy_is_read_on_its_slower_cadence(capture: Path) -> None:
    clock = Clock()
    sampler, nvml = sampler_for(capture, clock)
    energies = []
    for _ in range(13):  # 0..120 s every 10 s
        energies.append(sampler.sample().samples.column("energy_j")[0].as_py())
        clock.advance(10)
    assert [e is not None for e in energies] == [True] + [False] * 5 + [True] + [False] * 5 + [True]
    assert nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == 3
    assert nvml.calls["nvmlDeviceGetPowerUsage"] == 13


def test_processes_become_allocation_rows_and_not_found_means_no_samples(capture: Path) -> None:
    clock = Clock()
    sampler, nvml = sampler_for(capture, clock)
    clock.advance(14.2)  # idle_context: a process holds a context, util 0 -> NVML answers NotFound
    row = nvml.trace_row()
    assert row["procs"] and row["util_gpu"] == 0
    [alloc] = sampler.sample().allocations.to_pylist()
    assert (alloc["pid"], alloc["process_fb_used_bytes"]) == (row["procs"][0]["pid"], row["procs"][0]["used"])
    assert alloc["process_util_pct"] is None and alloc["pod"] is None


def test_kubelet_holders_name_the_pod_of_the_process(capture: Path) -> None:
    clock = Clock()
    nvml = CapturedNVML(capture, clock)
    uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(0))
    holder = Holder(uuid, None, "research", "jupyter-alice-0", "notebook", "jupyter-alice")
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=nvml, clock=clock, holders=lambda: [holder])
    sampler.open()
    clock.advance(14.2)
    [alloc] = sampler.sample().allocations.to_pylist()
    assert (alloc["namespace"], alloc["pod"], alloc["workload"]) == ("research", "jupyter-alice-0", "jupyter-alice")
    assert alloc["pid"] is not None
    clock.advance(-14.0)  # before any process: the pod still holds the GPU
    [held] = sampler.sample().allocations.to_pylist()
    assert (held["pod"], held["pid"]) == ("jupyter-alice-0", None)


def test_mig_instances_are_sampled_with_profile_and_instance_id(capture: Path) -> None:
    clock = Clock()
    sampler, _ = sampler_for(capture, clock, mig=["3g.71gb", "3g.71gb"])
    samples = sampler.sample().samples.to_pylist()
    assert [(s["mig_profile"], s["mig_instance_id"]) for s in samples] == [(None, None), ("3g.71gb", 1), ("3g.71gb", 2)]
    assert samples[1]["util_pct"] is None  # NVML has no utilization for a MIG instance
    assert samples[1]["fb_total_bytes"] == 71424 << 20  # the captured profile table
    assert len({s["gpu_uuid"] for s in samples}) == 1
    assert set(sampler.device_ids().values()) == {
        (samples[0]["gpu_uuid"], None),
        (samples[0]["gpu_uuid"], 1),
        (samples[0]["gpu_uuid"], 2),
    }


def test_a_lost_gpu_is_marked_and_the_others_keep_being_sampled(capture: Path, caplog) -> None:
    clock = Clock()
    sampler, _ = sampler_for(capture, clock, count=3, lost_after={1: T0 + dt.timedelta(seconds=5)})
    assert sampler.sample().samples.num_rows == 3
    clock.advance(10)
    with caplog.at_level(logging.ERROR):
        after = [sampler.sample() for _ in range(3)]
    assert [r.samples.num_rows for r in after] == [2, 2, 2]
    assert sorted(after[0].samples.column("gpu_index").to_pylist()) == [0, 2]
    assert len([r for r in caplog.records if "is lost" in r.getMessage()]) == 1


def test_no_driver_is_one_clear_error(capture: Path) -> None:
    clock = Clock()
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=CapturedNVML(capture, clock, driver_loaded=False))
    with pytest.raises(NvmlUnavailable) as caught:
        sampler.open()
    assert str(caught.value) == (
        "NVML is not available (Driver Not Loaded): run on a node with the NVIDIA driver loaded, or read "
        "`--dcgm-exporter URL` instead, or try gpuledger with `gpuledger simulate`"
    )


def test_the_real_pynvml_without_a_driver_is_the_same_clear_error() -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - only on a GPU node
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver; the no-driver path is tested with the stand-in above")
    with pytest.raises(NvmlUnavailable, match=r"^NVML is not available \("):
        NvmlSampler(cluster="c1", node="n1").open()


class OldDriver:
    """The captured GPU behind an older driver: no energy counter, names answered as bytes."""

    def __init__(self, nvml: CapturedNVML) -> None:
        self._nvml = nvml

    def __getattr__(self, name: str):
        if name == "nvmlDeviceGetTotalEnergyConsumption":
            raise AttributeError(name)
        return getattr(self._nvml, name)

    def nvmlDeviceGetName(self, handle) -> bytes:
        return self._nvml.nvmlDeviceGetName(handle).encode()


def test_query_decodes_bytes_and_logs_an_absent_function_once(capture: Path, caplog) -> None:
    clock = Clock()
    nvml = OldDriver(CapturedNVML(capture, clock))
    query = NvmlQuery(nvml)
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert query("nvmlDeviceGetName", handle) == "NVIDIA H200"
    with caplog.at_level(logging.INFO):
        assert [query("nvmlDeviceGetTotalEnergyConsumption", handle) for _ in range(3)] == [None] * 3
    assert len([r for r in caplog.records if "nvmlDeviceGetTotalEnergyConsumption" in r.getMessage()]) == 1
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=nvml, clock=clock)
    sampler.open()
    [sample] = sampler.sample().samples.to_pylist()
    assert sample["gpu_model"] == "NVIDIA H200" and sample["energy_j"] is None and sample["power_w"] is not None


def test_samples_append_idempotently(capture: Path, tmp_path: Path) -> None:
    clock = Clock()
    sampler, _ = sampler_for(capture, clock, count=2)
    lake = Lake(tmp_path / "wh", create=True)
    batches = []
    for _ in range(30):
        batches.append(sampler.sample())
        clock.advance(1)
    for rows in batches + batches:
        append(lake, GPU_SAMPLES, rows.samples)
        append(lake, GPU_ALLOCATIONS, rows.allocations)
    assert lake.scan(GPU_SAMPLES).collect().height == 60
