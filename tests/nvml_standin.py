"""A stand-in for the ``pynvml`` module, built from the real H200 capture in ``tests/fixtures/nvml-h200/``.

Static answers (name, UUID, memory total, power limit, MIG profile table) come from ``nvml_static.json``; dynamic
answers (utilization, memory used, power, energy, temperature, SM clock, processes) replay ``nvml_trace.jsonl`` by
the injected clock, looping over its 55 s. NVML's own error classes and constants are the real ones from
nvidia-ml-py, so the sampler's error handling is exercised as on a node.

What the capture does not contain is derived and marked as such:
- ``count > 1`` replicates the GPU with derived UUIDs (the capture has one GPU);
- ``mig=[...]`` puts the GPU in MIG mode with instances of the captured profiles (the captured GPU had MIG off):
  memory totals come from the profile table, utilization is NotSupported on MIG handles as on real hardware; GPU
  instance ids are 1, 2, ... in the list's order, each placed at the first free placement its profile allows in
  ``nvidia-smi mig -lgipp`` (``nvidia_smi.txt``), as ``nvidia-smi mig -cgi`` places them; with
  ``privileged=False`` the GPU-instance queries answer NoPermission, as for an agent that is not root;
- replicas (``count > 1``) get their index as minor number (the capture's GPU has minor 0);
- per-process SM utilization is the device utilization for the trace's process when the GPU is busy, and NotFound
  (NVML's "no samples since") otherwise, mirroring the trace's NotFound errors.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

SECOND_PID_OFFSET = 100_000


@dataclass(frozen=True)
class Handle:
    gpu: int
    mig_slot: int | None = None


@dataclass(frozen=True)
class GpuInstance:
    gpu: int
    id: int


def _possible_placements(nvidia_smi: Path) -> dict[int, list[tuple[int, int]]]:
    """GI profile id -> its (start, size) placements, from ``nvidia-smi mig -lgipp`` lines such as
    ``GPU  0 Profile ID 15 Placements: {0,2,4,6}:2``."""
    out: dict[int, list[tuple[int, int]]] = {}
    for match in re.finditer(r"Profile ID +(\d+) Placements? *: \{([\d,]+)\}:(\d+)", nvidia_smi.read_text()):
        size = int(match.group(3))
        out[int(match.group(1))] = [(int(start), size) for start in match.group(2).split(",")]
    return out


def _first_fit(profiles: list[dict[str, Any]], possible: dict[int, list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """Each instance at the first of its profile's placements whose memory slices are still free."""
    taken: set[int] = set()
    chosen: list[tuple[int, int]] = []
    for info in profiles:
        free = [(a, n) for a, n in possible[info["id"]] if not taken & set(range(a, a + n))]
        if not free:
            raise ValueError(f"no free placement for {info['name']} after {chosen}")
        start, size = free[0]
        taken |= set(range(start, start + size))
        chosen.append((start, size))
    return chosen


class CapturedNVML:
    """Answers NVML calls like the captured H200 did. Unknown attributes fall through to the real pynvml module
    (error classes, constants), so ``nvml.NVMLError_NotSupported`` is NVML's own class."""

    def __init__(
        self,
        capture_dir: Path,
        clock: Callable[[], dt.datetime],
        *,
        count: int = 1,
        mig: list[str] | None = None,
        lost_after: dict[int, dt.datetime] | None = None,
        driver_loaded: bool = True,
        second_process_after_s: float | None = None,
        privileged: bool = True,
        uuid_offset: int = 0,
    ) -> None:
        self.static = json.loads((capture_dir / "nvml_static.json").read_text())["devices"][0]
        self.trace = [json.loads(line) for line in (capture_dir / "nvml_trace.jsonl").read_text().splitlines() if line]
        self.clock = clock
        self.count = count
        self.lost_after = lost_after or {}
        self.driver_loaded = driver_loaded
        self.second_process_after_s = second_process_after_s
        """When set, GPU 0 also runs a second process: the trace's own process as it was this many seconds later
        (another phase), under pid + SECOND_PID_OFFSET: two processes whose SM and memory readings are both real."""
        self.start = clock()
        self.calls: dict[str, int] = {}
        profiles = {
            p["info"]["name"].removeprefix("MIG "): p["info"]
            for p in self.static["gpu_instance_profiles"]
            if "name" in p["info"]
        }
        self.mig = [profiles[name] for name in (mig or [])]
        self.privileged = privileged
        self.uuid_offset = uuid_offset
        """Added to each GPU's number before its UUID is derived, so stand-ins of two nodes have distinct GPUs."""
        self.placements = _first_fit(self.mig, _possible_placements(capture_dir / "nvidia_smi.txt"))

    def __getattr__(self, name: str) -> Any:
        return getattr(pynvml, name)

    # ------------------------------------------------------------------ lifecycle and identity

    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if not self.driver_loaded:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._count("nvmlDeviceGetHandleByIndex")
        return Handle(index)

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        name = str(self.static["nvmlDeviceGetName"])
        if handle.mig_slot is not None:
            return f"{name} MIG {self.mig[handle.mig_slot]['name'].removeprefix('MIG ')}"
        return name

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        base = str(self.static["nvmlDeviceGetUUID"])
        number = handle.gpu + self.uuid_offset
        uuid = base if number == 0 else f"{base[:-4]}{number:04x}"  # derived: the capture has one GPU
        if handle.mig_slot is not None:
            return "MIG" + uuid.removeprefix("GPU")[:-2] + f"{handle.mig_slot:02x}"
        return uuid

    # ------------------------------------------------------------------ MIG

    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:
        return [1, 1] if self.mig else list(self.static["nvmlDeviceGetMigMode"])

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Handle) -> int:
        return len(self.mig) if self.mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, slot: int) -> Handle:
        if slot >= len(self.mig):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return Handle(handle.gpu, slot)

    def nvmlDeviceGetGpuInstanceId(self, handle: Handle) -> int:
        assert handle.mig_slot is not None
        return [1, 2, 3, 4, 5, 6, 7][handle.mig_slot]

    def nvmlDeviceGetMinorNumber(self, handle: Handle) -> int:
        return int(self.static["nvmlDeviceGetMinorNumber"]) if handle.gpu == 0 else handle.gpu

    def nvmlDeviceGetGpuInstanceById(self, handle: Handle, instance_id: int) -> GpuInstance:
        if not self.privileged:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        if not 1 <= instance_id <= len(self.mig):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return GpuInstance(handle.gpu, instance_id)

    def nvmlGpuInstanceGetInfo(self, instance: GpuInstance) -> Any:
        start, size = self.placements[instance.id - 1]
        profile_id = self.mig[instance.id - 1]["id"]
        placement = SimpleNamespace(start=start, size=size)
        return SimpleNamespace(device=Handle(instance.gpu), id=instance.id, profileId=profile_id, placement=placement)

    # ------------------------------------------------------------------ dynamic values

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Any:
        self._count("nvmlDeviceGetUtilizationRates")
        if handle.mig_slot is not None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        row = self._row(handle)
        return SimpleNamespace(gpu=row["util_gpu"], memory=row["util_mem"])

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> Any:
        self._count("nvmlDeviceGetMemoryInfo")
        row = self._row(handle)
        if handle.mig_slot is not None:
            total = int(self.mig[handle.mig_slot]["memorySizeMB"]) << 20
            used = min(total, row["mem_used"] // len(self.mig))
            return SimpleNamespace(total=total, used=used, free=total - used)
        return SimpleNamespace(total=row["mem_total"], used=row["mem_used"], free=row["mem_total"] - row["mem_used"])

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        self._count("nvmlDeviceGetPowerUsage")
        return int(self._row(handle)["power_mw"])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        return int(self._row(handle)["energy_mj"])

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        self._count("nvmlDeviceGetTemperature")
        return int(self._row(handle)["temp_c"])

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int:
        self._count("nvmlDeviceGetClockInfo")
        return int(self._row(handle)["sm_clock_mhz"])

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        self._count("nvmlDeviceGetCurrentClocksEventReasons")
        return int(self._row(handle)["clock_reasons"])

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle) -> list[Any]:
        self._count("nvmlDeviceGetComputeRunningProcesses")
        row = self._row(handle)
        if handle.mig_slot not in (None, 0):
            return []
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used, _, _ in self.processes(handle, row)]

    def nvmlDeviceGetProcessUtilization(self, handle: Handle, since_us: int) -> list[Any]:
        self._count("nvmlDeviceGetProcessUtilization")
        row = self._row(handle)
        busy = [p for p in self.processes(handle, row) if p[2] > 0]
        if not busy:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        stamp = int(self.clock().timestamp() * 1e6)
        return [SimpleNamespace(pid=pid, smUtil=sm, memUtil=mem, timeStamp=stamp) for pid, _, sm, mem in busy]

    def processes(self, handle: Handle, row: dict[str, Any]) -> list[tuple[int, int, int, int]]:
        """(pid, used bytes, SM %, memory %) of each process on the device: the trace row's (its util is the
        process's, as one process ran), plus the second process's from a later row on GPU 0."""
        out = [(p["pid"], p["used"], row["util_gpu"], row["util_mem"]) for p in row["procs"]]
        if self.second_process_after_s is not None and handle.gpu == 0 and handle.mig_slot is None:
            later = self.trace_row(self.second_process_after_s)
            out += [
                (p["pid"] + SECOND_PID_OFFSET, p["used"], later["util_gpu"], later["util_mem"]) for p in later["procs"]
            ]
        return out

    # ------------------------------------------------------------------ replay

    def trace_row(self, later_s: float = 0.0) -> dict[str, Any]:
        """The capture's row for the clock's current time, or ``later_s`` after it (the trace loops)."""
        first, last = self.trace[0]["ts"], self.trace[-1]["ts"]
        offset = ((self.clock() - self.start).total_seconds() + later_s) % (last - first)
        target = first + offset
        lo, hi = 0, len(self.trace) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.trace[mid]["ts"] <= target:
                lo = mid
            else:
                hi = mid - 1
        return self.trace[lo]

    def _row(self, handle: Handle) -> dict[str, Any]:
        lost_at = self.lost_after.get(handle.gpu)
        if lost_at is not None and self.clock() >= lost_at:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return self.trace_row()

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
