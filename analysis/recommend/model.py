"""The recommendation model: the options, a recommendation with its exported objects, the ranked set
and the inputs ``build`` takes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from analysis.mig.assumptions import COMPUTE_MARGIN, MEMORY_MARGIN
from analysis.pricing import PriceCatalog
from analysis.units import HOURS_PER_MONTH
from analysis.window import Window

if TYPE_CHECKING:
    from analysis.recommend.node_hours import NodeFleet

NODE_DRAIN_WEIGHT = 4.0


@dataclass(frozen=True)
class RecommendOptions:
    """The knobs of the recommendations (settings ``recommend_*``, ``time_slicing_*``, ``autoscaling_*``)."""

    idle_reclaim_hours: float = 24.0
    time_slicing_max_replicas: int = 4
    time_slicing_duty_target: float = 0.8
    autoscaling_min_percentile: float = 0.1
    autoscaling_max_percentile: float = 1.0
    autoscaling_headroom: float = 1.2
    confidence_days: float = 7.0
    compute_margin: float = COMPUTE_MARGIN
    memory_margin: float = MEMORY_MARGIN
    karpenter_node_class: str = "default"
    bucket_minutes: int = 10
    workload_kinds: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "idle_reclaim_hours": self.idle_reclaim_hours,
            "time_slicing_max_replicas": self.time_slicing_max_replicas,
            "time_slicing_duty_target": self.time_slicing_duty_target,
            "autoscaling_min_percentile": self.autoscaling_min_percentile,
            "autoscaling_max_percentile": self.autoscaling_max_percentile,
            "autoscaling_headroom": self.autoscaling_headroom,
            "confidence_days": self.confidence_days,
            "compute_margin": self.compute_margin,
            "memory_margin": self.memory_margin,
            "karpenter_node_class": self.karpenter_node_class,
            "bucket_minutes": self.bucket_minutes,
            "hours_per_month": HOURS_PER_MONTH,
        }


PatchType = Literal["strategic", "merge", "json"]
PATCH_NAMES = {
    "strategic": "strategic-merge patch",
    "merge": "JSON merge patch (RFC 7386)",
    "json": "JSON patch (RFC 6902)",
}


@dataclass(frozen=True)
class Manifest:
    """One exported object: a Kubernetes object to ``kubectl apply``, or a patch (``patch=True``) against an
    existing owner, with the comment lines (reasons) written above it. A patch's ``obj`` names its target
    (apiVersion, kind, metadata name and namespace) and carries its body: the other keys (and metadata keys other
    than the name and namespace) of a strategic-merge or JSON merge patch, the ``jsonPatch`` operations of a JSON
    patch. Custom resources take only ``merge`` and ``json`` (``kubectl patch`` has no strategic merge for them)."""

    obj: dict[str, Any]
    comments: tuple[str, ...] = ()
    patch: bool = False
    patch_type: PatchType = "strategic"

    def body(self) -> Any:
        """What ``kubectl patch -p`` is given."""
        if self.patch_type == "json":
            return self.obj["jsonPatch"]
        body = {k: v for k, v in self.obj.items() if k not in ("apiVersion", "kind", "metadata")}
        meta = {k: v for k, v in self.obj["metadata"].items() if k not in ("name", "namespace")}
        return {**body, **({"metadata": meta} if meta else {})}

    def apply_command(self) -> str:
        meta = self.obj["metadata"]
        if not self.patch:
            return "kubectl apply -f <this file>"
        text = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        kind, name, namespace = self.obj["kind"].lower(), meta["name"], meta["namespace"]
        return f"kubectl -n {namespace} patch {kind} {name} --type {self.patch_type} -p '{text}'"


@dataclass(frozen=True)
class Recommendation:
    kind: str
    target: dict[str, str | None]
    """cluster, node_group, namespace, workload (None where the change is not about one)."""
    change: str
    evidence: dict[str, Any]
    savings_usd_month: float
    price_source: str
    disruption: dict[str, Any]
    """pods_restarted, node_drain (bool), nodes_drained."""
    risk: str
    confidence: float
    assumptions: tuple[str, ...] = ()
    manifests: tuple[Manifest, ...] = ()

    @property
    def expected_savings_usd_month(self) -> float:
        """Savings x confidence: a saving judged on a quarter of the history counts for a quarter of its dollars."""
        return self.savings_usd_month * self.confidence

    @property
    def disruption_units(self) -> float:
        """1 + pods restarted + 4 x nodes drained."""
        return (
            1.0 + self.disruption.get("pods_restarted", 0) + NODE_DRAIN_WEIGHT * self.disruption.get("nodes_drained", 0)
        )

    @property
    def score(self) -> float:
        """Expected savings per unit of disruption: savings x confidence / (1 + pods restarted + 4 x nodes drained)."""
        return self.expected_savings_usd_month / self.disruption_units

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": dict(self.target),
            "change": self.change,
            "evidence": self.evidence,
            "savings_usd_month": round(self.savings_usd_month, 2),
            "price_source": self.price_source,
            "disruption": dict(self.disruption),
            "risk": self.risk,
            "confidence": round(self.confidence, 3),
            "expected_savings_usd_month": round(self.expected_savings_usd_month, 2),
            "disruption_units": round(self.disruption_units, 2),
            "score": round(self.score, 2),
            "assumptions": list(self.assumptions),
            "manifests": [{"patch": m.patch, "object": m.obj} for m in self.manifests],
        }


@dataclass(frozen=True)
class RecommendationSet:
    window: Window
    items: list[Recommendation]
    """Ranked by ``ranked``: highest score first."""
    warnings: tuple[str, ...] = ()
    assumptions: dict[str, Any] = field(default_factory=dict)
    fleet: NodeFleet | None = None
    """Today's pods and pools, which the plan packs to price its changes by node-hours (None without pod-hours)."""

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.items]

    def of_kind(self, kind: str) -> list[Recommendation]:
        return [r for r in self.items if r.kind == kind]

    @property
    def savings_usd_month(self) -> float:
        return sum(r.savings_usd_month for r in self.items)

    @property
    def expected_savings_usd_month(self) -> float:
        return sum(r.expected_savings_usd_month for r in self.items)


Workload = tuple[str, str]


def nodepool_of(r: Recommendation) -> Manifest | None:
    """The Karpenter NodePool a recommendation exports, if any."""
    return next((m for m in r.manifests if not m.patch and m.obj.get("kind") == "NodePool"), None)


def workloads_of(r: Recommendation) -> tuple[Workload, ...]:
    """The workloads a recommendation patches (namespace, owner name), in manifest order."""
    seen: dict[Workload, None] = {}
    for m in r.manifests:
        if m.patch:
            meta = m.obj["metadata"]
            seen[(str(meta.get("namespace")), str(meta["name"]))] = None
    return tuple(seen)


SCORE_RULE = "savings per month x confidence / (1 + pods restarted + 4 x nodes drained)"
RANK_RULE = (
    "score (on 6 decimal places), then expected savings, then savings (both on cents), then kind in build order, "
    "then target (cluster, node group, namespace, workload) and change"
)


def ranked(items: Iterable[Recommendation], kinds: Sequence[str]) -> list[Recommendation]:
    """``items`` highest score first (``SCORE_RULE``); ties broken as ``RANK_RULE`` says, so the order never hangs
    on the order the kinds were built in or on summation order. ``kinds`` is the build order
    (``analysis.recommend.kinds.KINDS``), passed in because the kinds import this module."""

    def key(r: Recommendation) -> tuple[Any, ...]:
        return (
            -round(r.score, 6),
            -round(r.expected_savings_usd_month, 2),
            -round(r.savings_usd_month, 2),
            kinds.index(r.kind) if r.kind in kinds else len(kinds),
            r.kind,
            tuple(str(r.target.get(k) or "") for k in ("cluster", "node_group", "namespace", "workload")),
            r.change,
        )

    return sorted(items, key=key)


@dataclass(frozen=True)
class RecommendInputs:
    window: Window
    groups: pl.DataFrame
    """Priced minute groups (``analysis.usage.minute_groups`` + ``analysis.costs.priced``)."""
    nodes: pl.DataFrame
    """The ``nodes`` table of the window priced by ``analysis.pricing.price_nodes``."""
    devices: pl.DataFrame
    """``analysis.recommend.usage.device_usage``."""
    demand: pl.DataFrame
    """``analysis.recommend.usage.held_demand``."""
    streaks: pl.DataFrame
    """``analysis.recommend.usage.idle_streaks``."""
    mig_fit: Mapping[str, Any]
    """The report's ``mig_fit`` section (``MigFit.to_report()``)."""
    spot: Mapping[str, Any]
    """The report's ``spot`` section with every candidate."""
    catalog: PriceCatalog
    options: RecommendOptions = field(default_factory=RecommendOptions)
    pod_hours: tuple[pl.DataFrame, pl.DataFrame] | None = None
    """``analysis.recommend.usage.pod_hours`` (held, present), collected: what the plan packs onto nodes."""
