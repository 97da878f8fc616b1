"""GPU cost allocation as FOCUS rows (FinOps Open Cost and Usage Specification 1.2, with every 1.0 column).

One row per (cluster, node, GPU model, namespace, workload, day): the priced minute groups of the report
(``analysis.usage.minute_groups`` priced by ``analysis.costs.priced``) summed, never priced again, so the rows'
``BilledCost`` adds up to the report's fleet cost. Node is part of the key because a row's ``ResourceId`` is one
node and its price is that node's GPU-hour price that day (one price, one ``price_source`` per row); a workload that
ran on two nodes in a day has two rows. GPU-time no pod held (``unallocated``, ``no_data``) is a row with a null
workload. The GPU-time states are split in ``x_gpuledger_<state>_gpu_hours`` and ``..._cost_usd`` (README
"Definitions"), which add up to the row's ``ConsumedQuantity`` and ``BilledCost``.

gpuledger knows one price per GPU-hour (the bill's effective rate, an override, a custom CSV or a list price), so
``ListCost``, ``ContractedCost``, ``EffectiveCost`` and ``BilledCost`` are all GPU-hours x that price, and
``ChargeDescription`` says which price it was. Column meanings: FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec
``specification/columns/`` (the bill reader ``collector.focus`` reads the same columns from a cloud's export).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from analysis.allocation import team_of
from analysis.states import STATES
from analysis.window import Window

KEY = ("cluster", "node", "gpu_model", "namespace", "workload", "date")
"""A row's identity: unique in every export."""
FOCUS_VERSION = "1.2"
CURRENCY = "USD"
UNIT = "GPU-Hours"
SERVICE_NAME = "GPU allocation"
SERVICE_SUBCATEGORY = "Containers"
RESOURCE_TYPE = "Kubernetes node"
SKU_METER = "GPU time"
ACCOUNT_TYPE = "Kubernetes cluster"
TAG_PREFIX = "gpuledger/"
"""FOCUS Tags: keys a provider defines carry its prefix (``gpuledger/namespace``)."""
_PROVIDERS = (("aws://", "AWS"), ("gce://", "Google Cloud"), ("azure://", "Microsoft"))
_PRICE_PROVIDERS = (("AWS", "AWS"), ("GCP", "Google Cloud"))
UNKNOWN_PROVIDER = "unknown"
PRICING_CATEGORY = {"on-demand": "Standard", "spot": "Dynamic"}
"""FOCUS PricingCategory by the node's capacity type; a node whose capacity type is unknown is ``Other``."""

FOCUS_COLUMNS: dict[str, pl.DataType] = {
    "AvailabilityZone": pl.String(),
    "BilledCost": pl.Float64(),
    "BillingAccountId": pl.String(),
    "BillingAccountName": pl.String(),
    "BillingAccountType": pl.String(),
    "BillingCurrency": pl.String(),
    "BillingPeriodEnd": pl.Datetime("us", "UTC"),
    "BillingPeriodStart": pl.Datetime("us", "UTC"),
    "CapacityReservationId": pl.String(),
    "CapacityReservationStatus": pl.String(),
    "ChargeCategory": pl.String(),
    "ChargeClass": pl.String(),
    "ChargeDescription": pl.String(),
    "ChargeFrequency": pl.String(),
    "ChargePeriodEnd": pl.Datetime("us", "UTC"),
    "ChargePeriodStart": pl.Datetime("us", "UTC"),
    "CommitmentDiscountCategory": pl.String(),
    "CommitmentDiscountId": pl.String(),
    "CommitmentDiscountName": pl.String(),
    "CommitmentDiscountQuantity": pl.Float64(),
    "CommitmentDiscountStatus": pl.String(),
    "CommitmentDiscountType": pl.String(),
    "CommitmentDiscountUnit": pl.String(),
    "ConsumedQuantity": pl.Float64(),
    "ConsumedUnit": pl.String(),
    "ContractedCost": pl.Float64(),
    "ContractedUnitPrice": pl.Float64(),
    "EffectiveCost": pl.Float64(),
    "InvoiceId": pl.String(),
    "InvoiceIssuerName": pl.String(),
    "ListCost": pl.Float64(),
    "ListUnitPrice": pl.Float64(),
    "PricingCategory": pl.String(),
    "PricingCurrency": pl.String(),
    "PricingCurrencyContractedUnitPrice": pl.Float64(),
    "PricingCurrencyEffectiveCost": pl.Float64(),
    "PricingCurrencyListUnitPrice": pl.Float64(),
    "PricingQuantity": pl.Float64(),
    "PricingUnit": pl.String(),
    "ProviderName": pl.String(),
    "PublisherName": pl.String(),
    "RegionId": pl.String(),
    "RegionName": pl.String(),
    "ResourceId": pl.String(),
    "ResourceName": pl.String(),
    "ResourceType": pl.String(),
    "ServiceCategory": pl.String(),
    "ServiceName": pl.String(),
    "ServiceSubcategory": pl.String(),
    "SkuId": pl.String(),
    "SkuMeter": pl.String(),
    "SkuPriceDetails": pl.String(),
    "SkuPriceId": pl.String(),
    "SubAccountId": pl.String(),
    "SubAccountName": pl.String(),
    "SubAccountType": pl.String(),
    "Tags": pl.String(),
}
"""The FOCUS 1.2 Cost and Usage columns, in the spec's (alphabetical) order: the 1.0 ones, 1.1's (capacity
reservations, commitment quantity and unit, ServiceSubcategory, SkuMeter, SkuPriceDetails) and 1.2's
(BillingAccountType, SubAccountType, InvoiceId and the PricingCurrency columns)."""

EXTRA_COLUMNS: dict[str, pl.DataType] = {
    "x_gpuledger_cluster": pl.String(),
    "x_gpuledger_node": pl.String(),
    "x_gpuledger_namespace": pl.String(),
    "x_gpuledger_workload": pl.String(),
    "x_gpuledger_team": pl.String(),
    "x_gpuledger_gpu_model": pl.String(),
    "x_gpuledger_instance_type": pl.String(),
    "x_gpuledger_capacity_type": pl.String(),
    "x_gpuledger_usd_per_gpu_hour": pl.Float64(),
    "x_gpuledger_price_source": pl.String(),
    "x_gpuledger_price_fallback": pl.Boolean(),
    "x_gpuledger_split_by": pl.String(),
    **{f"x_gpuledger_{s}_gpu_hours": pl.Float64() for s in STATES},
    **{f"x_gpuledger_{s}_cost_usd": pl.Float64() for s in STATES},
}
"""gpuledger's own columns (FOCUS: custom columns carry an ``x_`` prefix)."""

SCHEMA = pl.Schema({**FOCUS_COLUMNS, **EXTRA_COLUMNS})

_NODE_FACTS = ("instance_type", "capacity_type", "region", "zone", "provider_id")


def focus_rows(
    priced_groups: pl.DataFrame,
    node_prices: pl.DataFrame,
    window: Window,
    teams: Mapping[str, Sequence[str]] | None = None,
) -> pl.DataFrame:
    """The FOCUS rows of ``window`` (schema ``SCHEMA``, sorted by day, cluster, node, GPU model, namespace, workload).

    ``priced_groups``: the window's priced minute groups (``analysis.costs.priced``, with the silent GPUs' no_data);
    ``node_prices``: the window's priced ``nodes`` rows (``analysis.pricing.price_nodes``), for the node's instance
    type, capacity type, region, zone and provider id; ``teams``: the ``teams`` setting (a namespace no pattern
    matches is its own team)."""
    groups = priced_groups
    if "split_method" not in groups.columns:
        groups = groups.with_columns(pl.lit(None, pl.String).alias("split_method"))
    state = pl.col("state")
    rows = (
        groups.group_by(list(KEY))
        .agg(
            pl.col("gpu_hours").sum(),
            pl.col("cost_usd").sum(),
            pl.col("usd_per_gpu_hour").first(),
            pl.col("price_source").first(),
            pl.col("price_fallback").first(),
            pl.col("split_method").drop_nulls().unique().sort().str.join(", ").alias("split_by"),
            *(pl.col("gpu_hours").filter(state == s).sum().alias(f"x_gpuledger_{s}_gpu_hours") for s in STATES),
            *(pl.col("cost_usd").filter(state == s).sum().alias(f"x_gpuledger_{s}_cost_usd") for s in STATES),
        )
        .join(_node_facts(node_prices), on=["cluster", "node", "date"], how="left")
    )
    mapping = team_of(rows["namespace"].unique().to_list(), teams or {})
    rows = rows.with_columns(
        pl.col("namespace").replace_strict(mapping, default=None, return_dtype=pl.String).alias("team")
    )
    records = [_record(r, window) for r in rows.iter_rows(named=True)]
    out = pl.DataFrame(records, schema=SCHEMA, orient="row") if records else pl.DataFrame(schema=SCHEMA)
    return out.sort(
        "ChargePeriodStart",
        "x_gpuledger_cluster",
        "x_gpuledger_node",
        "x_gpuledger_gpu_model",
        "x_gpuledger_namespace",
        "x_gpuledger_workload",
        nulls_last=True,
    )


def _node_facts(node_prices: pl.DataFrame) -> pl.DataFrame:
    typed = {"cluster": pl.String, "node": pl.String, "date": pl.Date, **{c: pl.String for c in _NODE_FACTS}}
    present = [c for c in typed if c in node_prices.columns]
    frame = node_prices.select(present).with_columns(pl.lit(None, typed[c]).alias(c) for c in typed if c not in present)
    return frame.select(list(typed)).cast(typed).unique(["cluster", "node", "date"], keep="first", maintain_order=True)  # type: ignore[arg-type]


def _record(row: dict[str, Any], window: Window) -> tuple[object, ...]:
    day = dt.datetime.combine(row["date"], dt.time(), dt.UTC)
    month = day.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    start, end = max(day, window.start), min(day + dt.timedelta(days=1), window.end)
    hours, cost, price = float(row["gpu_hours"]), float(row["cost_usd"]), float(row["usd_per_gpu_hour"])
    cluster, node, namespace, workload = row["cluster"], row["node"], row["namespace"], row["workload"]
    provider = provider_name(row["provider_id"], row["price_source"])
    instance_type, capacity, region = row["instance_type"], row["capacity_type"], row["region"]
    tags = {"cluster": cluster, "namespace": namespace, "workload": workload, "team": row["team"]}
    sku = instance_type or f"GPU {row['gpu_model']}"
    sku_price = ":".join((sku, capacity or "unknown", region or "unknown", f"{price:.6g}"))
    values: dict[str, object] = {
        "AvailabilityZone": row["zone"],
        "BilledCost": cost,
        "BillingAccountId": cluster,
        "BillingAccountName": cluster,
        "BillingAccountType": ACCOUNT_TYPE,
        "BillingCurrency": CURRENCY,
        "BillingPeriodEnd": next_month,
        "BillingPeriodStart": month,
        "ChargeCategory": "Usage",
        "ChargeDescription": describe(row, start, end),
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": end,
        "ChargePeriodStart": start,
        "ConsumedQuantity": hours,
        "ConsumedUnit": UNIT,
        "ContractedCost": cost,
        "ContractedUnitPrice": price,
        "EffectiveCost": cost,
        "InvoiceIssuerName": provider,
        "ListCost": cost,
        "ListUnitPrice": price,
        "PricingCategory": PRICING_CATEGORY.get(capacity or "", "Other"),
        "PricingCurrency": CURRENCY,
        "PricingCurrencyContractedUnitPrice": price,
        "PricingCurrencyEffectiveCost": cost,
        "PricingCurrencyListUnitPrice": price,
        "PricingQuantity": hours,
        "PricingUnit": UNIT,
        "ProviderName": provider,
        "PublisherName": provider,
        "RegionId": region,
        "RegionName": region,
        "ResourceId": row["provider_id"] or f"{cluster}/{node}",
        "ResourceName": node,
        "ResourceType": RESOURCE_TYPE,
        "ServiceCategory": "Compute",
        "ServiceName": SERVICE_NAME,
        "ServiceSubcategory": SERVICE_SUBCATEGORY,
        "SkuId": sku,
        "SkuMeter": SKU_METER,
        "SkuPriceDetails": json.dumps({"x_GpuModel": row["gpu_model"], "x_UsdPerGpuHour": price}, sort_keys=True),
        "SkuPriceId": sku_price,
        "Tags": json.dumps({f"{TAG_PREFIX}{k}": v for k, v in tags.items() if v is not None}, sort_keys=True),
        "x_gpuledger_cluster": cluster,
        "x_gpuledger_node": node,
        "x_gpuledger_namespace": namespace,
        "x_gpuledger_workload": workload,
        "x_gpuledger_team": row["team"],
        "x_gpuledger_gpu_model": row["gpu_model"],
        "x_gpuledger_instance_type": instance_type,
        "x_gpuledger_capacity_type": capacity,
        "x_gpuledger_usd_per_gpu_hour": price,
        "x_gpuledger_price_source": row["price_source"],
        "x_gpuledger_price_fallback": bool(row["price_fallback"]),
        "x_gpuledger_split_by": row["split_by"] or None,
        **{c: float(row[c] or 0.0) for c in EXTRA_COLUMNS if c.endswith(("_gpu_hours", "_cost_usd"))},
    }
    return tuple(values.get(c) for c in SCHEMA)


def provider_name(provider_id: str | None, price_source: str | None) -> str:
    """The cloud that rents the node: from its Kubernetes provider id (``aws:///us-east-1a/i-0abc``), else from the
    shipped price it was priced by, else ``unknown``."""
    for prefix, name in _PROVIDERS:
        if provider_id and provider_id.startswith(prefix):
            return name
    for prefix, name in _PRICE_PROVIDERS:
        if price_source and price_source.startswith(prefix):
            return name
    return UNKNOWN_PROVIDER


def describe(row: dict[str, Any], start: dt.datetime, end: dt.datetime) -> str:
    """How the row was computed, in one sentence: whose GPU-time, the state split, and the price."""
    who = f"{row['namespace']}/{row['workload']}" if row["workload"] is not None else "no pod (unallocated/no data)"
    split = ", ".join(
        f"{s} {row[f'x_gpuledger_{s}_gpu_hours']:.4f}" for s in STATES if row[f"x_gpuledger_{s}_gpu_hours"]
    )
    shared = f"; shared GPU-minutes split by {row['split_by']}" if row["split_by"] else ""
    return (
        f"{row['gpu_hours']:.4f} GPU-hours of {row['gpu_model']} on node {row['node']} (cluster {row['cluster']}) "
        f"held by {who}, {start:%Y-%m-%dT%H:%MZ} to {end:%Y-%m-%dT%H:%MZ} ({split}){shared}; "
        f"x {row['usd_per_gpu_hour']:.6g} USD per GPU-hour from {row['price_source']}"
    )
