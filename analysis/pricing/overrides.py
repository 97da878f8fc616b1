"""Configured prices that beat the shipped catalog: per instance type, per GPU model, a custom CSV, a default."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from analysis.gpu_names import gpu_model_key
from analysis.pricing.capacity import ON_DEMAND
from analysis.pricing.custom_csv import CustomPrice, load_custom_pricing_csv
from analysis.pricing.errors import InvalidGpuCount, InvalidPriceOverride, UnknownCapacityType
from warehouse.schema import CAPACITY_TYPES


@dataclass(frozen=True)
class PriceOverrides:
    """Configured prices that beat the shipped catalog (see the module docstring for the precedence).

    - ``gpu_model_usd_per_gpu_hour``: ``{"NVIDIA H100 80GB HBM3": 4.10}``, used when a node's instance type has no
      price (an on-premises node, a type the catalog lacks).
    - ``instance_type_usd_per_hour``: ``{"p5.48xlarge": 40.0}`` (on-demand) or
      ``{"p5.48xlarge": {"on-demand": 40.0, "spot": 22.0}}``: USD per node-hour, e.g. a negotiated discount.
    - ``custom_prices``: rows of an OpenCost custom-pricing CSV (``load_custom_pricing_csv``).
    - ``default_gpu_usd_per_gpu_hour``: replaces OpenCost's 0.95 USD per GPU-hour as the last resort.
    - ``instance_type_gpu_count``: ``{"on-prem.8xh100": 8}``: GPUs per node of an instance type, added to (or
      replacing) the shipped catalog's counts (``analysis.gpu_count``).

    Every price must be a positive, finite number (``InvalidPriceOverride``); capacity types are ``on-demand`` or
    ``spot`` (``UnknownCapacityType``).
    """

    gpu_model_usd_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)
    instance_type_usd_per_hour: Mapping[str, float | Mapping[str, float]] = field(default_factory=dict)
    custom_prices: tuple[CustomPrice, ...] = ()
    default_gpu_usd_per_gpu_hour: float | None = None
    instance_type_gpu_count: Mapping[str, int] = field(default_factory=dict)
    instance_prices: Mapping[str, Mapping[str, float]] = field(init=False, repr=False, compare=False)
    """``instance_type_usd_per_hour`` normalised: instance type -> {capacity type: USD per node-hour}."""
    gpu_model_prices: Mapping[str, tuple[str, float]] = field(init=False, repr=False, compare=False)
    """``gpu_model_usd_per_gpu_hour`` by normalised model key (``gpu_model_key``) -> (name as configured, price)."""

    def __post_init__(self) -> None:
        models: dict[str, tuple[str, float]] = {}
        for model, price in dict(self.gpu_model_usd_per_gpu_hour).items():
            if not isinstance(model, str) or not model.strip():
                raise InvalidPriceOverride("a GPU model with an empty name", price)
            models[gpu_model_key(model)] = (model, _positive(price, f"GPU model {model}"))
        instances: dict[str, Mapping[str, float]] = {}
        for itype, value in dict(self.instance_type_usd_per_hour).items():
            if not isinstance(itype, str) or not itype.strip():
                raise InvalidPriceOverride("an instance type with an empty name", value)
            if isinstance(value, Mapping):
                by_capacity: dict[str, float] = {}
                for capacity, price in value.items():
                    if capacity not in CAPACITY_TYPES:
                        raise UnknownCapacityType(capacity, f"the price override for instance type {itype}")
                    by_capacity[capacity] = _positive(price, f"instance type {itype} ({capacity})")
                if not by_capacity:
                    raise InvalidPriceOverride(f"instance type {itype}", dict(value))
            else:
                by_capacity = {ON_DEMAND: _positive(value, f"instance type {itype}")}
            instances[itype.strip()] = MappingProxyType(by_capacity)
        if self.default_gpu_usd_per_gpu_hour is not None:
            _positive(self.default_gpu_usd_per_gpu_hour, "the default GPU price")
        for row in self.custom_prices:
            _positive(row.usd_per_hour, f"custom price {row.origin}")
        object.__setattr__(self, "gpu_model_usd_per_gpu_hour", MappingProxyType(dict(self.gpu_model_usd_per_gpu_hour)))
        object.__setattr__(self, "instance_type_usd_per_hour", MappingProxyType(dict(self.instance_type_usd_per_hour)))
        object.__setattr__(self, "custom_prices", tuple(self.custom_prices))
        object.__setattr__(self, "instance_type_gpu_count", MappingProxyType(_gpu_counts(self.instance_type_gpu_count)))
        object.__setattr__(self, "instance_prices", MappingProxyType(instances))
        object.__setattr__(self, "gpu_model_prices", MappingProxyType(models))

    @classmethod
    def load(
        cls,
        *,
        gpu_model_usd_per_gpu_hour: Mapping[str, float] | None = None,
        instance_type_usd_per_hour: Mapping[str, float | Mapping[str, float]] | None = None,
        custom_pricing_csv: Path | str | None = None,
        default_gpu_usd_per_gpu_hour: float | None = None,
        instance_type_gpu_count: Mapping[str, int] | None = None,
    ) -> PriceOverrides:
        """Overrides from settings values, reading the custom pricing CSV when a path is given."""
        return cls(
            gpu_model_usd_per_gpu_hour=dict(gpu_model_usd_per_gpu_hour or {}),
            instance_type_usd_per_hour=dict(instance_type_usd_per_hour or {}),
            custom_prices=load_custom_pricing_csv(custom_pricing_csv) if custom_pricing_csv is not None else (),
            default_gpu_usd_per_gpu_hour=default_gpu_usd_per_gpu_hour,
            instance_type_gpu_count=dict(instance_type_gpu_count or {}),
        )


def _gpu_counts(counts: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for itype, count in dict(counts).items():
        if not isinstance(itype, str) or not itype.strip():
            raise InvalidGpuCount("an instance type with an empty name", count)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidGpuCount(f"instance type {itype}", count)
        out[itype.strip()] = count
    return out


NO_OVERRIDES = PriceOverrides()


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPriceOverride(what, value)
    price = float(value)
    if not math.isfinite(price) or price <= 0:
        raise InvalidPriceOverride(what, value)
    return price
