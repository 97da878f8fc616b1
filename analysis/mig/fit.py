"""MIG fit: the smallest profile of its GPU model a workload's demand fits, or why none does, as a sentence.

Definition (README, Definitions, "MIG fit"; pinned by ``tests/test_mig_fit.py`` and ``tests/test_mig_history.py``):

**Fit** = the smallest profile of the model (fewest compute slices, then fewest memory slots, then least memory) whose
compute fraction >= compute demand and memory >= memory demand. Media-extension ("+me") profiles are never proposed
(one per GPU, for video work). The whole-GPU profile is no saving: such a workload gets ``fits=false``, that profile,
and a reason "needs the whole GPU: ..." naming what was measured, the largest slice it was held against, and what
would make it fit.

**No claim** (``profile`` null, ``fits=false``), in this order: the GPU model cannot be cut (not MIG-capable, not in
the catalog, unnamed); no utilization readings; no memory readings; less history than ``min_history`` ("not enough
history (N h of M h): ..."). Such a workload is never packed, counts no savings and gets no mig-parted layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis.errors import AnalysisError
from analysis.mig.assumptions import DEFAULT_ASSUMPTIONS, MigAssumptions
from analysis.mig.catalog import MigCatalog, MigGpu, MigProfile, NotMigCapable, UnknownGpuModel, load_catalog
from analysis.units import GIB

TOLERANCE = 1e-9
"""Compute fractions within this of a demand hold it: a demand capped at an instance's share, added up over its
minutes, comes out a rounding error above that share."""
NO_UTILIZATION = (
    "no utilization readings in the window: MIG fit sizes a slice from sm_active or util_pct and this workload's "
    "GPUs reported neither; export DCGM_FI_PROF_SM_ACTIVE or DCGM_FI_DEV_GPU_UTIL from dcgm-exporter, or run the "
    "node agent on its nodes"
)
NO_MEMORY = (
    "no memory readings in the window: MIG fit needs the peak framebuffer memory used (fb_used) and this workload's "
    "GPUs reported none; export DCGM_FI_DEV_FB_USED from dcgm-exporter, or run the node agent on its nodes"
)


@dataclass(frozen=True)
class Fit:
    """The profile a demand fits (or the whole-GPU profile when none smaller does), and why not when it does not."""

    profile: MigProfile | None
    fits: bool
    reason: str | None


@dataclass(frozen=True)
class Measured:
    """What a demand was computed from, so that a reason can say it: the percentile of utilization (fraction of a
    GPU), the peak memory, the multipliers applied, the share of a GPU one replica held, and the history."""

    percentile: float
    p_value: float | None
    compute_multiplier: float | None
    peak_gib: float | None
    memory_margin: float
    compute_held: float
    history_hours: float


def _largest(gpu: MigGpu, key: str) -> MigProfile:
    """The sub-GPU profile with the most compute (``key="compute"``) or memory, the smallest such one on a tie."""
    if key == "compute":
        best = max(p.compute_fraction for p in gpu.sub_gpu)
        return min((p for p in gpu.sub_gpu if p.compute_fraction == best), key=lambda p: p.size_key)
    most = max(p.memory_bytes for p in gpu.sub_gpu)
    return min((p for p in gpu.sub_gpu if p.memory_bytes == most), key=lambda p: p.size_key)


def _compute_clause(gpu: MigGpu, demand: float, m: Measured | None) -> tuple[str, str]:
    """What was measured against the largest compute slice, and what would make the workload fit it."""
    slice_ = _largest(gpu, "compute")
    against = (
        f"more than the {slice_.compute_fraction:.2f} of a GPU of the largest MIG slice on {gpu.model} ({slice_.name})"
    )
    if m is None or m.p_value is None or m.compute_multiplier is None:
        return (
            f"its compute demand is {demand:.2f} of a GPU, {against}",
            f"bring its compute demand under {slice_.compute_fraction:.2f} of a GPU to fit {slice_.name}",
        )
    pct = f"p{round(m.percentile * 100)}"
    raw = m.p_value * m.compute_multiplier
    found = (
        f"its {pct} compute is {m.p_value * 100:.1f}% of the GPU, x {m.compute_multiplier:.2f} margin "
        f"({m.history_hours:.1f} h of history) = {raw:.2f} of a GPU"
    )
    if raw > demand:
        found += f", capped at the {m.compute_held:.2f} of a GPU it holds"
    limit = slice_.compute_fraction / m.compute_multiplier * 100
    return f"{found}, {against}", f"bring its {pct} compute under {limit:.1f}% of the GPU to fit {slice_.name}"


def _memory_clause(gpu: MigGpu, demand_bytes: float, m: Measured | None) -> tuple[str, str]:
    """What was measured against the largest memory slice, and what would make the workload fit it."""
    slice_ = _largest(gpu, "memory")
    against = f"more than the {slice_.memory_gib:.1f} GiB of the largest MIG slice on {gpu.model} ({slice_.name})"
    if m is None or m.peak_gib is None:
        return (
            f"its memory demand is {demand_bytes / GIB:.1f} GiB, {against}",
            f"bring its memory demand under {slice_.memory_gib:.1f} GiB to fit {slice_.name}",
        )
    return (
        f"its peak memory is {m.peak_gib:.1f} GiB, x {m.memory_margin:g} margin = {demand_bytes / GIB:.1f} GiB, "
        f"{against}",
        f"bring its peak memory under {slice_.memory_gib / m.memory_margin:.1f} GiB to fit {slice_.name}",
    )


def fit_profile(
    gpu: MigGpu, compute_demand: float, memory_demand_bytes: float, measured: Measured | None = None
) -> Fit:
    """The smallest sub-GPU profile of ``gpu`` with compute fraction >= ``compute_demand`` (fraction of the GPU) and
    memory >= ``memory_demand_bytes``; otherwise the whole-GPU profile with ``fits=False`` and the reason, which
    cites ``measured`` when given."""
    for p in gpu.sub_gpu:
        if p.compute_fraction >= compute_demand - TOLERANCE and p.memory_bytes >= memory_demand_bytes:
            return Fit(p, True, None)
    clauses = []
    if memory_demand_bytes > _largest(gpu, "memory").memory_bytes:
        clauses.append(_memory_clause(gpu, memory_demand_bytes, measured))
    if compute_demand > _largest(gpu, "compute").compute_fraction:
        clauses.append(_compute_clause(gpu, compute_demand, measured))
    if not clauses:
        enough_memory = next(p for p in gpu.sub_gpu if p.memory_bytes >= memory_demand_bytes)
        found = (
            f"no MIG slice on {gpu.model} has both {compute_demand:.2f} of a GPU and {memory_demand_bytes / GIB:.1f} "
            f"GiB (the smallest with enough memory, {enough_memory.name}, gives {enough_memory.compute_fraction:.2f} "
            "of a GPU)"
        )
        return Fit(gpu.whole, False, f"needs the whole GPU: {found}. Keep it on a whole GPU.")
    findings = "; ".join(found for found, _ in clauses)
    remedies = " and ".join(remedy for _, remedy in clauses)
    return Fit(gpu.whole, False, f"needs the whole GPU: {findings}. Keep it on a whole GPU, or {remedies}.")


def fit(
    demands: pl.DataFrame, catalog: MigCatalog | None = None, assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS
) -> pl.DataFrame:
    """``demands`` (from ``demand``) with ``profile``, ``fits`` and ``reason`` (null when it fits)."""
    catalog = catalog or load_catalog()
    results = [_fit_row(catalog, row, assumptions) for row in demands.iter_rows(named=True)]
    return demands.with_columns(
        pl.Series("profile", [r.profile.name if r.profile else None for r in results], dtype=pl.String),
        pl.Series("fits", [r.fits for r in results], dtype=pl.Boolean),
        pl.Series("reason", [r.reason for r in results], dtype=pl.String),
    )


def not_enough_history(
    history_hours: float, assumptions: MigAssumptions, gpu: MigGpu | None = None, memory_demand_gib: float | None = None
) -> str:
    """The reason for a workload observed for less than ``assumptions.min_history``; when its peak memory so far
    already rules out every slice of ``gpu`` it says so too, as more history can only raise a peak."""
    needed = assumptions.min_history_hours
    reason = (
        f"not enough history ({history_hours:.1f} h of {needed:g} h): MIG fit claims a slice only from {needed:g} h "
        f"of observed minutes, as a shorter history can miss the daily peak; look again once it has run "
        f"{max(needed - history_hours, 0.0):.1f} h more, or lower mig_min_history_hours"
    )
    if gpu is not None and memory_demand_gib is not None:
        largest = _largest(gpu, "memory")
        if memory_demand_gib * GIB > largest.memory_bytes:
            reason += (
                f". Its peak memory so far x {assumptions.memory_margin:g} margin, {memory_demand_gib:.1f} GiB, is "
                f"already more than the {largest.memory_gib:.1f} GiB of the largest MIG slice on {gpu.model} "
                f"({largest.name}), and more history can only raise it, so it is likely to keep needing a whole GPU"
            )
    return reason


def _model_reason(err: AnalysisError) -> str:
    if isinstance(err, NotMigCapable):
        return f"{err}: it cannot be cut into MIG slices; to share it, use time-slicing instead"
    if isinstance(err, UnknownGpuModel) and err.gpu_model is None:
        return f"{err}; have dcgm-exporter report modelName, or run the node agent, on its nodes"
    return str(err)


def _fit_row(catalog: MigCatalog, row: Mapping[str, Any], a: MigAssumptions) -> Fit:
    try:
        gpu = catalog.gpu(row["gpu_model"])
    except AnalysisError as err:
        return Fit(None, False, _model_reason(err))
    if not row["minutes"]:
        return Fit(None, False, NO_UTILIZATION)
    memory = row["memory_demand_gib"]
    if memory is None:
        return Fit(None, False, NO_MEMORY)
    history = float(row["history_hours"] or 0.0)
    if not a.enough_history(history):
        return Fit(None, False, not_enough_history(history, a, gpu, memory))
    p_value = None if row["util_pct_p95"] is None else row["util_pct_p95"] / 100.0
    confidence = row["confidence"]
    measured = Measured(
        percentile=a.percentile,
        p_value=p_value,
        compute_multiplier=a.margin(confidence) if confidence else None,
        peak_gib=row["peak_mem_gib"],
        memory_margin=a.memory_margin,
        compute_held=float(row["compute_held"] if row["compute_held"] is not None else 1.0),
        history_hours=history,
    )
    if row["compute_demand"] is None:  # no histogram: memory alone rules out every sub-GPU profile
        if memory * GIB <= _largest(gpu, "memory").memory_bytes:
            return Fit(None, False, NO_UTILIZATION)
        return fit_profile(gpu, 0.0, memory * GIB, measured)
    return fit_profile(gpu, row["compute_demand"], memory * GIB, measured)
