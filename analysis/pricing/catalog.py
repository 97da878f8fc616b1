"""The one price catalog: what a GPU-hour costs on each node, and where that number came from.

Definitions (README, Definitions, "GPU-hour price"; pinned by ``tests/test_pricing_catalog.py``):

- **GPU-hour price** = node price (USD per node-hour) / GPU count. The GPU count is the hardware's
  (``analysis.gpu_count``): the instance type's count from the catalog (shipped, or ``instance_type_gpu_count``),
  else GPU Feature Discovery's ``nvidia.com/gpu.count`` label, else the node's ``gpu_count`` (the GPUs its
  collector saw); ``gpu_count_basis`` says which. A GPU node's whole price is charged to all its GPUs, reporting
  or not.
- A node's price is taken from the first of these that has one (``price_source`` always names which):

  0. the **bill**: the node's effective cost per hour in an imported FOCUS cost export, by its resource id, else by
     its instance type, region and capacity type, in the billing period of its date (``analysis.pricing.bill``);
  1. an **instance-type override** (configured USD per node-hour, on-demand and optionally spot; a spot node with
     only an on-demand override gets the on-demand price, with a note);
  2. a **custom pricing CSV** node row (OpenCost ``pricing_schema.csv`` format) matching the node by
     ``metadata.name``, by a label (``metadata.labels.<key>``) or by its ``InstanceType`` column (the mean of the
     matching rows, as OpenCost's class pricing); GPU rows that also match add ``price x GPU count`` to the node
     price, as OpenCost does;
  3. the **shipped catalog** by instance type and capacity type: AWS on-demand us-east-1; AWS spot *estimated* as
     on-demand x (1 - Spot Advisor savings % / 100); GCP on-demand and spot for the a2, a3 and g2 machine types in
     us-central1, us-east4 and europe-west4. A spot node with no spot price gets the on-demand price, with a note;
     a region without a shipped price gets the instance type's reference region (us-east-1, us-central1), with a
     note;
  4. a **configured price per GPU model** (USD per GPU-hour), matched ignoring case, spaces, ``-``/``_`` and a
     leading ``NVIDIA`` (so the label form ``NVIDIA-H100-80GB-HBM3`` matches ``NVIDIA H100 80GB HBM3``);
  5. a custom CSV **GPU row** on its own (a per-GPU price; OpenCost itself only adds GPU rows to a matched node);
  6. the **default**: OpenCost's fallback 0.95 USD per GPU-hour (``opencost_default.json``), or a configured one.

  ``price_fallback`` is true for levels 4-6: the node's instance type had no price, so a per-GPU price was used.
  No row is ever left without a price: an unknown GPU model on an unknown instance type gets the default.
- **interruption_bucket** (spot nodes only): the AWS Spot Advisor's interruption-frequency bucket for the instance
  type in its region: 0 ``<5%``, 1 ``5-10%``, 2 ``10-15%``, 3 ``15-20%``, 4 ``>20%`` of instances interrupted in the
  trailing month. Null for on-demand nodes and where no data exists (GCP publishes none).

Shipped data and their sources and dates: ``analysis/data/SOURCES.md``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from analysis.gpu_count import NodeGpuCount, node_gpu_count
from analysis.gpu_names import gpu_model_key
from analysis.pricing.capacity import ON_DEMAND, SPOT
from analysis.pricing.custom_csv import CustomPrice
from analysis.pricing.errors import UnknownCapacityType
from analysis.pricing.overrides import NO_OVERRIDES, PriceOverrides
from analysis.pricing.shipped import (
    AWS_REGION,
    GCP_REGIONS,
    CatalogEntry,
    aws_entries,
    gcp_entries,
    opencost_default_gpu_usd_per_gpu_hour,
)
from warehouse.schema import CAPACITY_TYPES

_LABEL_COLUMNS = {
    "node.kubernetes.io/instance-type": "instance_type",
    "beta.kubernetes.io/instance-type": "instance_type",
    "topology.kubernetes.io/region": "region",
    "failure-domain.beta.kubernetes.io/region": "region",
    "karpenter.sh/capacity-type": "capacity_type",
}
"""Labels a CSV row may match that the ``nodes`` table also holds as columns (used when ``labels`` lacks them)."""


@dataclass(frozen=True)
class GpuHourPrice:
    """The price of one GPU-hour on one kind of node, with its source (see the module docstring)."""

    usd_per_gpu_hour: float
    usd_per_node_hour: float | None
    """Null only when the GPU count is unknown and a per-GPU price was used."""
    gpu_count: int | None
    source: str
    fallback: bool
    """True when the instance type had no price and a GPU-model or default price was used."""
    spot_priced: bool
    """True when the price is a spot price (a spot node priced as on-demand has False)."""
    interruption_bucket: int | None
    """Spot nodes only: the Spot Advisor interruption bucket (0 <5% ... 4 >20%), when known."""
    gpu_count_basis: str | None = None
    """Which rule gave ``gpu_count`` (``analysis.gpu_count.BASES``); None when the count is unknown."""


@dataclass(frozen=True)
class _Node:
    instance_type: str | None
    capacity_type: str | None
    gpu_model: str | None
    region: str | None
    gpu_count: int | None
    name: str | None
    labels: Mapping[str, str]
    bill: tuple[float, str] | None = None


@dataclass(frozen=True)
class PriceCatalog:
    """Shipped prices (``entries``, by instance type and region) plus the configured overrides.

    Build it with ``PriceCatalog.build(overrides)``; price nodes with ``price_nodes`` or ``gpu_hour_price``.
    """

    entries: Mapping[tuple[str, str], CatalogEntry]
    """(instance type, region) -> shipped entry."""
    reference_regions: Mapping[str, str]
    """Instance type -> the region whose price stands in when a node's own region has none."""
    overrides: PriceOverrides
    default_gpu_usd_per_gpu_hour: float
    default_source: str

    @classmethod
    def build(cls, overrides: PriceOverrides = NO_OVERRIDES) -> PriceCatalog:
        """The shipped catalog (AWS us-east-1 on-demand and estimated spot, GCP a2/a3/g2) with ``overrides``."""
        entries: dict[tuple[str, str], CatalogEntry] = {}
        reference: dict[str, str] = {}
        for entry in (*aws_entries(), *gcp_entries()):
            entries[(entry.instance_type, entry.region)] = entry
        for itype, region in entries:
            preferred = (AWS_REGION, *GCP_REGIONS)
            current = reference.get(itype)
            if current is None or preferred.index(region) < preferred.index(current):
                reference[itype] = region
        if overrides.default_gpu_usd_per_gpu_hour is not None:
            default = overrides.default_gpu_usd_per_gpu_hour
            source = f"fallback: configured default {default:g} USD/GPU-hour"
        else:
            default = opencost_default_gpu_usd_per_gpu_hour()
            source = f"fallback: OpenCost default {default:g} USD/GPU-hour"
        return cls(MappingProxyType(entries), MappingProxyType(reference), overrides, default, source)

    def entry(self, instance_type: str, region: str | None) -> tuple[CatalogEntry, str] | None:
        """The shipped entry for ``instance_type`` in ``region``, else in its reference region with a note saying so.

        The note is ``""`` for an exact match.
        """
        exact = self.entries.get((instance_type, region)) if region else None
        if exact is not None:
            return exact, ""
        ref = self.reference_regions.get(instance_type)
        if ref is None:
            return None
        why = f"region {region} has no shipped price" if region else "region unknown"
        return self.entries[(instance_type, ref)], f"; {why}, {ref} price used"

    def catalog_gpu_count(self, instance_type: str | None) -> int | None:
        """GPUs per node of ``instance_type`` in the catalog: the configured count, else the shipped one."""
        if not instance_type:
            return None
        configured = self.overrides.instance_type_gpu_count.get(instance_type)
        if configured is not None:
            return configured
        ref = self.reference_regions.get(instance_type)
        return self.entries[(instance_type, ref)].gpu_count if ref is not None else None

    def node_gpu_count(
        self, instance_type: str | None, labels: Mapping[str, str] | str | None, seen: int | None
    ) -> NodeGpuCount:
        """The node's GPU count and its basis (``analysis.gpu_count.node_gpu_count`` with this catalog's counts)."""
        parsed = _parse_labels(labels) if isinstance(labels, str) or labels is None else dict(labels)
        return node_gpu_count(self.catalog_gpu_count(instance_type), parsed, seen)

    def gpu_hour_price(
        self,
        instance_type: str | None,
        capacity_type: str | None,
        gpu_model: str | None,
        region: str | None,
        *,
        gpu_count: int | None = None,
        node: str | None = None,
        labels: Mapping[str, str] | str | None = None,
        bill: tuple[float, str] | None = None,
    ) -> GpuHourPrice:
        """The GPU-hour price of one node (or kind of node); ``node`` and ``labels`` matter only to custom CSV rows,
        ``bill`` is the node's matched bill rate (USD per node-hour, source; ``analysis.pricing.bill.match_bill``).

        ``capacity_type`` None is priced as on-demand, with a note; any value other than on-demand or spot raises
        ``UnknownCapacityType``. ``labels`` is a mapping or the ``nodes`` table's JSON text.
        """
        if capacity_type is not None and capacity_type not in CAPACITY_TYPES:
            raise UnknownCapacityType(capacity_type, "a node to price")
        parsed = _parse_labels(labels) if isinstance(labels, str) or labels is None else dict(labels)
        return self._resolve(
            _Node(
                instance_type=instance_type or None,
                capacity_type=capacity_type,
                gpu_model=gpu_model or None,
                region=region or None,
                gpu_count=gpu_count if gpu_count is not None and gpu_count > 0 else None,
                name=node,
                labels=parsed,
                bill=bill,
            )
        )

    def _resolve(self, node: _Node) -> GpuHourPrice:
        spot = node.capacity_type == SPOT
        found = self.entry(node.instance_type, node.region) if node.instance_type else None
        entry, region_note = found if found is not None else (None, "")
        counted = node_gpu_count(self.catalog_gpu_count(node.instance_type), node.labels, node.gpu_count)
        count = counted.count
        bucket = entry.interruption_bucket if spot and entry is not None else None
        capacity_note = "; capacity type unknown, priced as on-demand" if node.capacity_type is None else ""

        def per_node(usd: float, source: str, spot_priced: bool) -> GpuHourPrice:
            assert count is not None
            return GpuHourPrice(usd / count, usd, count, source, False, spot_priced, bucket, counted.basis)

        def per_gpu(usd: float, source: str) -> GpuHourPrice:
            node_usd = usd * count if count else None
            return GpuHourPrice(usd, node_usd, count, source, True, False, bucket, counted.basis)

        if count is not None:
            # 0. the bill
            if node.bill is not None:
                return per_node(node.bill[0], node.bill[1], spot)
            # 1. instance-type override
            configured = self.overrides.instance_prices.get(node.instance_type or "")
            if configured is not None:
                label = f"override: instance type {node.instance_type}"
                if spot and SPOT in configured:
                    return per_node(configured[SPOT], f"{label} (spot)", True)
                if ON_DEMAND in configured:
                    note = " (on-demand price; no spot price configured)" if spot else capacity_note
                    return per_node(configured[ON_DEMAND], label + note, False)
            # 2. custom CSV node row (+ its GPU rows)
            matched = _csv_node_price(self.overrides.custom_prices, node)
            if matched is not None:
                usd, source = matched
                gpu_row = _csv_gpu_row(self.overrides.custom_prices, node)
                if gpu_row is not None:
                    usd += gpu_row.usd_per_hour * count
                    source += f" + {gpu_row.origin} (GPU {gpu_row.instance_id_field}={gpu_row.instance_id})"
                return per_node(usd, source, False)
            # 3. shipped catalog
            if entry is not None and entry.on_demand_usd_per_hour is not None:
                if spot and entry.spot_usd_per_hour is not None and entry.spot_source is not None:
                    return per_node(entry.spot_usd_per_hour, entry.spot_source + region_note, True)
                note = "; no spot price known, priced as on-demand" if spot else capacity_note
                return per_node(entry.on_demand_usd_per_hour, entry.on_demand_source + region_note + note, False)
        # 4. configured price per GPU model
        if node.gpu_model is not None:
            model = self.overrides.gpu_model_prices.get(gpu_model_key(node.gpu_model))
            if model is not None:
                return per_gpu(model[1], f"fallback: configured price for {model[0]}")
        # 5. custom CSV GPU row alone
        gpu_row = _csv_gpu_row(self.overrides.custom_prices, node)
        if gpu_row is not None:
            return per_gpu(
                gpu_row.usd_per_hour,
                f"fallback: custom CSV {gpu_row.origin} GPU price for "
                f"{gpu_row.instance_id_field}={gpu_row.instance_id}",
            )
        # 6. default
        return per_gpu(self.default_gpu_usd_per_gpu_hour, self.default_source)


def _parse_labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _node_value(field_name: str, node: _Node) -> str | None:
    if field_name == "metadata.name":
        return node.name
    key = field_name.removeprefix("metadata.labels.")
    if key in node.labels:
        return node.labels[key]
    column = _LABEL_COLUMNS.get(key)
    value = getattr(node, column) if column is not None else None
    return value if isinstance(value, str) else None


def _region_ok(row: CustomPrice, node: _Node) -> bool:
    return not row.region or (node.region is not None and row.region.lower() == node.region.lower())


def _csv_node_price(rows: Iterable[CustomPrice], node: _Node) -> tuple[float, str] | None:
    """The node-hour price from CSV node rows: an InstanceID match (a row with a region beats one without, a later
    line beats an earlier one), else the mean of the rows whose InstanceType is the node's (class pricing)."""
    nodes = [r for r in rows if r.asset_class == "node" and _region_ok(r, node)]
    by_id = []
    for row in nodes:
        value = _node_value(row.instance_id_field, node) if row.instance_id else None
        if value is not None and value.lower() == row.instance_id.lower():
            by_id.append(row)
    if by_id:
        best = max(enumerate(by_id), key=lambda pair: (bool(pair[1].region), pair[0]))[1]
        return best.usd_per_hour, f"custom CSV {best.origin} (node {best.instance_id_field}={best.instance_id})"
    if node.instance_type is None:
        return None
    by_class = [r for r in nodes if r.instance_type and r.instance_type.lower() == node.instance_type.lower()]
    if any(r.region for r in by_class):
        by_class = [r for r in by_class if r.region]
    if not by_class:
        return None
    lines = ", ".join(r.origin for r in by_class)
    return statistics.fmean(
        r.usd_per_hour for r in by_class
    ), f"custom CSV {lines} (instance type {node.instance_type})"


def _csv_gpu_row(rows: Iterable[CustomPrice], node: _Node) -> CustomPrice | None:
    """The CSV GPU row for the node's GPUs: its label's value (else its ``gpu_model``) is the row's InstanceID,
    compared as GPU model names (``gpu_model_key``); a row with a region beats one without, a later line wins."""
    best: tuple[bool, int, CustomPrice] | None = None
    for position, row in enumerate(rows):
        if row.asset_class != "gpu" or not _region_ok(row, node):
            continue
        value = node.labels.get(row.instance_id_field, node.gpu_model)
        if value is None or gpu_model_key(value) != gpu_model_key(row.instance_id):
            continue
        rank = (bool(row.region), position, row)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best is not None else None
