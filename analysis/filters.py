"""Narrowing the fleet to some clusters, namespaces and GPU models (the dashboard's filters).

Filters apply to the priced minute groups and to every frame that carries the filtered columns, so a filtered
figure is computed the same way as the fleet's: ``narrow`` returns report inputs that ``analysis.report.build``
turns into the same report a narrower fleet would give. No filter: the inputs are returned unchanged, so the numbers
equal ``gpuledger report``.

What a filter means: a cluster or GPU model keeps that hardware's GPU-time; a namespace keeps the GPU-time pods of
that namespace held (active, idle_held, idle_allocated), so unallocated GPU-time, which no namespace holds, drops
out. The MIG packing is computed for the whole fleet: filtered, it keeps the GPU models and placements shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis import usage
from analysis.report import ReportInputs


@dataclass(frozen=True)
class Filters:
    clusters: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    gpu_models: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, clusters: Iterable[str] = (), namespaces: Iterable[str] = (), gpu_models: Iterable[str] = ()
    ) -> Filters:
        return cls(tuple(sorted(clusters)), tuple(sorted(namespaces)), tuple(sorted(gpu_models)))

    @property
    def active(self) -> bool:
        return bool(self.clusters or self.namespaces or self.gpu_models)

    def _by_column(self) -> dict[str, tuple[str, ...]]:
        return {"cluster": self.clusters, "namespace": self.namespaces, "gpu_model": self.gpu_models}

    def applicable(self, columns: Iterable[str]) -> bool:
        """Whether every active filter has its column among ``columns``."""
        present = set(columns)
        return all(column in present for column, values in self._by_column().items() if values)

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` narrowed by each active filter whose column it has."""
        for column, values in self._by_column().items():
            if values and column in frame.columns:
                frame = frame.filter(pl.col(column).is_in(list(values)))
        return frame

    def rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The same for a list of report rows (a filter on a key a row lacks keeps the row)."""
        out = []
        for row in rows:
            if all(
                not values or column not in row or row[column] in values for column, values in self._by_column().items()
            ):
                out.append(row)
        return out


def narrow(inputs: ReportInputs, filters: Filters, *, gpus: int | None = None) -> ReportInputs:
    """Report inputs for the filtered fleet; ``gpus``: the GPUs the filtered fleet holds (counted by the caller
    from per-GPU data, which the minute groups do not carry)."""
    if not filters.active:
        return inputs
    histogram = filters.apply(inputs.histogram)
    return dataclasses.replace(
        inputs,
        groups=filters.apply(inputs.groups),
        gpus=inputs.gpus if gpus is None else gpus,
        histogram=histogram,
        heatmap=usage.hour_of_week(histogram) if histogram.width else inputs.heatmap,
        mig_fit=mig_fit(inputs.mig_fit, filters) if inputs.mig_fit is not None else None,
        spot=spot(inputs.spot, filters) if inputs.spot is not None else None,
        partly_reporting=_partly_reporting(inputs.partly_reporting, filters),
    )


def _partly_reporting(frame: pl.DataFrame | None, filters: Filters) -> pl.DataFrame | None:
    """Silent GPUs are held by no namespace: a namespace filter drops them, as it drops unallocated time."""
    if frame is None:
        return None
    return frame.clear() if filters.namespaces else filters.apply(frame)


def mig_fit(fit: dict[str, Any], filters: Filters) -> dict[str, Any]:
    """The MIG fit's workloads, layouts and per-model totals for the filtered GPU models and namespaces."""
    by_model = filters.rows(fit.get("by_model", []))
    models = {row["gpu_model"] for row in by_model}
    layouts = []
    for layout in fit.get("layouts", []):
        if layout["gpu_model"] not in models:
            continue
        placements = filters.rows(layout["placements"])
        if placements:
            layouts.append({**layout, "placements": placements})
    return {
        **fit,
        "workloads": filters.rows(fit.get("workloads", [])),
        "by_model": by_model,
        "layouts": layouts,
        "gpus_now": sum(row["gpus_now"] for row in by_model),
        "gpus_needed": sum(row["gpus_needed"] for row in by_model),
        "gpus_freed": sum(row["gpus_freed"] for row in by_model),
        "savings_usd_month": round(sum(row["savings_usd_month"] for row in by_model), 2),
    }


def spot(result: dict[str, Any], filters: Filters) -> dict[str, Any]:
    """Spot candidates of the filtered fleet; the totals summed over its recommended candidates."""
    candidates = filters.rows(result.get("candidates", []))
    chosen = [c for c in candidates if c.get("recommended")]
    return {
        **result,
        "candidates": candidates,
        "savings_usd_month": round(sum(c["net_savings_usd_month"] for c in chosen), 2),
        "gross_savings_usd_month": round(sum(c["gross_savings_usd_month"] for c in chosen), 2),
        "interruption_cost_usd_month": round(sum(c["interruption_cost_usd_month"] for c in chosen), 2),
        "recommended": len(chosen),
    }
