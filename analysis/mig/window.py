"""The MIG fit of a window, from its priced minute groups and the daily MIG demand parts the rollup stores (pure).

A workload's peak memory decides which daily histograms are worth adding up (only workloads a MIG slice could hold
are kept), and the GPU-hour price the fleet paid for each model prices the GPUs a packing frees.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from analysis import mig
from analysis.costs import observed_model_prices


def workload_peaks(groups: pl.DataFrame) -> pl.DataFrame:
    """Per (namespace, workload, gpu_model) held by a workload: the peak framebuffer memory used
    (``fb_used_max_bytes``) in the window's minute groups."""
    return (
        groups.filter(pl.col("workload").is_not_null())
        .group_by("namespace", "workload", "gpu_model")
        .agg(pl.col("fb_used_max_bytes").max())
    )


def window_fit(
    groups: pl.DataFrame, histograms: pl.DataFrame, devices: pl.DataFrame, assumptions: mig.MigAssumptions
) -> dict[str, Any]:
    """The report's ``mig_fit`` section: ``groups`` are the window's priced minute groups, ``histograms`` and
    ``devices`` the window's daily ``mig.demand_parts`` as stored."""
    models = observed_model_prices(groups)
    histogram, held = mig.combine_demand_parts(histograms, devices, workload_peaks(groups), assumptions)
    return mig.fit_and_pack(
        mig.demand_from_parts(histogram, held, assumptions),
        dict(zip(models["gpu_model"], models["usd_per_gpu_hour"], strict=True)),
        dict(zip(models["gpu_model"], models["price_source"], strict=True)),
        assumptions,
    ).to_report()
