"""MIG packing: MIG instances placed onto as few GPUs as their profiles' placements allow.

Definition (README, Definitions, "MIG fit"; pinned by ``tests/test_mig_pack.py``):

**Packing**: the fitting workloads (x the most devices they held at once) are packed first-fit decreasing (by compute
slices, then memory slots) onto GPUs of their model. A GPU accepts a set of instances when each profile stays within
its max instance count, the compute slices within the GPU's, and an exact search finds a start for every instance among
its profile's valid placements with no two ``[start, start + size)`` overlapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analysis.mig.catalog import MigGpu


@dataclass(frozen=True)
class PackItem:
    """One MIG instance to place: a profile for one replica of one workload."""

    profile: str
    namespace: str | None = None
    workload: str | None = None
    replica: int = 0


@dataclass(frozen=True)
class Placement:
    """An instance on a GPU: ``profile`` at ``start``, occupying slots ``[start, start + size)``."""

    profile: str
    start: int
    size: int
    slices: int
    namespace: str | None = None
    workload: str | None = None
    replica: int = 0


@dataclass(frozen=True)
class GpuLayout:
    """One MIG GPU of the packing: its model (as telemetry names it), its index in that model, its instances."""

    gpu_model: str
    index: int
    placements: tuple[Placement, ...]

    @property
    def slices_used(self) -> int:
        return sum(p.slices for p in self.placements)

    def mig_devices(self) -> dict[str, int]:
        """Profile -> count, as mig-parted's ``mig-devices`` wants it."""
        counts: dict[str, int] = {}
        for p in self.placements:
            counts[p.profile] = counts.get(p.profile, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu_model": self.gpu_model,
            "index": self.index,
            "mig_devices": self.mig_devices(),
            "placements": [
                {
                    "profile": p.profile,
                    "start": p.start,
                    "size": p.size,
                    "namespace": p.namespace,
                    "workload": p.workload,
                    "replica": p.replica,
                }
                for p in self.placements
            ],
        }


def _footprint(gpu: MigGpu, name: str) -> tuple[int, int, str]:
    """Largest footprint first, so the exact search places the hardest instances first."""
    p = gpu.profile(name)
    return (-p.memory_slots, -p.slices, p.name)


def _canonical(gpu: MigGpu, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(gpu.profile(n).name for n in sorted(names, key=lambda n: _footprint(gpu, n)))


def _arrange(gpu: MigGpu, names: tuple[str, ...]) -> tuple[int, ...] | None:
    """Start slots for ``names`` (canonical order) on one GPU, or None when no valid arrangement exists."""
    profiles = [gpu.profile(n) for n in names]
    if sum(p.slices for p in profiles) > gpu.compute_slices:
        return None
    if sum(p.memory_slots for p in profiles) > gpu.memory_slots:
        return None
    for name in set(names):
        if names.count(name) > gpu.profile(name).max_instances:
            return None
    starts: list[int] = []

    def place(k: int, occupied: int) -> bool:
        if k == len(profiles):
            return True
        p = profiles[k]
        # identical profiles take increasing starts: the same arrangement is never tried twice
        floor = starts[k - 1] if k and names[k - 1] == names[k] else -1
        for s in p.placements:
            mask = ((1 << p.memory_slots) - 1) << s
            if s <= floor or occupied & mask:
                continue
            starts.append(s)
            if place(k + 1, occupied | mask):
                return True
            starts.pop()
        return False

    return tuple(starts) if place(0, 0) else None


def arrange(gpu: MigGpu, profiles: Sequence[str]) -> tuple[Placement, ...] | None:
    """A valid arrangement of ``profiles`` on one GPU of ``gpu`` (each at one of its profile's valid placements, no
    overlap, within instance counts and compute slices), or None when there is none. For checking mig-parted
    layouts."""
    names = _canonical(gpu, profiles)
    starts = _arrange(gpu, names)
    if starts is None:
        return None
    placed = [
        Placement(n, s, gpu.profile(n).memory_slots, gpu.profile(n).slices) for n, s in zip(names, starts, strict=True)
    ]
    return tuple(sorted(placed, key=lambda p: p.start))


def pack(gpu: MigGpu, items: Sequence[PackItem], gpu_model: str | None = None) -> tuple[GpuLayout, ...]:
    """First-fit decreasing: items by compute slices, then memory slots, then memory (then names, for a stable
    answer), each onto the first GPU that still has a valid arrangement with it added, else onto a new GPU."""
    model = gpu_model or gpu.model
    feasible: dict[tuple[str, ...], tuple[int, ...] | None] = {}

    def solve(names: tuple[str, ...]) -> tuple[int, ...] | None:
        if names not in feasible:
            feasible[names] = _arrange(gpu, names)
        return feasible[names]

    def order(item: PackItem) -> tuple[Any, ...]:
        p = gpu.profile(item.profile)
        return (
            -p.slices,
            -p.memory_slots,
            -p.memory_mib,
            p.name,
            item.namespace or "",
            item.workload or "",
            item.replica,
        )

    bins: list[list[PackItem]] = []
    free: list[tuple[int, int]] = []  # per bin: compute slices and memory slots still free (a cheap first test)
    for item in sorted(items, key=order):
        p = gpu.profile(item.profile)
        for b, contents in enumerate(bins):
            slices, slots = free[b]
            if p.slices > slices or p.memory_slots > slots:
                continue
            if solve(_canonical(gpu, [i.profile for i in (*contents, item)])) is not None:
                contents.append(item)
                free[b] = (slices - p.slices, slots - p.memory_slots)
                break
        else:
            bins.append([item])
            free.append((gpu.compute_slices - p.slices, gpu.memory_slots - p.memory_slots))

    layouts = []
    for index, contents in enumerate(bins):
        ordered = sorted(contents, key=lambda i: (_footprint(gpu, i.profile), order(i)))
        starts = solve(_canonical(gpu, [i.profile for i in ordered]))
        assert starts is not None, "a bin only ever holds an arrangeable set"
        placed = []
        for i, s in zip(ordered, starts, strict=True):
            p = gpu.profile(i.profile)
            placed.append(Placement(p.name, s, p.memory_slots, p.slices, i.namespace, i.workload, i.replica))
        layouts.append(GpuLayout(model, index, tuple(sorted(placed, key=lambda p: p.start))))
    return tuple(layouts)
