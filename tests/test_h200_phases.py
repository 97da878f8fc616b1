"""The real H200 capture, run through the whole pipeline, lands each labelled phase in the state its name implies.

The capture samples every 100 ms through ~10 s phases; states are per GPU-minute. So the test slows the clock 60x
(each 100 ms sample stands for 6 s, each phase lasts ~10 minutes) and keeps every value and its order as captured.
The samples go through the NVML sampler (on the stand-in replaying the capture), the warehouse and the minute
rollup. A pod holds the GPU from the start of ``idle_context`` to the end, as the kubelet would report it.

Why each phase lands where it does:
- before the workload (no CUDA context, no pod): nobody holds the GPU -> ``unallocated``;
- ``idle_context`` (a CUDA context, no kernels, no allocations): held, 0% utilization, and the process holds almost
  no memory -> ``idle_allocated``;
- ``saturated`` (bf16 matmuls, ~97% utilization) -> ``active``;
- ``memory_held_idle`` (60 GiB allocated, no kernels): held, ~0% utilization, 60 GiB held -> ``idle_held``, the
  classic idle waste;
- ``bursty_low`` (one 0.2 ms kernel every 50 ms): NVML reads 0% (a kernel must cover its sample period to count),
  the 60 GiB are still held -> ``idle_held``: by the numbers NVML gives, this GPU does no useful work;
- ``released`` (the tensors freed, the process alive): held, 0%, the process holds ~0.7 GiB (the device reports
  1.3 GiB, of which ~0.6 GiB is the driver's own) -> ``idle_allocated``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import polars as pl
import pyarrow as pa

from analysis.states import StateRules
from collector.nvml import NvmlSampler
from collector.rows import combine
from tests.nvml_standin import CapturedNVML
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.rollup import RollupConfig
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
SLOW = 60.0
EXPECTED = {
    "before": "unallocated",
    "idle_context": "idle_allocated",
    "saturated": "active",
    "memory_held_idle": "idle_held",
    "bursty_low": "idle_held",
    "released": "idle_allocated",
}


class ReplayClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def stretched(seconds_into_trace: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds_into_trace * SLOW)


def test_each_phase_lands_in_the_state_its_name_implies(fixtures: Path, tmp_path: Path) -> None:
    capture = fixtures / "nvml-h200"
    trace = [json.loads(line) for line in (capture / "nvml_trace.jsonl").read_text().splitlines() if line]
    marks = [json.loads(line) for line in (capture / "phases.jsonl").read_text().splitlines() if line]
    first = trace[0]["ts"]
    clock = ReplayClock()
    sampler = NvmlSampler(cluster="lab", node="h200-node", nvml=CapturedNVML(capture, clock), clock=clock)
    sampler.open()
    readings = []
    for row in trace[:-1]:
        clock.now = T0 + dt.timedelta(seconds=row["ts"] - first + 0.001)
        readings.append(sampler.read())
    rows = combine(readings)
    stretch = pl.col("ts").cast(pl.Int64).sub(int(T0.timestamp() * 1e6)).mul(SLOW).cast(pl.Int64)
    to_stretched = (pl.lit(int(T0.timestamp() * 1e6)) + stretch).cast(pl.Datetime("us", "UTC")).alias("ts")
    samples = pl.from_arrow(rows.samples).with_columns(to_stretched)
    processes = pl.from_arrow(rows.allocations).with_columns(to_stretched)
    assert isinstance(samples, pl.DataFrame) and isinstance(processes, pl.DataFrame)

    held_from = marks[0]["ts"] - first  # the pod exists from idle_context on
    pod_ts = samples.filter(pl.col("ts") >= stretched(held_from))["ts"]
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
    lake = Lake(tmp_path / "wh", create=True)
    append(lake, GPU_SAMPLES, samples.to_arrow())
    append(
        lake, GPU_ALLOCATIONS, pa.concat_tables([processes.to_arrow(), pod.to_arrow()], promote_options="permissive")
    )
    rollup.refresh(lake, StateRules(), RollupConfig(expected_interval_s=0.1 * SLOW))
    minutes = lake.scan(GPU_MINUTES).collect()

    bounds = [("before", 0.0, marks[0]["ts"] - first)] + [
        (m["phase"], m["ts"] - first, n["ts"] - first) for m, n in itertools.pairwise(marks)
    ]
    for phase, start, end in bounds:
        inside = minutes.filter(  # whole minutes inside the phase, one minute of margin each side
            (pl.col("ts") >= stretched(start) + dt.timedelta(minutes=1))
            & (pl.col("ts") < stretched(end) - dt.timedelta(minutes=2))
        )
        assert inside.height >= 3, phase
        share = inside.filter(pl.col("state") == EXPECTED[phase]).height / inside.height
        assert share >= 0.95, (phase, inside.group_by("state").len().to_dicts())
