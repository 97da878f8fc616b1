"""The one price catalog: what a GPU-hour costs on each node, and where that number came from.

Definitions (ARCHITECTURE.md, pinned by ``tests/test_pricing.py``):

- **GPU-hour price** = node price (USD per node-hour) / GPU count. The GPU count is the node's ``gpu_count`` when it
  is known (> 0), else the catalog's count for the instance type. A GPU node's whole price is charged to its GPUs.
- A node's price is taken from the first of these that has one (``price_source`` always names which):

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

import csv
import datetime as dt
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from analysis.errors import AnalysisError
from analysis.instances import DATA, instance_types
from warehouse.schema import CAPACITY_TYPES, PRICES

ON_DEMAND = "on-demand"
SPOT = "spot"

AWS_REGION = "us-east-1"
AWS_ON_DEMAND_AS_OF = dt.date(2026, 7, 20)
AWS_ON_DEMAND_ORIGIN = "karpenter-provider-aws @1d927085"
SPOT_ADVISOR_CSV = DATA / "aws_spot_advisor_us_east_1.csv"
GCP_CSV = DATA / "gcp_gpu_machine_types.csv"
GCP_ORIGIN = "google-cloud-pricing-cost-calculator @fd66b26f"
GCP_REGIONS = ("us-central1", "us-east4", "europe-west4")
"""GCP regions shipped, in order of preference as a stand-in for a region that has no shipped price."""
OPENCOST_DEFAULT_JSON = DATA / "opencost_default.json"

INTERRUPTION_BUCKETS: Mapping[int, str] = MappingProxyType({0: "<5%", 1: "5-10%", 2: "10-15%", 3: "15-20%", 4: ">20%"})
"""AWS Spot Advisor interruption-frequency buckets: share of instances interrupted in the trailing month."""

CSV_COLUMNS = (
    "EndTimestamp",
    "InstanceID",
    "Region",
    "AssetClass",
    "InstanceIDField",
    "InstanceType",
    "MarketPriceHourly",
    "Version",
)
"""The OpenCost custom-pricing CSV header (``configs/pricing_schema.csv``)."""

PRICE_COLUMNS = ("usd_per_gpu_hour", "usd_per_node_hour", "price_source", "price_fallback", "interruption_bucket")
"""The columns ``price_nodes`` adds."""

_LABEL_COLUMNS = {
    "node.kubernetes.io/instance-type": "instance_type",
    "beta.kubernetes.io/instance-type": "instance_type",
    "topology.kubernetes.io/region": "region",
    "failure-domain.beta.kubernetes.io/region": "region",
    "karpenter.sh/capacity-type": "capacity_type",
}
"""Labels a CSV row may match that the ``nodes`` table also holds as columns (used when ``labels`` lacks them)."""


# --- errors -----------------------------------------------------------------------------------------------------


class PricingError(AnalysisError):
    """Base of every price-catalog error."""


class InvalidPriceOverride(PricingError):
    """A configured price that is not a positive, finite number of USD per hour, or a malformed override entry."""

    def __init__(self, what: str, value: object) -> None:
        super().__init__(
            f"invalid price override for {what}: {value!r} is not a positive number of USD per hour; "
            "fix it in the price settings"
        )


class UnknownCapacityType(PricingError):
    def __init__(self, value: object, where: str) -> None:
        super().__init__(f"unknown capacity type {value!r} in {where}: use one of {', '.join(CAPACITY_TYPES)}")


class CustomPricingCsvError(PricingError):
    """A custom pricing CSV that cannot be read, or a row in it that is not valid."""

    def __init__(self, path: Path | str, line: int | None, column: str | None, detail: str) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"custom pricing CSV {where}: {detail}")


# --- overrides ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomPrice:
    """One node or GPU row of an OpenCost custom-pricing CSV (``pv`` rows are read and dropped).

    ``instance_id_field`` is ``metadata.name`` or ``metadata.labels.<key>`` for a node row and a label key
    (``nvidia.com/gpu_type``, ``gpu.nvidia.com/class``, ``nvidia.com/gpu.product``) for a GPU row. ``region`` and
    ``instance_type`` are empty when the row leaves them blank (an empty region matches every region).
    ``usd_per_hour`` is per node-hour for a node row and per GPU-hour for a GPU row.
    """

    asset_class: Literal["node", "gpu"]
    instance_id: str
    instance_id_field: str
    instance_type: str
    region: str
    usd_per_hour: float
    origin: str
    """Where the row came from, e.g. ``prices.csv line 3``."""


@dataclass(frozen=True)
class PriceOverrides:
    """Configured prices that beat the shipped catalog (see the module docstring for the precedence).

    - ``gpu_model_usd_per_gpu_hour``: ``{"NVIDIA H100 80GB HBM3": 4.10}``, used when a node's instance type has no
      price (an on-premises node, a type the catalog lacks).
    - ``instance_type_usd_per_hour``: ``{"p5.48xlarge": 40.0}`` (on-demand) or
      ``{"p5.48xlarge": {"on-demand": 40.0, "spot": 22.0}}``: USD per node-hour, e.g. a negotiated discount.
    - ``custom_prices``: rows of an OpenCost custom-pricing CSV (``load_custom_pricing_csv``).
    - ``default_gpu_usd_per_gpu_hour``: replaces OpenCost's 0.95 USD per GPU-hour as the last resort.

    Every price must be a positive, finite number (``InvalidPriceOverride``); capacity types are ``on-demand`` or
    ``spot`` (``UnknownCapacityType``).
    """

    gpu_model_usd_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)
    instance_type_usd_per_hour: Mapping[str, float | Mapping[str, float]] = field(default_factory=dict)
    custom_prices: tuple[CustomPrice, ...] = ()
    default_gpu_usd_per_gpu_hour: float | None = None
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
    ) -> PriceOverrides:
        """Overrides from settings values, reading the custom pricing CSV when a path is given."""
        return cls(
            gpu_model_usd_per_gpu_hour=dict(gpu_model_usd_per_gpu_hour or {}),
            instance_type_usd_per_hour=dict(instance_type_usd_per_hour or {}),
            custom_prices=load_custom_pricing_csv(custom_pricing_csv) if custom_pricing_csv is not None else (),
            default_gpu_usd_per_gpu_hour=default_gpu_usd_per_gpu_hour,
        )


NO_OVERRIDES = PriceOverrides()


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPriceOverride(what, value)
    price = float(value)
    if not math.isfinite(price) or price <= 0:
        raise InvalidPriceOverride(what, value)
    return price


def gpu_model_key(name: str) -> str:
    """A GPU model name compared loosely: lower case, runs of spaces, ``-`` and ``_`` as one space, no ``nvidia``."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower()).strip()
    return key.removeprefix("nvidia ").strip()


# --- the OpenCost custom pricing CSV --------------------------------------------------------------------------------


def load_custom_pricing_csv(path: Path | str) -> tuple[CustomPrice, ...]:
    """The node and GPU rows of an OpenCost custom-pricing CSV (``EndTimestamp,InstanceID,Region,AssetClass,
    InstanceIDField,InstanceType,MarketPriceHourly,Version``).

    Blank lines and lines starting with ``#`` are skipped; ``pv`` rows are checked and dropped. A bad file raises
    ``CustomPricingCsvError`` naming the file, the line and the column: a missing header column, a wrong number of
    fields, an unknown ``AssetClass``, an unsupported ``InstanceIDField`` (``spec.providerID`` and annotations: the
    ``nodes`` table holds neither), a node row with neither ``InstanceID`` nor ``InstanceType``, or a
    ``MarketPriceHourly`` that is not a positive number.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CustomPricingCsvError(source, None, None, f"cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CustomPricingCsvError(source, None, None, "not UTF-8 text") from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise CustomPricingCsvError(
            source, 1, None, f"empty file; expected the header {','.join(CSV_COLUMNS)}"
        ) from None
    names = [h.strip() for h in header]
    for column in CSV_COLUMNS:
        if column not in names:
            raise CustomPricingCsvError(
                source, 1, column, f"missing from the header (expected {','.join(CSV_COLUMNS)})"
            )
    index = {name: names.index(name) for name in CSV_COLUMNS}
    rows: list[CustomPrice] = []
    for record in reader:
        line = reader.line_num
        if not record or not any(cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
            continue
        if len(record) != len(names):
            raise CustomPricingCsvError(source, line, None, f"expected {len(names)} fields, found {len(record)}")
        row = {name: record[i].strip() for name, i in index.items()}
        parsed = _custom_row(source, line, row)
        if parsed is not None:
            rows.append(parsed)
    return tuple(rows)


def _custom_row(source: Path, line: int, row: dict[str, str]) -> CustomPrice | None:
    asset_class = row["AssetClass"].lower()
    if asset_class not in ("node", "gpu", "pv"):
        raise CustomPricingCsvError(source, line, "AssetClass", f"{row['AssetClass']!r} is not one of node, gpu, pv")
    raw_price = row["MarketPriceHourly"]
    try:
        price = float(raw_price)
    except ValueError:
        raise CustomPricingCsvError(source, line, "MarketPriceHourly", f"{raw_price!r} is not a number") from None
    if not math.isfinite(price) or price <= 0:
        raise CustomPricingCsvError(
            source, line, "MarketPriceHourly", f"{raw_price!r} is not a positive number of USD per hour"
        )
    if asset_class == "pv":
        return None
    field_name = row["InstanceIDField"]
    if asset_class == "node":
        if field_name == "spec.providerID" or field_name.startswith("metadata.annotations."):
            raise CustomPricingCsvError(
                source,
                line,
                "InstanceIDField",
                f"{field_name!r} is not supported (the nodes table has no provider ID or annotations); "
                "use metadata.name or metadata.labels.<key>",
            )
        if field_name and field_name != "metadata.name" and not field_name.startswith("metadata.labels."):
            raise CustomPricingCsvError(
                source,
                line,
                "InstanceIDField",
                f"{field_name!r} is not supported for a node; use metadata.name or metadata.labels.<key>",
            )
        if not row["InstanceID"] and not row["InstanceType"]:
            raise CustomPricingCsvError(
                source, line, "InstanceID", "empty: a node row needs an InstanceID or an InstanceType"
            )
        if row["InstanceID"] and not field_name:
            raise CustomPricingCsvError(
                source, line, "InstanceIDField", "empty: say which node field holds the InstanceID"
            )
    else:
        field_name = field_name.removeprefix("metadata.labels.")
        if not field_name:
            raise CustomPricingCsvError(
                source, line, "InstanceIDField", "empty: a GPU row names the node label holding the GPU type"
            )
        if not row["InstanceID"]:
            raise CustomPricingCsvError(source, line, "InstanceID", "empty: a GPU row needs the GPU type")
    return CustomPrice(
        asset_class="node" if asset_class == "node" else "gpu",
        instance_id=row["InstanceID"],
        instance_id_field=field_name,
        instance_type=row["InstanceType"],
        region=row["Region"],
        usd_per_hour=price,
        origin=f"{source.name} line {line}",
    )


# --- the shipped catalog --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """One instance type in one region as shipped: node prices (USD per node-hour) and spot risk."""

    cloud: str
    region: str
    instance_type: str
    gpu_model: str
    gpu_count: int
    on_demand_usd_per_hour: float | None
    spot_usd_per_hour: float | None
    spot_savings_pct: float | None
    interruption_bucket: int | None
    as_of: dt.date
    on_demand_source: str
    spot_source: str | None


@cache
def _aws_entries() -> tuple[CatalogEntry, ...]:
    advisor: dict[str, tuple[float, int, dt.date]] = {}
    with SPOT_ADVISOR_CSV.open() as handle:
        for row in csv.DictReader(handle):
            if row["region"] == AWS_REGION:
                advisor[row["instance_type"]] = (
                    float(row["savings_pct"]),
                    int(row["interruption_bucket"]),
                    dt.date.fromisoformat(row["as_of"]),
                )
    entries = []
    for itype in sorted(instance_types().values(), key=lambda t: t.name):
        on_demand = itype.on_demand_usd_per_hour
        savings, bucket, spot_as_of = advisor.get(itype.name, (None, None, None))
        spot = on_demand * (1 - savings / 100) if on_demand is not None and savings is not None else None
        entries.append(
            CatalogEntry(
                cloud="aws",
                region=AWS_REGION,
                instance_type=itype.name,
                gpu_model=itype.gpu_model,
                gpu_count=itype.gpu_count,
                on_demand_usd_per_hour=on_demand,
                spot_usd_per_hour=spot,
                spot_savings_pct=savings,
                interruption_bucket=bucket,
                as_of=AWS_ON_DEMAND_AS_OF,
                on_demand_source=f"AWS on-demand {AWS_REGION}, {AWS_ON_DEMAND_ORIGIN}, {AWS_ON_DEMAND_AS_OF}",
                spot_source=(
                    f"AWS spot estimate: on-demand x (1 - {savings:g}% Spot Advisor savings), {spot_as_of}"
                    if spot is not None and savings is not None
                    else None
                ),
            )
        )
    return tuple(entries)


@cache
def _gcp_entries() -> tuple[CatalogEntry, ...]:
    entries = []
    with GCP_CSV.open() as handle:
        for row in csv.DictReader(handle):
            as_of = dt.date.fromisoformat(row["as_of"])
            region = row["region"]
            spot = float(row["spot_usd_per_hour"]) if row["spot_usd_per_hour"] else None
            entries.append(
                CatalogEntry(
                    cloud="gcp",
                    region=region,
                    instance_type=row["machine_type"],
                    gpu_model=row["gpu_model"],
                    gpu_count=int(row["gpu_count"]),
                    on_demand_usd_per_hour=float(row["on_demand_usd_per_hour"]),
                    spot_usd_per_hour=spot,
                    spot_savings_pct=None,
                    interruption_bucket=None,
                    as_of=as_of,
                    on_demand_source=f"GCP on-demand {region}, {GCP_ORIGIN}, {as_of}",
                    spot_source=f"GCP spot {region}, {GCP_ORIGIN}, {as_of}" if spot is not None else None,
                )
            )
    return tuple(entries)


@cache
def opencost_default_gpu_usd_per_gpu_hour() -> float:
    """OpenCost's fallback GPU price (``configs/default.json`` ``"GPU"``): 0.95 USD per GPU-hour."""
    return float(json.loads(OPENCOST_DEFAULT_JSON.read_text())["GPU"])


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


@dataclass(frozen=True)
class _Node:
    instance_type: str | None
    capacity_type: str | None
    gpu_model: str | None
    region: str | None
    gpu_count: int | None
    name: str | None
    labels: Mapping[str, str]


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
        for entry in (*_aws_entries(), *_gcp_entries()):
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
    ) -> GpuHourPrice:
        """The GPU-hour price of one node (or kind of node); ``node`` and ``labels`` matter only to custom CSV rows.

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
            )
        )

    def _resolve(self, node: _Node) -> GpuHourPrice:
        spot = node.capacity_type == SPOT
        found = self.entry(node.instance_type, node.region) if node.instance_type else None
        entry, region_note = found if found is not None else (None, "")
        count = node.gpu_count or (entry.gpu_count if entry is not None else None)
        bucket = entry.interruption_bucket if spot and entry is not None else None
        capacity_note = "; capacity type unknown, priced as on-demand" if node.capacity_type is None else ""

        def per_node(usd: float, source: str, spot_priced: bool) -> GpuHourPrice:
            assert count is not None
            return GpuHourPrice(usd / count, usd, count, source, False, spot_priced, bucket)

        def per_gpu(usd: float, source: str) -> GpuHourPrice:
            return GpuHourPrice(usd, usd * count if count else None, count, source, True, False, bucket)

        if count is not None:
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


# --- frames -------------------------------------------------------------------------------------------------------

_KEY = ("instance_type", "capacity_type", "gpu_model", "region", "gpu_count")
_OPTIONAL = {"region": pl.String, "node": pl.String, "labels": pl.String}


def price_nodes(nodes: pl.LazyFrame | pl.DataFrame, catalog: PriceCatalog) -> pl.DataFrame:
    """``nodes`` (rows of the ``nodes`` table) with the price columns added, row order kept.

    Needs ``instance_type``, ``capacity_type``, ``gpu_model`` and ``gpu_count``; ``region``, ``node`` and ``labels``
    are used when present. Adds ``usd_per_gpu_hour`` (node price / GPU count, never null), ``usd_per_node_hour``
    (null only when the GPU count is unknown and a per-GPU price was used), ``price_source``, ``price_fallback`` and
    ``interruption_bucket`` (Int8, spot nodes only). Pure: each distinct node description is priced once with
    ``PriceCatalog.gpu_hour_price`` and joined back.
    """
    frame = nodes.collect() if isinstance(nodes, pl.LazyFrame) else nodes
    missing = [c for c in ("instance_type", "capacity_type", "gpu_model", "gpu_count") if c not in frame.columns]
    if missing:
        raise PricingError(f"nodes to price lack the column(s) {', '.join(missing)} (the nodes table has them)")
    frame = frame.drop([c for c in PRICE_COLUMNS if c in frame.columns])
    added = [name for name in _OPTIONAL if name not in frame.columns]
    work = frame.with_columns(pl.lit(None, dtype=_OPTIONAL[name]).alias(name) for name in added)
    work = work.with_columns(  # all-null columns (dtype Null) typed, so string tests and joins work
        pl.col(name).cast(pl.Int32 if name == "gpu_count" else pl.String)
        for name in (*_KEY, *_OPTIONAL)
        if work.schema[name] == pl.Null
    )
    bad = work.filter(pl.col("capacity_type").is_not_null() & ~pl.col("capacity_type").is_in(CAPACITY_TYPES))
    if bad.height:
        raise UnknownCapacityType(bad["capacity_type"][0], "the nodes' capacity_type column")
    key = list(_KEY) + (["node", "labels"] if catalog.overrides.custom_prices else [])
    keys = work.select(key).unique(maintain_order=True)
    priced = [
        catalog.gpu_hour_price(
            row["instance_type"],
            row["capacity_type"],
            row["gpu_model"],
            row["region"],
            gpu_count=row["gpu_count"],
            node=row.get("node"),
            labels=row.get("labels"),
        )
        for row in keys.iter_rows(named=True)
    ]
    prices = keys.with_columns(
        pl.Series("usd_per_gpu_hour", [p.usd_per_gpu_hour for p in priced], dtype=pl.Float64),
        pl.Series("usd_per_node_hour", [p.usd_per_node_hour for p in priced], dtype=pl.Float64),
        pl.Series("price_source", [p.source for p in priced], dtype=pl.String),
        pl.Series("price_fallback", [p.fallback for p in priced], dtype=pl.Boolean),
        pl.Series("interruption_bucket", [p.interruption_bucket for p in priced], dtype=pl.Int8),
    )
    out = work.join(prices, on=key, how="left", nulls_equal=True, maintain_order="left")
    return out.drop(added)


def model_prices(models: Iterable[str | None], catalog: PriceCatalog) -> pl.DataFrame:
    """One row per distinct GPU model (first-seen order) with its per-GPU fallback price, for GPU-time whose node the
    warehouse does not know: ``gpu_model``, ``usd_per_gpu_hour``, ``price_source`` and ``price_fallback`` (always
    true), from a configured GPU-model price, a custom CSV GPU row or the default (levels 4-6)."""
    names = list(dict.fromkeys(models))
    priced = [catalog.gpu_hour_price(None, None, model, None) for model in names]
    return pl.DataFrame(
        {
            "gpu_model": names,
            "usd_per_gpu_hour": [p.usd_per_gpu_hour for p in priced],
            "price_source": [p.source for p in priced],
            "price_fallback": [p.fallback for p in priced],
        },
        schema={
            "gpu_model": pl.String,
            "usd_per_gpu_hour": pl.Float64,
            "price_source": pl.String,
            "price_fallback": pl.Boolean,
        },
    )


def catalog_frame(catalog: PriceCatalog) -> pl.DataFrame:
    """The shipped catalog as a frame: one row per (cloud, region, instance type), prices in USD per node-hour."""
    rows: list[dict[str, Any]] = [
        {
            "cloud": e.cloud,
            "region": e.region,
            "instance_type": e.instance_type,
            "gpu_model": e.gpu_model,
            "gpu_count": e.gpu_count,
            "on_demand_usd_per_hour": e.on_demand_usd_per_hour,
            "spot_usd_per_hour": e.spot_usd_per_hour,
            "spot_savings_pct": e.spot_savings_pct,
            "interruption_bucket": e.interruption_bucket,
            "as_of": e.as_of,
            "on_demand_source": e.on_demand_source,
            "spot_source": e.spot_source,
        }
        for e in sorted(catalog.entries.values(), key=lambda e: (e.cloud, e.region, e.instance_type))
    ]
    return pl.DataFrame(
        rows,
        schema={
            "cloud": pl.String,
            "region": pl.String,
            "instance_type": pl.String,
            "gpu_model": pl.String,
            "gpu_count": pl.Int32,
            "on_demand_usd_per_hour": pl.Float64,
            "spot_usd_per_hour": pl.Float64,
            "spot_savings_pct": pl.Float64,
            "interruption_bucket": pl.Int8,
            "as_of": pl.Date,
            "on_demand_source": pl.String,
            "spot_source": pl.String,
        },
    )


def prices_table(catalog: PriceCatalog) -> pa.Table:
    """The shipped catalog in the warehouse ``prices`` schema (``warehouse.schema.PRICES``), ready to append.

    ``as_of`` is the on-demand price's date; ``source`` names the on-demand source and, after `` | ``, the spot one
    (whose date it carries). Overrides are settings, not reference data, and are not included.
    """
    frame = catalog_frame(catalog).select(
        "cloud",
        "region",
        "instance_type",
        "gpu_model",
        "gpu_count",
        "on_demand_usd_per_hour",
        "spot_usd_per_hour",
        "interruption_bucket",
        "as_of",
        pl.when(pl.col("spot_source").is_not_null())
        .then(pl.concat_str("on_demand_source", pl.lit(" | "), "spot_source"))
        .otherwise(pl.col("on_demand_source"))
        .alias("source"),
    )
    return frame.to_arrow().cast(PRICES.schema)
