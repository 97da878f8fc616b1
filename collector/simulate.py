"""The simulated fleet's telemetry: one day at a time, every GPU and every sample at once (no loop per sample).

Shapes come from the real H200 capture (``collector.calibration``): a saturated trainer reads ~99% utilization at
~99% of its power limit; a job that holds memory and computes nothing reads 0% at ~18% of the limit; a process
launching one tiny kernel every 50 ms also reads 0%; an empty GPU sits at ~11% of the limit with ~0.6 GiB used by the
driver. Around those shapes the fleet adds a daily load cycle (peak 15:00 UTC, weekends at 60%), checkpoint dips,
notebooks that burst during working hours, jobs starting and stopping, and one collector outage.

This module only builds Arrow tables; the caller hands them to ``warehouse``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from collector.calibration import load as load_calibration
from collector.fleet import REGION, Fleet, Kind
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES, NODES

INTERVAL_S = 60
MAX_SM_CLOCK_MHZ = {
    "NVIDIA A100-SXM4-40GB": 1410,
    "NVIDIA A100-SXM4-80GB": 1410,
    "NVIDIA H100 80GB HBM3": 1980,
    "NVIDIA H200": 1980,
    "NVIDIA A10G": 1710,
    "NVIDIA L4": 2040,
}
"""Published maximum SM clocks; the capture's clocks (max 1,980 MHz) are scaled to each model by these."""


@dataclass(frozen=True)
class DayBatch:
    day: dt.date
    samples: pa.Table
    allocations: pa.Table
    nodes: pa.Table


class FleetTelemetry:
    """Generates a planned fleet's tables day by day; energy counters carry over from one day to the next."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        cal = load_calibration()
        self.phases = cal["phases"]
        self.ref_fb_total = float(cal["fb_total_bytes"])
        self.ref_clock = float(cal["max_sm_clock_mhz"])
        nodes = fleet.nodes
        self.gpu_node = np.repeat(np.arange(len(nodes)), [n.gpu_count for n in nodes])
        self.gpu_index = np.concatenate([np.arange(n.gpu_count) for n in nodes]).astype(np.int32)
        self.offset = np.array([nodes[i].offset_s for i in self.gpu_node], dtype=np.float64)
        self.fb_total = np.array([nodes[i].fb_total_bytes for i in self.gpu_node], dtype=np.float64)
        self.limit = np.array([nodes[i].power_limit_w for i in self.gpu_node], dtype=np.float64)
        self.clock_scale = np.array([MAX_SM_CLOCK_MHZ[nodes[i].gpu_model] / self.ref_clock for i in self.gpu_node])
        self.dcgm_profiling = np.array([nodes[i].cluster.startswith("serve") for i in self.gpu_node])
        self.uuids = [u for n in nodes for u in n.gpu_uuids]
        rng = np.random.default_rng([fleet.seed, 7])
        self.energy = rng.uniform(1e6, 5e8, size=len(self.uuids))
        seg = fleet.segments
        self.span = fleet.days * 86400.0 + 86400.0
        self.seg_key = seg["gpu"] * self.span + seg["start"]
        self.occupancy = rng.uniform(0.45, 0.85, size=len(seg["gpu"]))
        """Per segment: the fraction of SMs a kernel keeps busy (what DCGM's SM_ACTIVE sees of NVML's util)."""

    def days(self) -> Iterator[DayBatch]:
        for day in range(self.fleet.days):
            yield self.day(day)

    def day(self, day: int) -> DayBatch:
        fleet = self.fleet
        seg = fleet.segments
        rng = np.random.default_rng([fleet.seed, day])
        steps = 86400 // INTERVAL_S
        t = day * 86400.0 + self.offset[:, None] + np.arange(steps)[None, :] * float(INTERVAL_S)
        gpus = len(self.uuids)
        gpu = np.broadcast_to(np.arange(gpus)[:, None], t.shape)

        idx = np.searchsorted(self.seg_key, gpu * self.span + t, side="right") - 1
        idx_safe = np.clip(idx, 0, None)
        held = (idx >= 0) & (seg["gpu"][idx_safe] == gpu) & (t < seg["end"][idx_safe])
        kind = np.where(held, seg["kind"][idx_safe], Kind.UNALLOCATED)
        level = np.where(held, seg["level"][idx_safe], 0.0)
        mem_frac = np.where(held, seg["mem_frac"][idx_safe], 0.0)

        epoch = fleet.start.timestamp() + t
        hour = (epoch % 86400.0) / 3600.0
        weekday = ((epoch // 86400.0) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        weekend = weekday >= 5
        load = (0.55 + 0.45 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)) * np.where(weekend, 0.6, 1.0)

        util = np.zeros(t.shape)
        noise = rng.normal(0.0, 1.0, size=t.shape)
        train = kind == Kind.TRAIN
        checkpoint = ((t + idx_safe * 977.0) % 7200.0) < 180.0
        sat = float(self.phases["saturated"]["util_median_pct"])
        util = np.where(train, np.where(checkpoint, 0.0, sat * level + 1.5 * noise), util)
        util = np.where(kind == Kind.TRAIN_STALLED, np.where(rng.random(t.shape) < 0.02, 1.0, 0.0), util)
        serving = (kind == Kind.LLM_INFERENCE) | (kind == Kind.SMALL_INFERENCE)
        util = np.where(serving, 100.0 * level * load * rng.uniform(0.75, 1.25, size=t.shape), util)
        block_busy = rng.random((gpus, steps // 10)).repeat(10, axis=1) < 0.25 * level
        working = (hour >= 14) & (hour < 22) & ~weekend
        util = np.where(kind == Kind.NOTEBOOK, np.where(working & block_busy, 40 + 50 * level, 0.0), util)
        util = np.where(kind == Kind.BATCH, 100.0 * level + 3 * noise, util)
        util = np.clip(np.rint(util), 0.0, 100.0)
        shared = _SharedReadings.of(fleet, t, load, util, mem_frac, self.fb_total, day)
        if shared is not None:
            util[shared.gpu] = np.clip(shared.first_util + shared.second_util, 0.0, 100.0)

        context = float(self.phases["idle_context"]["fb_used_bytes"]) / self.ref_fb_total
        driver = float(self.phases["no_context"]["fb_used_bytes"]) / self.ref_fb_total
        mem_share = np.where(kind == Kind.UNALLOCATED, driver, np.where(kind == Kind.TRAIN_SPARE, context, mem_frac))
        fb_used = (mem_share * self.fb_total[:, None]).astype(np.int64)
        if shared is not None:
            fb_used[shared.gpu] += shared.second_fb

        idle_frac = np.select(
            [kind == Kind.UNALLOCATED, kind == Kind.TRAIN_SPARE, kind == Kind.BURSTY_LOW],
            [
                self.phases["no_context"]["power_frac"],
                self.phases["idle_context"]["power_frac"],
                self.phases["bursty_low"]["power_frac"],
            ],
            self.phases["memory_held_idle"]["power_frac"],
        )
        busy_frac = self.phases["saturated"]["power_frac"]
        power = self.limit[:, None] * (idle_frac + (busy_frac - idle_frac) * util / 100.0) + 2.0 * noise
        power = np.clip(power, 1.0, None)
        clock_busy = self.phases["saturated"]["sm_clock_mhz"]
        clock_held = self.phases["memory_held_idle"]["sm_clock_mhz"]
        clock_idle = self.phases["no_context"]["sm_clock_mhz"]
        clock = np.where(util > 0, clock_busy, np.where(kind == Kind.UNALLOCATED, clock_idle, clock_held))
        clock = np.rint(clock * self.clock_scale[:, None]).astype(np.int32)
        temp = 28.0 + 40.0 * power / self.limit[:, None] + 0.5 * noise
        energy = self.energy[:, None] + np.cumsum(power * INTERVAL_S, axis=1)
        self.energy = energy[:, -1].copy()
        occupancy = self.occupancy[idx_safe]
        sm_active = np.where(self.dcgm_profiling[:, None], util / 100.0 * occupancy, np.nan)

        n, lo, hi = fleet.outage
        visible = ~((self.gpu_node[:, None] == n) & (t >= lo) & (t < hi))
        if fleet.partial is not None:
            node, shown = fleet.partial
            visible &= ~((self.gpu_node == node) & (self.gpu_index >= shown))[:, None]
        keep = visible.ravel()
        ts = (np.datetime64(fleet.start.replace(tzinfo=None), "us") + (t * 1e6).astype("timedelta64[us]")).ravel()
        gpu_flat = gpu.ravel()[keep]
        node_of = self.gpu_node[gpu_flat]
        samples = pa.table(
            {
                "ts": pa.array(ts[keep], pa.timestamp("us")).cast(GPU_SAMPLES.schema.field("ts").type),
                "cluster": _strings([nd.cluster for nd in fleet.nodes], node_of),
                "node": _strings([nd.name for nd in fleet.nodes], node_of),
                "gpu_uuid": _strings(self.uuids, gpu_flat),
                "gpu_index": self.gpu_index[gpu_flat],
                "gpu_model": _strings([nd.gpu_model for nd in fleet.nodes], node_of),
                "util_pct": util.ravel()[keep].astype(np.float32),
                "sm_active": pa.array(sm_active.ravel()[keep].astype(np.float32), from_pandas=True),
                "fb_used_bytes": fb_used.ravel()[keep],
                "fb_total_bytes": self.fb_total.astype(np.int64)[gpu_flat],
                "power_w": power.ravel()[keep].astype(np.float32),
                "energy_j": energy.ravel()[keep],
                "temp_c": temp.ravel()[keep].astype(np.float32),
                "sm_clock_mhz": clock.ravel()[keep],
                "source": _strings(["simulator"], np.zeros(len(gpu_flat), dtype=np.int32)),
            }
        )
        mask = (held & visible).ravel()
        holder = seg["holder"][idx_safe].ravel()[mask]
        alloc_gpu = gpu.ravel()[mask]
        process_util = np.full(t.shape, np.nan)
        process_fb = np.full(t.shape, np.nan)
        if shared is not None:
            process_util[shared.gpu] = shared.first_util
            process_fb[shared.gpu] = shared.first_fb
        allocations = self._allocations(
            ts[mask], alloc_gpu, holder, process_util.ravel()[mask], process_fb.ravel()[mask]
        )
        if shared is not None:
            on = (shared.second_on & visible[shared.gpu]).nonzero()[0]
            second = self._allocations(
                ts.reshape(t.shape)[shared.gpu, on],
                np.full(len(on), shared.gpu),
                np.full(len(on), shared.holder),
                shared.second_util[on],
                shared.second_fb[on].astype(np.float64),
            )
            allocations = pa.concat_tables([allocations, second])
        date = (fleet.start + dt.timedelta(days=day)).date()
        return DayBatch(date, samples, allocations, self._nodes(date))

    def _allocations(
        self, ts: np.ndarray, gpu: np.ndarray, holder: np.ndarray, process_util: np.ndarray, process_fb: np.ndarray
    ) -> pa.Table:
        """``gpu_allocations`` rows: who held which GPU at ``ts``, with per-process readings where not NaN."""
        nodes, holders = self.fleet.nodes, self.fleet.holders
        node = self.gpu_node[gpu]
        return pa.table(
            {
                "ts": pa.array(ts, pa.timestamp("us")).cast(GPU_ALLOCATIONS.schema.field("ts").type),
                "cluster": _strings([nd.cluster for nd in nodes], node),
                "node": _strings([nd.name for nd in nodes], node),
                "gpu_uuid": _strings(self.uuids, gpu),
                "namespace": _strings([h.namespace for h in holders], holder),
                "pod": _strings([h.pod for h in holders], holder),
                "container": _strings([h.container for h in holders], holder),
                "workload": _strings([h.workload for h in holders], holder),
                "owner_kind": _strings([h.owner.kind for h in holders], holder),
                "owner_name": _strings([h.owner.name for h in holders], holder),
                "owner_chain": _strings([h.owner.chain for h in holders], holder),
                "cpu_request": np.array([h.cpu_request for h in holders], dtype=np.float64)[holder],
                "memory_request_bytes": np.array([h.memory_request_bytes for h in holders], dtype=np.int64)[holder],
                "process_fb_used_bytes": pa.array(
                    np.nan_to_num(process_fb).astype(np.int64), pa.int64(), mask=np.isnan(process_fb)
                ),
                "process_util_pct": pa.array(
                    process_util.astype(np.float32), pa.float32(), mask=np.isnan(process_util)
                ),
                "source": _strings(["simulator"], np.zeros(len(holder), dtype=np.int32)),
            }
        )

    def _nodes(self, date: dt.date) -> pa.Table:
        """One ``nodes`` row per node; the partly reporting node's ``gpu_count`` is the GPUs its exporter shows, as
        the scraper records it for a node without GPU Feature Discovery's count label."""
        nodes = self.fleet.nodes
        partial = self.fleet.partial
        shown = {partial[0]: partial[1]} if partial is not None else {}
        return pa.Table.from_pylist(
            [
                {
                    "date": date,
                    "cluster": n.cluster,
                    "node": n.name,
                    "instance_type": n.pool.instance_type,
                    "capacity_type": n.pool.capacity_type,
                    "region": REGION,
                    "zone": n.zone,
                    "gpu_model": n.gpu_model,
                    "gpu_count": shown.get(i, n.gpu_count),
                    "mig_strategy": "none",
                    "labels": n.labels(),
                    "provider_id": n.provider_id,
                }
                for i, n in enumerate(nodes)
            ],
            schema=NODES.schema,
        )


@dataclass(frozen=True)
class _SharedReadings:
    """One day of the shared GPU (``Fleet.shared``, row ``gpu`` of the day's arrays): each pod's SM utilization and
    memory, per step. The GPU reads their sum; the second pod's load has its own random stream."""

    gpu: int
    holder: int
    first_util: np.ndarray
    first_fb: np.ndarray
    second_on: np.ndarray
    second_util: np.ndarray
    second_fb: np.ndarray

    @classmethod
    def of(
        cls,
        fleet: Fleet,
        t: np.ndarray,
        load: np.ndarray,
        util: np.ndarray,
        mem_frac: np.ndarray,
        fb_total: np.ndarray,
        day: int,
    ) -> _SharedReadings | None:
        shared = fleet.shared
        if shared is None:
            return None
        g = shared.gpu
        on = (t[g] >= shared.start) & (t[g] < shared.end)
        rng = np.random.default_rng([fleet.seed, 13, day])
        noise = rng.uniform(0.75, 1.25, size=on.shape)
        second = np.where(on, np.clip(np.rint(100.0 * shared.level * load[g] * noise), 0.0, 100.0), 0.0)
        second_fb = np.where(on, int(shared.mem_frac * fb_total[g]), 0).astype(np.int64)
        first_fb = (mem_frac[g] * fb_total[g]).astype(np.int64).astype(np.float64)
        return cls(g, shared.holder, util[g].copy(), first_fb, on, second, second_fb)


def _strings(values: Sequence[str | None], indices: np.ndarray) -> pa.Array:
    """Strings by index, built as a dictionary array so each distinct value is encoded once."""
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values)).cast(pa.string())
