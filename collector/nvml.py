"""NVML sampling on a GPU node (nvidia-ml-py, imported as ``pynvml``).

Every NVML call goes through :class:`NvmlQuery`: bytes are decoded, "not supported" becomes a missing value, a
function the installed driver lacks is logged once and then treated as missing, and a lost GPU raises
:class:`GpuLost` so the sampler can mark that GPU and keep sampling the others.

Costs on a real H200 (``shared/fixtures/nvml-h200/nvml_latency_us.json``): utilization, memory, power, temperature
and clock reads take ~2 us each, the process list ~10 us, but one energy read ~4,000 us. Energy is therefore read on
a slower cadence (``energy_every_s``) and left null in between.

The NVML module is a constructor argument: nodes use the real ``pynvml``; machines without a GPU pass a stand-in
built from a real capture (``tests/nvml_standin.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from collector.errors import CollectorError
from collector.rows import Records, Rows

log = logging.getLogger(__name__)


class NvmlUnavailable(CollectorError):
    def __init__(self, reason: str) -> None:
        super().__init__(
            f"NVML is not available ({reason}): run on a node with the NVIDIA driver loaded, or read "
            "`--dcgm-exporter URL` instead, or try gpuledger with `gpuledger simulate`"
        )


class GpuLost(Exception):
    """NVML says the GPU fell off the bus; the sampler stops reading it."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class NvmlQuery:
    """The one way into NVML: ``query("nvmlDeviceGetPowerUsage", handle)``."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self._absent: set[str] = set()
        self._functions: dict[str, Callable[..., Any]] = {}
        self._quiet = tuple(
            getattr(nvml, name)
            for name in ("NVMLError_NotSupported", "NVMLError_NotFound", "NVMLError_NoData", "NVMLError_NoPermission")
            if hasattr(nvml, name)
        )
        self._lost = tuple(
            getattr(nvml, name) for name in ("NVMLError_GpuIsLost", "NVMLError_GpuNotFound") if hasattr(nvml, name)
        )
        self._missing_function = getattr(nvml, "NVMLError_FunctionNotFound", ())

    def __call__(self, name: str, *args: Any, default: Any = None) -> Any:
        func = self._functions.get(name)
        if func is None:
            if name in self._absent:
                return default
            func = getattr(self.nvml, name, None)
            if func is None:
                return self._absent_once(name, default, "not in this nvidia-ml-py")
            self._functions[name] = func
        try:
            value = func(*args)
        except self._lost as exc:
            raise GpuLost(str(exc)) from exc
        except self._quiet:
            return default
        except self._missing_function:
            return self._absent_once(name, default, "not in this driver")
        return _decoded(value)

    def _absent_once(self, name: str, default: Any, why: str) -> Any:
        self._absent.add(name)
        self._functions.pop(name, None)
        log.info("NVML function %s is %s; its values stay empty", name, why)
        return default


def _decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Device:
    """One whole GPU or one MIG instance, with what does not change while the agent runs."""

    handle: Any
    index: int
    uuid: str
    model: str
    fb_total_bytes: int | None
    mig_profile: str | None = None
    mig_instance_id: int | None = None
    mig_uuid: str | None = None
    parent: Device | None = None
    minor: int | None = None
    """The GPU's ``/dev/nvidia<minor>`` (whole GPUs only): what the NVIDIA DRA driver names it by."""
    gi_profile_id: int | None = None
    """A MIG instance's GPU-instance profile id (``nvidia-smi mig -lgip``'s ID), with ``placement`` its
    (start, size) in memory slices; None where NVML does not tell them (an unprivileged agent)."""
    placement: tuple[int, int] | None = None
    lost: bool = False
    last_energy_at: dt.datetime | None = None
    last_process_ts_us: int = 0
    children: list[Device] = field(default_factory=list)


class NvmlSampler:
    """Reads every GPU (and MIG instance) of this node into ``gpu_samples`` and ``gpu_allocations`` rows."""

    def __init__(
        self,
        *,
        cluster: str,
        node: str,
        nvml: Any = None,
        clock: Callable[[], dt.datetime] = utcnow,
        energy_every_s: float = 60.0,
        holders: Callable[[], Iterable[Holder]] | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.nvml = nvml if nvml is not None else _import_pynvml()
        self.query = NvmlQuery(self.nvml)
        self.cluster = cluster
        self.node = node
        self.clock = clock
        self.energy_every_s = energy_every_s
        self.holders = holders
        self.proc_root = proc_root
        self.devices: list[Device] = []

    def open(self) -> list[Device]:
        try:
            self.nvml.nvmlInit()
        except Exception as exc:  # any failure to start NVML is the same answer for the user
            raise NvmlUnavailable(str(exc) or type(exc).__name__) from None
        q = self.query
        self.devices = []
        for index in range(q("nvmlDeviceGetCount", default=0)):
            handle = q("nvmlDeviceGetHandleByIndex", index)
            memory = q("nvmlDeviceGetMemoryInfo", handle)
            gpu = Device(
                handle=handle,
                index=index,
                uuid=q("nvmlDeviceGetUUID", handle),
                model=q("nvmlDeviceGetName", handle),
                fb_total_bytes=memory.total if memory is not None else None,
                minor=q("nvmlDeviceGetMinorNumber", handle),
            )
            gpu.children = self._mig_instances(gpu)
            self.devices.append(gpu)
        return self.devices

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc)

    def _mig_instances(self, gpu: Device) -> list[Device]:
        q = self.query
        mode = q("nvmlDeviceGetMigMode", gpu.handle)
        if not mode or not mode[0]:
            return []
        out = []
        for slot in range(q("nvmlDeviceGetMaxMigDeviceCount", gpu.handle, default=0)):
            handle = q("nvmlDeviceGetMigDeviceHandleByIndex", gpu.handle, slot)
            if handle is None:
                continue
            name = q("nvmlDeviceGetName", handle) or ""
            memory = q("nvmlDeviceGetMemoryInfo", handle)
            instance_id = q("nvmlDeviceGetGpuInstanceId", handle)
            info = self._gpu_instance_info(gpu, instance_id)
            out.append(
                Device(
                    handle=handle,
                    index=gpu.index,
                    uuid=gpu.uuid,
                    model=gpu.model,
                    fb_total_bytes=memory.total if memory is not None else None,
                    mig_profile=name.rsplit("MIG ", 1)[-1] if "MIG " in name else None,
                    mig_instance_id=instance_id,
                    mig_uuid=q("nvmlDeviceGetUUID", handle),
                    parent=gpu,
                    gi_profile_id=info.profileId if info is not None else None,
                    placement=(info.placement.start, info.placement.size) if info is not None else None,
                )
            )
        return out

    def _gpu_instance_info(self, gpu: Device, instance_id: int | None) -> Any:
        """NVML's ``nvmlGpuInstanceInfo_t`` (profile id, placement) of a GPU instance, None when NVML does not tell
        it: ``nvmlDeviceGetGpuInstanceById`` needs a privileged caller."""
        q = self.query
        instance = q("nvmlDeviceGetGpuInstanceById", gpu.handle, instance_id) if instance_id is not None else None
        info = q("nvmlGpuInstanceGetInfo", instance) if instance is not None else None
        if info is None:
            log.info(
                "GPU %s MIG instance %s: NVML does not tell its placement (it needs a privileged agent); a DRA claim "
                "naming it is not attributed",
                gpu.uuid,
                instance_id,
            )
        return info

    def device_ids(self) -> dict[str, tuple[str, int | None]]:
        """What the kubelet calls each device (GPU UUID, or MIG-<uuid> for an instance) -> (GPU UUID, instance)."""
        ids: dict[str, tuple[str, int | None]] = {}
        for gpu in self.devices:
            ids[gpu.uuid] = (gpu.uuid, None)
            for child in gpu.children:
                if child.mig_uuid:
                    ids[child.mig_uuid] = (gpu.uuid, child.mig_instance_id)
        return ids

    def sample(self) -> Rows:
        """One reading of every GPU that is not lost, as Arrow tables."""
        return self.read().to_rows()

    def read(self) -> Records:
        """One reading of every GPU that is not lost, as records (the agent converts many at once)."""
        now = self.clock()
        samples: list[tuple[Any, ...]] = []
        processes: list[tuple[Any, ...]] = []
        for gpu in self.devices:
            if gpu.lost:
                continue
            try:
                for device in [gpu, *gpu.children]:
                    samples.append(self._read(device, now))
                    processes += self._processes(device, now)
            except GpuLost as exc:
                gpu.lost = True
                log.error("GPU %s (index %d) is lost (%s); sampling the other GPUs", gpu.uuid, gpu.index, exc)
                samples = [s for s in samples if s[3] != gpu.uuid]
                processes = [p for p in processes if p[0] != gpu.uuid]
        return Records(samples, self._allocations(processes, now))

    def _read(self, device: Device, now: dt.datetime) -> tuple[Any, ...]:
        """One gpu_samples row, in the table's column order."""
        q = self.query
        whole = device.parent is None
        handle = device.handle
        util = q("nvmlDeviceGetUtilizationRates", handle)
        memory = q("nvmlDeviceGetMemoryInfo", handle)
        power_mw = q("nvmlDeviceGetPowerUsage", handle) if whole else None
        return (
            now,
            self.cluster,
            self.node,
            device.uuid,
            device.index,
            device.mig_profile,
            device.mig_instance_id,
            device.model,
            float(util.gpu) if util is not None else None,
            None,  # sm_active: NVML has no SM activity; DCGM profiling does
            memory.used if memory is not None else None,
            device.fb_total_bytes,
            power_mw / 1000.0 if power_mw is not None else None,
            self._energy(device, now) if whole else None,
            q("nvmlDeviceGetTemperature", handle, 0) if whole else None,
            q("nvmlDeviceGetClockInfo", handle, 1) if whole else None,
            q("nvmlDeviceGetCurrentClocksEventReasons", handle) if whole else None,
            "nvml",
        )

    def _energy(self, device: Device, now: dt.datetime) -> float | None:
        due = device.last_energy_at is None or (now - device.last_energy_at).total_seconds() >= self.energy_every_s
        if not due:
            return None
        device.last_energy_at = now
        millijoules = self.query("nvmlDeviceGetTotalEnergyConsumption", device.handle)
        return millijoules / 1000.0 if millijoules is not None else None

    def _processes(self, device: Device, now: dt.datetime) -> list[tuple[Any, ...]]:
        """(gpu_uuid, mig_instance_id, pid, used bytes, SM utilization) of each compute process."""
        q = self.query
        running = q("nvmlDeviceGetComputeRunningProcesses", device.handle, default=[]) or []
        if not running:
            return []
        sm_util: dict[int, float] = {}
        if device.parent is None:
            # NotFound here means "no samples since last_process_ts_us", not a failure: the query maps it to [].
            for s in q("nvmlDeviceGetProcessUtilization", device.handle, device.last_process_ts_us, default=[]) or []:
                sm_util[s.pid] = float(s.smUtil)
                device.last_process_ts_us = max(device.last_process_ts_us, int(s.timeStamp))
        return [(device.uuid, device.mig_instance_id, p.pid, p.usedGpuMemory, sm_util.get(p.pid)) for p in running]

    def _allocations(self, processes: list[tuple[Any, ...]], now: dt.datetime) -> list[tuple[Any, ...]]:
        """Holders from the kubelet (pod per GPU) joined with NVML's processes (pid, memory, SM utilization);
        gpu_allocations rows in the table's column order."""
        pods = list(self.holders()) if self.holders else []
        by_device: dict[tuple[str, int | None], list[Holder]] = {}
        for holder in pods:
            by_device.setdefault((holder.gpu_uuid, holder.mig_instance_id), []).append(holder)
        rows = []
        attributed = set()
        for uuid, mig_id, pid, used, util in processes:
            owners = by_device.get((uuid, mig_id), [])
            owner = owners[0] if len(owners) == 1 else self._owner_of(pid, owners)
            if owner is None and owners:
                continue  # a shared GPU's process whose pod cannot be told: its pods split the GPU equally
            pod = owner.names() if owner else (None, None, None, None)
            name = None if owner else process_name(self.proc_root, pid)
            claim = owner.claim if owner else None
            rows.append((now, self.cluster, self.node, uuid, mig_id, *pod, pid, used, util, "nvml", name, claim))
            attributed.add((uuid, mig_id, pod[1]))
        for holder in pods:
            if (holder.gpu_uuid, holder.mig_instance_id, holder.pod) not in attributed:
                rows.append(
                    (
                        now,
                        self.cluster,
                        self.node,
                        holder.gpu_uuid,
                        holder.mig_instance_id,
                        *holder.names(),
                        None,
                        None,
                        None,
                        "nvml",
                        None,
                        holder.claim,
                    )
                )
        return rows

    def _owner_of(self, pid: int, owners: list[Holder]) -> Holder | None:
        """Which of a shared device's pods runs ``pid``: the one named by the process's pod hostname."""
        if not owners:
            return None
        host = pod_hostname(self.proc_root, pid)
        matches = [o for o in owners if o.pod == host]
        return matches[0] if len(matches) == 1 else None


def process_name(proc_root: Path, pid: int) -> str | None:
    """The command name of ``pid`` (``/proc/<pid>/comm``), None when it cannot be read (gone, or another pid
    namespace): what names a GPU process that belongs to no pod."""
    try:
        return (proc_root / str(pid) / "comm").read_text(errors="replace").strip() or None
    except OSError:
        return None


def pod_hostname(proc_root: Path, pid: int) -> str | None:
    """``HOSTNAME`` in the environment of ``pid``: the kubelet sets it to the pod's name (unless the pod spec sets
    ``hostname``), which tells apart the pods time-slicing one GPU. None when it cannot be read."""
    try:
        environ = (proc_root / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"HOSTNAME="):
            return entry[len(b"HOSTNAME=") :].decode(errors="replace") or None
    return None


@dataclass(frozen=True)
class Holder:
    """A pod (from the kubelet's pod-resources API) assigned a GPU or MIG instance of this node."""

    gpu_uuid: str
    mig_instance_id: int | None
    namespace: str
    pod: str
    container: str
    workload: str
    claim: str | None = None
    """``namespace/name`` of the DRA ResourceClaim the device is held through; None for a device plugin's."""

    def names(self) -> tuple[str, str, str, str]:
        """(namespace, pod, container, workload), in gpu_allocations' column order."""
        return (self.namespace, self.pod, self.container, self.workload)


def _import_pynvml() -> ModuleType:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise NvmlUnavailable(f"nvidia-ml-py is not installed: {exc}") from None
    return pynvml
