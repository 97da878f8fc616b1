"""A stand-in for the ``pynvml`` module, built from the real H200 capture in ``tests/fixtures/nvml-h200/``.

Static answers (name, UUID, memory total, power limit, MIG profile table) come from ``nvml_static.json``; dynamic
answers (utilization, memory used, power, energy, temperature, SM clock, processes) replay ``nvml_trace.jsonl`` by
the injected clock, looping over its 55 s. NVML's own error classes and constants are the real ones from
nvidia-ml-py, so the sampler's error handling is exercised as on a node.

What the capture does not contain is derived and marked as such:
- ``count > 1`` replicates the GPU with derived UUIDs (the capture has one GPU);
- ``mig=[...]`` puts the GPU in MIG mode with instances of the captured profiles (the captured GPU had MIG off):
  memory totals come from the profile table, utilization is NotSupported on MIG handles as on real hardware;
- per-process SM utilization is the device utilization for the trace's process when the GPU is busy, and NotFound
  (NVML's "no samples since") otherwise, mirroring the trace's NotFound errors.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml


@dataclass(frozen=True)
class Handle:
    gpu: int
    mig_slot: int | None = None


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
    ) -> None:
        self.static = json.loads((capture_dir / "nvml_static.json").read_text())["devices"][0]
        self.trace = [json.loads(line) for line in (capture_dir / "nvml_trace.jsonl").read_text().splitlines() if line]
        self.clock = clock
        self.count = count
        self.lost_after = lost_after or {}
        self.driver_loaded = driver_loaded
        self.start = clock()
        self.calls: dict[str, int] = {}
        profiles = {
            p["info"]["name"].removeprefix("MIG "): p["info"]
            for p in self.static["gpu_instance_profiles"]
            if "name" in p["info"]
        }
        self.mig = [profiles[name] for name in (mig or [])]

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
        uuid = base if handle.gpu == 0 else f"{base[:-4]}{handle.gpu:04x}"  # derived: the capture has one GPU
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
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used"]) for p in row["procs"]]

    def nvmlDeviceGetProcessUtilization(self, handle: Handle, since_us: int) -> list[Any]:
        self._count("nvmlDeviceGetProcessUtilization")
        row = self._row(handle)
        if not row["procs"] or row["util_gpu"] == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        stamp = int(self.clock().timestamp() * 1e6)
        return [
            SimpleNamespace(pid=p["pid"], smUtil=row["util_gpu"], memUtil=row["util_mem"], timeStamp=stamp)
            for p in row["procs"]
        ]

    # ------------------------------------------------------------------ replay

    def trace_row(self) -> dict[str, Any]:
        """The capture's row for the clock's current time (the trace loops)."""
        first, last = self.trace[0]["ts"], self.trace[-1]["ts"]
        offset = (self.clock() - self.start).total_seconds() % (last - first)
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
