"""What every kind's builder reads: the per-build ``Context`` (options, the window's month factor, warnings, the
workloads already claimed by an alternative, name checks, confidence), the node and price facts of the window, and
the small conversions they share (price sources, history span, whole counts)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cached_property
from typing import Any

import polars as pl

from analysis.pricing import GPU_COUNT_COLUMNS, PriceCatalog
from analysis.recommend.model import RecommendInputs
from analysis.recommend.names import clean_text, problem
from analysis.spot import NODE_GROUP_LABELS, workload_kind
from analysis.units import HOURS_PER_MONTH
from analysis.window import Window


class Context:
    """One build's state: the options, the month factor (730 / window hours), the warnings, the (gpu_model,
    namespace, workload) already claimed by mig or time-slicing, and device usage joined with node facts and prices."""

    def __init__(self, inputs: RecommendInputs) -> None:
        self.inputs = inputs
        self.options = inputs.options
        self.window = inputs.window
        self.month = HOURS_PER_MONTH / inputs.window.hours
        self.warnings: list[str] = []
        self.claimed: set[tuple[str, str, str]] = set()
        self.facts = node_facts(inputs.nodes, inputs.catalog)
        prices = node_prices(inputs.groups)
        self.devices = (
            inputs.devices.join(self.facts, on=["cluster", "node"], how="left")
            .join(prices, on=["cluster", "node"], how="left")
            .with_columns((pl.col("minutes") / 60.0 * pl.col("usd_per_gpu_hour")).alias("cost_usd"))
        )
        self.prices = prices
        self._kinds: dict[tuple[str, str], tuple[str, str]] = {}
        self.owner_kinds = owner_kinds(inputs.devices)

    def owner_kind(self, namespace: str, workload: str) -> str | None:
        """The kind of the workload's top-level owner (``CronJob``, ``PyTorchJob``...), None when none is known."""
        return self.owner_kinds.get((namespace, workload))

    def _decided(self, namespace: str, workload: str) -> tuple[str, str]:
        key = (namespace, workload)
        if key not in self._kinds:
            owner = self.owner_kind(namespace, workload)
            self._kinds[key] = workload_kind(namespace, workload, self.options.workload_kinds, owner)
        return self._kinds[key]

    def kind(self, namespace: str, workload: str) -> str:
        """The workload kind (``analysis.spot.workload_kind``: configured, else the owner kind, else the name)."""
        return self._decided(namespace, workload)[0]

    def kind_basis(self, namespace: str, workload: str) -> str:
        """How ``kind`` was decided: "configured (...)", "owner kind CronJob" or "name heuristic (no owner known)"."""
        return self._decided(namespace, workload)[1]

    @cached_property
    def single(self) -> pl.DataFrame:
        """``single_gpu_workloads`` of this build (time-slicing and gpu-model read it)."""
        return single_gpu_workloads(self)

    def names_ok(self, kind: str, checks: Iterable[tuple[str, object, str]]) -> bool:
        problems = [p for what, value, rule in checks if (p := problem(what, value, rule)) is not None]
        for p in problems:
            self.warnings.append(f"{kind}: skipped: {p}")
        return not problems

    def confidence(self, span_days: float, gpu_minutes: float) -> float:
        history = min(span_days, gpu_minutes / 1440.0)
        return max(0.0, min(1.0, history / self.options.confidence_days))


def owner_kinds(devices: pl.DataFrame) -> dict[tuple[str, str], str]:
    """(namespace, workload) -> its top-level owner's kind, from device usage's ``owner_kind`` (the first one seen
    when rows disagree); empty when the minutes carry no owners (warehouses from before owners were stored)."""
    if "owner_kind" not in devices.columns:
        return {}
    found = (
        devices.filter(pl.col("owner_kind").is_not_null())
        .sort("namespace", "workload", "owner_kind")
        .group_by("namespace", "workload", maintain_order=True)
        .agg(pl.col("owner_kind").first())
    )
    return {(ns, wl): kind for ns, wl, kind in found.iter_rows()}


def node_facts(nodes: pl.DataFrame, catalog: PriceCatalog) -> pl.DataFrame:
    """Per (cluster, node), its latest row: node group (the first of ``NODE_GROUP_LABELS``, else the instance type),
    instance type, capacity type, region, and ``gpu_count`` with ``gpu_count_basis``: the node's GPU count by the one
    rule (``analysis.gpu_count``: instance type, else GFD label, else GPUs seen), the ``node_gpus`` that
    ``analysis.pricing.price_nodes`` put beside ``nodes`` (counted with ``catalog`` when ``nodes`` were not
    priced), never the raw GPUs seen: an exporter showing 2 GPUs of a p5en.48xlarge is still an 8-GPU node."""
    if nodes.height == 0:
        return pl.DataFrame(
            schema={
                "cluster": pl.String,
                "node": pl.String,
                "node_group": pl.String,
                "instance_type": pl.String,
                "capacity_type": pl.String,
                "region": pl.String,
                "gpu_count": pl.Int64,
                "gpu_count_basis": pl.String,
            }
        )
    if any(c not in nodes.columns for c in GPU_COUNT_COLUMNS):
        nodes = with_gpu_counts(nodes, catalog)
    return (
        nodes.sort("cluster", "node", "date")
        .group_by("cluster", "node", maintain_order=True)
        .last()
        .select(
            "cluster",
            "node",
            pl.coalesce(
                *(pl.col("labels").str.json_path_match(f"$['{label}']") for label in NODE_GROUP_LABELS),
                pl.col("instance_type"),
            ).alias("node_group"),
            "instance_type",
            "capacity_type",
            "region",
            pl.col("node_gpus").cast(pl.Int64).alias("gpu_count"),
            "gpu_count_basis",
        )
    )


def with_gpu_counts(nodes: pl.DataFrame, catalog: PriceCatalog) -> pl.DataFrame:
    """``nodes`` with ``node_gpus`` and ``gpu_count_basis`` as ``analysis.pricing.price_nodes`` adds them
    (``PriceCatalog.node_gpu_count`` of each node's instance type, labels and GPUs seen)."""
    counted = [
        catalog.node_gpu_count(itype, labels, seen)
        for itype, labels, seen in zip(nodes["instance_type"], nodes["labels"], nodes["gpu_count"], strict=True)
    ]
    return nodes.with_columns(
        pl.Series("node_gpus", [c.count for c in counted], dtype=pl.Int32),
        pl.Series("gpu_count_basis", [c.basis for c in counted], dtype=pl.String),
    )


def node_prices(groups: pl.DataFrame) -> pl.DataFrame:
    """Per (cluster, node): the GPU-hour price paid in the window (GPU-hour weighted) and its sources."""
    return (
        groups.filter(pl.col("gpu_hours") > 0)
        .group_by("cluster", "node")
        .agg(
            (pl.col("cost_usd").sum() / pl.col("gpu_hours").sum()).alias("usd_per_gpu_hour"),
            pl.col("price_source").drop_nulls().unique().sort().str.join("; ").alias("price_source"),
        )
        .sort("cluster", "node")
    )


def single_gpu_workloads(ctx: Context) -> pl.DataFrame:
    """Per (cluster, node_group, instance_type, capacity_type, region, gpu_model, namespace, workload, container):
    workloads whose every pod held exactly one GPU, with their usage: ``gpu_hours`` and ``cost_usd`` their GPU-time
    (shares of shared GPUs), ``gpu_minutes`` their observed GPU-minutes (history: each once), ``split_by``."""
    d = ctx.devices
    multi = (
        d.group_by("cluster", "namespace", "workload", "pod")
        .agg(pl.col("gpu_uuid").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
        .select("cluster", "namespace", "workload")
        .unique()
    )
    keys = [
        "cluster",
        "node_group",
        "instance_type",
        "capacity_type",
        "region",
        "gpu_model",
        "namespace",
        "workload",
    ]
    return (
        d.join(multi, on=["cluster", "namespace", "workload"], how="anti", nulls_equal=True)
        .group_by(keys)
        .agg(
            pl.col("container").drop_nulls().unique().sort().alias("containers"),
            pl.col("gpu_uuid").n_unique().alias("gpus"),
            pl.col("pod").n_unique().alias("pods"),
            (pl.col("minutes").sum() / 60.0).alias("gpu_hours"),
            pl.col("cost_usd").sum(),
            pl.col("price_source").drop_nulls().unique().sort().alias("sources"),
            pl.col("duty_p95").max(),
            pl.col("busy_p99").max(),
            pl.col("peak_gib").max(),
            pl.col("fb_total_gib").max(),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            pl.col("observed_minutes").sum().alias("gpu_minutes"),
            split_by(),
        )
        .sort(keys, nulls_last=True)
    )


def split_by() -> pl.Expr:
    """The ``split_by`` of rows taken together: every method of their shared minutes, once ("" when none)."""
    methods = pl.col("split_by").filter(pl.col("split_by") != "").str.split(", ").explode()
    return methods.unique().sort().str.join(", ").alias("split_by")


def shared_note(methods: str) -> str:
    """The words a recommendation adds where its figures are shares of shared GPUs ("" when none were)."""
    return f" (its share of a shared GPU, split by {methods})" if methods else ""


def workload_checks(namespace: str, workload: str, container: str | None = None) -> list[tuple[str, object, str]]:
    """The name checks (``Context.names_ok``) of a workload's owner patch: namespace, owner and container."""
    checks: list[tuple[str, object, str]] = [
        ("namespace", namespace, "dns-1123 label"),
        ("workload", workload, "dns-1123 subdomain"),
    ]
    if container is not None:
        checks.append(("container", container, "dns-1123 label"))
    return checks


def group_target(cluster: str | None, node_group: str | None, members: list[dict[str, Any]]) -> dict[str, str | None]:
    """The target of a change to a node group's workloads: the workload itself when there is one, else the group."""
    one = members[0] if len(members) == 1 else {}
    return {
        "cluster": cluster,
        "node_group": node_group,
        "namespace": one.get("namespace"),
        "workload": one.get("workload"),
    }


def sources_text(values: Iterable[str | None]) -> str:
    """Price sources as one line: distinct, cleaned, sorted, joined by '; '."""
    return "; ".join(sorted({clean_text(v) for v in values if v}))


def catalog_entry(catalog: PriceCatalog, instance_type: str | None, region: str | None) -> Any:
    """The price catalog's entry for an instance type in a region, or None."""
    found = catalog.entry(instance_type, region) if instance_type else None
    return found[0] if found else None


def is_aws(catalog: PriceCatalog, instance_type: str | None, region: str | None) -> bool:
    """Whether the instance type is an AWS one: Karpenter NodePools (``karpenter.k8s.aws``) are exported for it."""
    entry = catalog_entry(catalog, instance_type, region)
    return entry is not None and entry.cloud == "aws"


def span_days(first: Any, last: Any) -> float:
    """Days from the ``first`` to the ``last`` observed minute, both counted; 0 when either is missing."""
    if first is None or last is None:
        return 0.0
    return float((last - first).total_seconds() + 60.0) / 86400.0


def ceil(x: float) -> int:
    """A whole count: ``math.ceil`` that ignores float noise below 1e-9."""
    return math.ceil(round(x, 9))


def window_dict(window: Window) -> dict[str, str]:
    """The window as evidence: ISO start and end."""
    return {"start": window.start.isoformat(), "end": window.end.isoformat()}
