"""MIG fit: the smallest profile of its GPU model a workload's demand fits, or why none does.

Definition (README, Definitions, "MIG fit"; pinned by ``tests/test_mig_fit.py``):

**Fit** = the smallest profile of the model (fewest compute slices, then fewest memory slots, then least memory) whose
compute fraction >= compute demand and memory >= memory demand. Media-extension ("+me") profiles are never proposed
(one per GPU, for video work). The whole-GPU profile is no saving: such a workload gets ``fits=false``, that profile,
and a reason "needs the whole GPU (memory: ... / compute: ...)".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis.errors import AnalysisError
from analysis.mig.catalog import MigCatalog, MigGpu, MigProfile, load_catalog
from analysis.units import GIB


@dataclass(frozen=True)
class Fit:
    """The profile a demand fits (or the whole-GPU profile when none smaller does), and why not when it does not."""

    profile: MigProfile | None
    fits: bool
    reason: str | None


def fit_profile(gpu: MigGpu, compute_demand: float, memory_demand_bytes: float) -> Fit:
    """The smallest sub-GPU profile of ``gpu`` with compute fraction >= ``compute_demand`` (fraction of the GPU) and
    memory >= ``memory_demand_bytes``; otherwise the whole-GPU profile with ``fits=False`` and the reason."""
    for p in gpu.sub_gpu:
        if p.compute_fraction >= compute_demand and p.memory_bytes >= memory_demand_bytes:
            return Fit(p, True, None)
    largest_compute = max(p.compute_fraction for p in gpu.sub_gpu)
    largest_memory = max(p.memory_bytes for p in gpu.sub_gpu)
    parts = []
    if memory_demand_bytes > largest_memory:
        parts.append(
            f"memory: needs {memory_demand_bytes / GIB:.1f} GiB, largest sub-GPU profile {largest_memory / GIB:.1f} GiB"
        )
    if compute_demand > largest_compute:
        parts.append(f"compute: needs {compute_demand:.2f} of a GPU, largest sub-GPU profile {largest_compute:.2f}")
    if not parts:
        parts.append(
            f"no sub-GPU profile has both {compute_demand:.2f} of a GPU and {memory_demand_bytes / GIB:.1f} GiB"
        )
    return Fit(gpu.whole, False, f"needs the whole GPU ({'; '.join(parts)})")


def fit(demands: pl.DataFrame, catalog: MigCatalog | None = None) -> pl.DataFrame:
    """``demands`` (from ``demand``) with ``profile``, ``fits`` and ``reason`` (null when it fits)."""
    catalog = catalog or load_catalog()
    results = [_fit_row(catalog, row) for row in demands.iter_rows(named=True)]
    return demands.with_columns(
        pl.Series("profile", [r.profile.name if r.profile else None for r in results], dtype=pl.String),
        pl.Series("fits", [r.fits for r in results], dtype=pl.Boolean),
        pl.Series("reason", [r.reason for r in results], dtype=pl.String),
    )


def _fit_row(catalog: MigCatalog, row: Mapping[str, Any]) -> Fit:
    try:
        gpu = catalog.gpu(row["gpu_model"])
    except AnalysisError as err:
        return Fit(None, False, str(err))
    if row["compute_demand"] is None:
        memory = row["memory_demand_gib"]
        if memory is not None and memory * GIB > max(p.memory_bytes for p in gpu.sub_gpu):
            return fit_profile(gpu, 0.0, memory * GIB)  # memory alone rules out every sub-GPU profile
        return Fit(None, False, "no utilization readings in the window")
    if row["memory_demand_gib"] is None:
        return Fit(None, False, "no memory readings in the window")
    return fit_profile(gpu, row["compute_demand"], row["memory_demand_gib"] * GIB)
