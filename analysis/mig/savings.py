"""The MIG fit of a window: demand, fit and packing together, and the GPUs and dollars the packing frees.

Definition (README, Definitions, "MIG fit"; pinned by ``tests/test_mig_pack.py``):

**Savings**: ``gpus_now`` = distinct ``gpu_uuid`` the fitting workloads held in the window (per model),
``gpus_needed`` = GPUs in the packing, freed = max(0, now - needed), savings per month = freed x the GPU-hour price
x 730. Prices come in as a mapping with a source per model: this module looks up no price. A GPU that a fitting
workload shared in the window with one that does not fit still counts in ``gpus_now``: the estimate assumes the
fitting workloads' GPUs go back whole. Only fitting workloads are packed: one with too little history, or whose
model or readings rule MIG out, frees nothing and gets no layout.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis.errors import AnalysisError
from analysis.mig.assumptions import DEFAULT_ASSUMPTIONS, MigAssumptions
from analysis.mig.catalog import MigCatalog, load_catalog
from analysis.mig.demand import demand
from analysis.mig.fit import fit
from analysis.mig.pack import GpuLayout, PackItem, pack
from analysis.units import HOURS_PER_MONTH

REPORT_COLUMNS = ("namespace", "workload", "gpu_model", "peak_mem_gib", "util_pct_p95", "profile", "fits")


class MissingGpuPrice(AnalysisError):
    def __init__(self, gpu_model: str, freed: int) -> None:
        super().__init__(
            f"no GPU-hour price for {gpu_model}, of which MIG packing frees {freed} GPU(s): "
            f"pass prices[{gpu_model!r}] (USD per GPU-hour, >= 0) and its source"
        )


WORKLOAD_COLUMNS = (
    *REPORT_COLUMNS,
    "reason",
    "compute_demand",
    "memory_demand_gib",
    "confidence",
    "history_hours",
    "compute_held",
    "gpu_hours",
    "replicas",
    "gpus_held",
    "minutes",
)

BY_MODEL_SCHEMA: dict[str, pl.DataType] = {
    "gpu_model": pl.String(),
    "gpus_now": pl.Int64(),
    "gpus_needed": pl.Int64(),
    "gpus_freed": pl.Int64(),
    "usd_per_gpu_hour": pl.Float64(),
    "price_source": pl.String(),
    "savings_usd_month": pl.Float64(),
}


@dataclass(frozen=True)
class MigFit:
    """MIG fit of a window: per workload, per GPU model, the packing, and the assumptions behind them."""

    workloads: pl.DataFrame
    """One row per (namespace, workload, gpu_model): ``WORKLOAD_COLUMNS``."""
    by_model: pl.DataFrame
    """One row per GPU model with fitting workloads: ``BY_MODEL_SCHEMA``."""
    layouts: tuple[GpuLayout, ...]
    gpus_now: int
    gpus_needed: int
    savings_usd_month: float
    assumptions: dict[str, Any]

    @property
    def gpus_freed(self) -> int:
        return int(self.by_model["gpus_freed"].sum())

    def to_report(self) -> dict[str, Any]:
        """The report's ``mig_fit`` object (the README's `mig_fit` keys first, then the detail)."""
        workloads = self.workloads.with_columns(
            pl.col("peak_mem_gib", "util_pct_p95", "memory_demand_gib", "gpu_hours").round(2),
            pl.col("compute_demand", "compute_held").round(4),
            pl.col("confidence").round(3),
            pl.col("history_hours").round(2),
        )
        return {
            "workloads": workloads.to_dicts(),
            "gpus_now": self.gpus_now,
            "gpus_needed": self.gpus_needed,
            "savings_usd_month": round(self.savings_usd_month, 2),
            "gpus_freed": self.gpus_freed,
            "by_model": self.by_model.with_columns(pl.col("savings_usd_month").round(2)).to_dicts(),
            "layouts": [layout.to_dict() for layout in self.layouts],
            "assumptions": self.assumptions,
        }


def mig_fit(
    minutes: pl.LazyFrame,
    prices: Mapping[str, float],
    price_sources: Mapping[str, str],
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
    gpu_models: Sequence[str | None] | None = None,
    peaks: pl.DataFrame | None = None,
) -> MigFit:
    """Demand, fit, packing and savings for the ``gpu_minutes`` rows of one window.

    ``prices``: USD per GPU-hour by GPU model as telemetry names it, with ``price_sources`` saying where each came
    from. A model whose packing frees GPUs must have a price (``MissingGpuPrice`` otherwise).
    """
    catalog = catalog or load_catalog()
    return fit_and_pack(
        demand(minutes, assumptions, catalog, gpu_models, peaks), prices, price_sources, assumptions, catalog
    )


def fit_and_pack(
    demands: pl.DataFrame,
    prices: Mapping[str, float],
    price_sources: Mapping[str, str],
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
) -> MigFit:
    """``mig_fit`` from already computed demands (``demand``, or ``demand_from_parts`` of daily summaries)."""
    catalog = catalog or load_catalog()
    fitted = fit(demands, catalog, assumptions)
    workloads = fitted.with_columns(pl.col("gpu_uuids").list.len().cast(pl.Int64).alias("gpus_held")).select(
        WORKLOAD_COLUMNS
    )

    layouts: list[GpuLayout] = []
    by_model = []
    fitting = fitted.filter(pl.col("fits"))
    for (model,), group in sorted(fitting.group_by("gpu_model"), key=lambda g: str(g[0][0])):
        assert isinstance(model, str)
        items = [
            PackItem(row["profile"], row["namespace"], row["workload"], replica)
            for row in group.iter_rows(named=True)
            for replica in range(row["replicas"])
        ]
        packed = pack(catalog.gpu(model), items, model)
        layouts.extend(packed)
        now = len(set(itertools.chain.from_iterable(group["gpu_uuids"].to_list())))
        freed = max(0, now - len(packed))
        price = prices.get(model)
        if freed and (price is None or not math.isfinite(price) or price < 0):
            raise MissingGpuPrice(model, freed)
        by_model.append(
            {
                "gpu_model": model,
                "gpus_now": now,
                "gpus_needed": len(packed),
                "gpus_freed": freed,
                "usd_per_gpu_hour": price,
                "price_source": price_sources.get(model),
                "savings_usd_month": freed * (price or 0.0) * HOURS_PER_MONTH,
            }
        )
    models = pl.DataFrame(by_model, schema=BY_MODEL_SCHEMA)
    return MigFit(
        workloads=workloads,
        by_model=models,
        layouts=tuple(layouts),
        gpus_now=int(models["gpus_now"].sum()),
        gpus_needed=int(models["gpus_needed"].sum()),
        savings_usd_month=float(models["savings_usd_month"].sum()),
        assumptions={
            **assumptions.as_dict(),
            "catalog": "analysis/data/mig_catalog.json",
            "price_sources": {m: price_sources.get(m) for m in models["gpu_model"].to_list()},
        },
    )
