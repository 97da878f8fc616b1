"""The MIG profile catalog: the GPU-instance profiles of each MIG-capable GPU model, with their sources.

Definitions (README, Definitions, "MIG fit"; pinned by ``tests/test_mig_catalog.py``):

**Catalog.** ``analysis/data/mig_catalog.json`` lists the GPU-instance profiles of each MIG-capable GPU model: compute
slices (the N of "Ng"), the memory NVML reports (MiB), SM count, max instances per GPU and the valid placements (start
slot and size on the memory-slot grid: 8 slots for 7 compute slices, 4 for A30's 4). Every value names its source:
"real: ..." (the H200 NVML capture, GFD labels of a real H100, nvidia-smi XML of a real A100), "derived: ..." (how),
the go-nvml mock geometry, mig-parted's counts, the MIG User Guide placement rules; ``analysis/data/SOURCES.md`` says
where each comes from. Telemetry names ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3") map to entries compared as
``analysis.gpu_names.gpu_model_key``, a leading "Tesla" dropped too; L4, A10G, T4 and the like are "not MIG-capable".

**Compute fraction of a profile** = its SMs / the full GPU's SMs where the SM counts come from real data (H200, H100,
A100), else slices / compute slices (A30, B200, whose SM counts are only derived). Utilization is measured against the
whole GPU, so this is the share of the GPU a profile gives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from analysis.errors import AnalysisError
from analysis.gpu_names import gpu_model_key
from analysis.instances import DATA
from analysis.units import MIB

CATALOG_JSON = DATA / "mig_catalog.json"


class NotMigCapable(AnalysisError):
    def __init__(self, gpu_model: str) -> None:
        self.gpu_model = gpu_model
        super().__init__(f"GPU model {gpu_model} is not MIG-capable")


class UnknownGpuModel(AnalysisError):
    def __init__(self, gpu_model: str | None) -> None:
        self.gpu_model = gpu_model
        if gpu_model is None:
            super().__init__("GPU model unknown: the telemetry names no gpu_model, so MIG fit is not assessed")
        else:
            super().__init__(
                f"GPU model {gpu_model!r} is not in the MIG catalog (analysis/data/mig_catalog.json), so MIG fit is "
                "not assessed; add its profiles, with their sources, to assess it"
            )


class UnknownMigProfile(AnalysisError):
    def __init__(self, model: str, profile: str, known: Sequence[str]) -> None:
        super().__init__(f"MIG profile {profile!r} does not exist on {model}; its profiles: {', '.join(known)}")


@dataclass(frozen=True)
class MigProfile:
    """One GPU-instance profile of one GPU model; every figure carries its source (see the module docstring)."""

    name: str
    slices: int
    """Compute slices: the N of "Ng"."""
    memory_slots: int
    """Size on the placement grid: an instance at ``start`` occupies ``[start, start + memory_slots)``."""
    placements: tuple[int, ...]
    """Valid start slots."""
    memory_mib: int
    sm_count: int
    max_instances: int
    compute_fraction: float
    """Share of the whole GPU's compute: SMs / full-GPU SMs, or slices / compute slices (see ``MigGpu``)."""
    nvml_profile: str
    memory_source: str
    sm_source: str
    max_instances_source: str
    placement_source: str

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def media_extended(self) -> bool:
        return "+me" in self.name

    @property
    def size_key(self) -> tuple[int, int, int, int, str]:
        """Order of "smaller": compute slices, memory slots, memory, SMs, then the name."""
        return (self.slices, self.memory_slots, self.memory_mib, self.sm_count, self.name)


@dataclass(frozen=True)
class MigGpu:
    """A MIG-capable GPU model: its grid, its full-GPU SM count and its profiles, smallest first."""

    model: str
    telemetry_names: tuple[str, ...]
    pci_device_ids: tuple[str, ...]
    compute_slices: int
    memory_slots: int
    gpu_sms: int
    gpu_sms_source: str
    compute_basis: str
    """``sms`` (compute fraction = SMs / gpu_sms) or ``slices`` (= slices / compute_slices)."""
    profiles: tuple[MigProfile, ...]

    def profile(self, name: str) -> MigProfile:
        """The profile called ``name`` ("3g.40gb"; an NVML "MIG 3g.40gb" works too)."""
        wanted = name.removeprefix("MIG ").strip()
        for p in self.profiles:
            if p.name == wanted:
                return p
        raise UnknownMigProfile(self.model, name, [p.name for p in self.profiles])

    @property
    def whole(self) -> MigProfile:
        """The profile that takes every compute slice (7g, or A30's 4g): no saving."""
        return max(self.profiles, key=lambda p: p.size_key)

    @property
    def sub_gpu(self) -> tuple[MigProfile, ...]:
        """Profiles a workload may be fitted to: smaller than the whole GPU and without media extensions."""
        whole = self.whole
        return tuple(p for p in self.profiles if p is not whole and not p.media_extended)

    def rank(self, profile: str) -> int:
        """Position of ``profile`` in the size order (0 = smallest); the whole GPU ranks last."""
        return [p.name for p in self.profiles].index(self.profile(profile).name)


def _catalog_key(name: str) -> str:
    """``gpu_model_key`` without the Tesla brand older GPUs report ("Tesla T4"), so the first word is the family."""
    return gpu_model_key(name).removeprefix("tesla ")


@dataclass(frozen=True)
class MigCatalog:
    """The shipped MIG catalog: the profiles per GPU model and the families that have no MIG."""

    gpus: tuple[MigGpu, ...]
    not_mig_capable: frozenset[str]
    sources: Mapping[str, str] = field(default_factory=dict)

    def gpu(self, gpu_model: str | None) -> MigGpu:
        """The catalog entry for a telemetry GPU model name.

        Raises ``NotMigCapable`` for models without MIG (L4, A10G, T4...) and ``UnknownGpuModel`` otherwise.
        """
        if gpu_model is None:
            raise UnknownGpuModel(None)
        key = _catalog_key(gpu_model)
        for gpu in self.gpus:
            if key in {_catalog_key(gpu.model), *(_catalog_key(n) for n in gpu.telemetry_names)}:
                return gpu
        if key.split(" ", 1)[0].upper() in self.not_mig_capable:
            raise NotMigCapable(gpu_model)
        raise UnknownGpuModel(gpu_model)

    def frame(self) -> pl.DataFrame:
        """One row per (model, profile), smallest profile first, with every value's source."""
        rows = [
            {
                "model": gpu.model,
                "profile": p.name,
                "nvml_profile": p.nvml_profile,
                "slices": p.slices,
                "memory_slots": p.memory_slots,
                "placements": list(p.placements),
                "memory_mib": p.memory_mib,
                "memory_gib": p.memory_gib,
                "sm_count": p.sm_count,
                "gpu_sms": gpu.gpu_sms,
                "compute_fraction": p.compute_fraction,
                "max_instances": p.max_instances,
                "memory_source": p.memory_source,
                "sm_source": p.sm_source,
                "max_instances_source": p.max_instances_source,
                "placement_source": p.placement_source,
            }
            for gpu in self.gpus
            for p in gpu.profiles
        ]
        return pl.DataFrame(rows)


def _gpu_from_json(entry: Mapping[str, Any]) -> MigGpu:
    basis = entry["compute_fraction"]
    if basis not in ("sms", "slices"):
        raise ValueError(f"{entry['model']}: compute_fraction must be 'sms' or 'slices', not {basis!r}")
    profiles = []
    for p in entry["profiles"]:
        fraction = p["sm_count"] / entry["gpu_sms"] if basis == "sms" else p["slices"] / entry["compute_slices"]
        profiles.append(
            MigProfile(
                name=p["name"],
                slices=p["slices"],
                memory_slots=p["memory_slots"],
                placements=tuple(p["placements"]),
                memory_mib=p["memory_mib"],
                sm_count=p["sm_count"],
                max_instances=p["max_instances"],
                compute_fraction=fraction,
                nvml_profile=p["nvml_profile"],
                memory_source=p["memory_source"],
                sm_source=p["sm_source"],
                max_instances_source=p["max_instances_source"],
                placement_source=p["placement_source"],
            )
        )
    return MigGpu(
        model=entry["model"],
        telemetry_names=tuple(entry["telemetry_names"]),
        pci_device_ids=tuple(entry["pci_device_ids"]),
        compute_slices=entry["compute_slices"],
        memory_slots=entry["memory_slots"],
        gpu_sms=entry["gpu_sms"],
        gpu_sms_source=entry["gpu_sms_source"],
        compute_basis=basis,
        profiles=tuple(sorted(profiles, key=lambda p: p.size_key)),
    )


@cache
def load_catalog(path: Path = CATALOG_JSON) -> MigCatalog:
    """Read the MIG catalog (shipped with the package; sources in ``analysis/data/SOURCES.md``)."""
    raw = json.loads(path.read_text())
    return MigCatalog(
        gpus=tuple(_gpu_from_json(g) for g in raw["gpus"]),
        not_mig_capable=frozenset(f.upper() for f in raw["not_mig_capable"]["families"]),
        sources=dict(raw["sources"]),
    )
