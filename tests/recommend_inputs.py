"""Hand-made inputs for the recommendation kinds' builders (``analysis.recommend.<kind>.recommendations``): a few
nodes of real instance types, a few GPUs, a few workloads, turned straight into the frames ``RecommendInputs`` holds,
with no warehouse and no pass over minutes. On the seven fleets of ``tests/test_recommend.py`` they give the same
recommendations, to the byte, as the same telemetry ingested into a warehouse and read by ``gpuledger.recommending``,
except the MIG fit's p95, which the warehouse reads at the end of its histogram bucket (5.2% for a steady 5%).

A ``Fleet`` GPU is sampled every minute from the window start for ``minutes`` minutes at a constant utilization and
memory, held by one pod or by none, so every frame follows from it by hand:

- its state is the state rules' (``analysis.states``, default thresholds): active at or above 5% utilization, else
  idle_held (a pod holding more than 1 GiB), idle_allocated (a pod, less memory) or unallocated (no pod);
- ``devices`` (``usage.device_usage``): one row per held GPU, every percentile = the utilization / 100; no GPU is
  shared, so ``observed_minutes`` = ``minutes`` and ``split_by`` is "" (here and in ``streaks``); its pod's
  ``owner_kind``, ``cpu_request`` and ``memory_request_bytes`` as given (null by default);
- ``groups``: its GPU-hours per day and state, priced by the real ``analysis.costs.priced`` over the nodes priced
  by ``analysis.pricing.price_nodes`` (the shipped catalog), so a price and its source are the warehouse's;
- ``demand`` (``usage.held_demand``): per node and ``bucket_minutes`` bucket, the GPUs held and observed;
- ``streaks`` (``usage.idle_streaks``): a workload none of whose GPUs was active idles from the start for as long
  as its shortest GPU was held, kept when at least ``idle_reclaim_hours`` long;
- ``mig_fit``: the report's section from ``analysis.mig.fit_and_pack`` over one demand row per workload (p95 = the
  utilization, confidence = min(history days, minutes / 1440), whole GPUs held);
- ``spot``: the report's section from ``analysis.spot.report`` over ``groups``, every candidate, with the pods'
  owner kinds as ``owners``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis import mig, spot
from analysis.costs import observed_model_prices, priced
from analysis.mig.demand import DEMAND_SCHEMA
from analysis.pricing import PriceCatalog, model_prices, price_nodes
from analysis.recommend import Context, RecommendInputs, RecommendOptions
from analysis.recommend.kinds import KIND_MODULES
from analysis.recommend.model import Recommendation
from analysis.states import StateRules
from analysis.units import GIB, MINUTES_PER_DAY
from analysis.window import Window

END = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)
"""Windows end at midnight, like a report's day."""
CATALOG = PriceCatalog.build()
REGION = "us-east-1"
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
L4 = "NVIDIA L4"
RULES = StateRules()
MINUTE = dt.timedelta(minutes=1)


def price(itype: str, capacity: str, model: str) -> float:
    """The shipped catalog's GPU-hour price, as the builders' inputs carry it."""
    return CATALOG.gpu_hour_price(itype, capacity, model, REGION).usd_per_gpu_hour


def recommendations_of(kind: str, inputs: RecommendInputs) -> list[Recommendation]:
    """What the registered builder of ``kind`` recommends on ``inputs`` alone (nothing claimed before it)."""
    (module,) = [m for m in KIND_MODULES if kind == m.NAME]
    return module.recommendations(Context(inputs))


@dataclass(frozen=True)
class _Gpu:
    node: str
    uuid: str
    model: str
    minutes: int
    util: float
    mem_gib: float
    total_gib: float
    pod: tuple[str, str, str, str] | None
    owner_kind: str | None = None
    cpu_request: float | None = None
    memory_request_bytes: int | None = None

    @property
    def state(self) -> str:
        if self.util >= RULES.active_threshold_pct:
            return "active"
        if self.pod is None:
            return "unallocated"
        return "idle_held" if self.mem_gib * GIB > RULES.held_memory_bytes else "idle_allocated"


@dataclass(frozen=True)
class _Node:
    name: str
    instance_type: str
    capacity: str
    model: str
    gpus: int
    group: str


class Fleet:
    """Nodes and the GPUs sampled on them in a window of ``hours`` ending at ``END`` (module docstring)."""

    def __init__(self, hours: float, options: RecommendOptions | None = None) -> None:
        self.window = Window(END - dt.timedelta(hours=hours), END)
        self.options = options or RecommendOptions()
        self._nodes: dict[str, _Node] = {}
        self._gpus: list[_Gpu] = []

    def node(self, name: str, itype: str, capacity: str, model: str, gpus: int, group: str) -> None:
        """A node of instance type ``itype`` in node group ``group`` (its ``karpenter.sh/nodepool`` label)."""
        self._nodes[name] = _Node(name, itype, capacity, model, gpus, group)

    def gpu(
        self,
        node: str,
        uuid: str,
        *,
        util: float,
        mem_gib: float,
        total_gib: float,
        pod: tuple[str, str, str, str] | None = None,
        minutes: int | None = None,
        owner_kind: str | None = None,
        cpu_request: float | None = None,
        memory_request_bytes: int | None = None,
    ) -> None:
        """A GPU of ``node``, sampled for ``minutes`` (default: the whole window) at ``util`` percent and ``mem_gib``
        used; ``pod`` = (namespace, pod, container, workload) holding it, with its top-level owner's kind and its
        CPU (vCPUs) and memory (bytes) requests where known."""
        whole = round(self.window.hours * 60)
        self._gpus.append(
            _Gpu(
                node,
                uuid,
                self._nodes[node].model,
                whole if minutes is None else minutes,
                util,
                mem_gib,
                total_gib,
                pod,
                owner_kind,
                cpu_request,
                memory_request_bytes,
            )
        )

    def inputs(self) -> RecommendInputs:
        nodes = self._node_rows()
        node_prices = price_nodes(nodes, CATALOG)
        groups = self._groups(node_prices)
        devices = self._devices()
        owners = devices.select("cluster", "namespace", "workload", "owner_kind").unique() if devices.height else None
        return RecommendInputs(
            window=self.window,
            groups=groups,
            nodes=node_prices,
            devices=devices,
            demand=self._demand(),
            streaks=self._streaks(),
            mig_fit=self._mig_fit(groups),
            spot=spot.report(groups, node_prices, CATALOG, self.window, owners=owners),
            catalog=CATALOG,
            options=self.options,
        )

    def _last(self, g: _Gpu) -> dt.datetime:
        return self.window.start + (g.minutes - 1) * MINUTE

    def _node_rows(self) -> pl.DataFrame:
        days = (self.window.end - self.window.start).days + 2
        first = (self.window.end - MINUTE).date()
        rows = [
            {
                "date": first - dt.timedelta(days=d),
                "cluster": "c1",
                "node": n.name,
                "instance_type": n.instance_type,
                "capacity_type": n.capacity,
                "region": REGION,
                "zone": f"{REGION}a",
                "gpu_model": n.model,
                "gpu_count": n.gpus,
                "mig_strategy": "none",
                "labels": json.dumps(
                    {"karpenter.sh/nodepool": n.group, "node.kubernetes.io/instance-type": n.instance_type}
                ),
            }
            for n in self._nodes.values()
            for d in range(days)
        ]
        return pl.DataFrame(rows).with_columns(pl.col("gpu_count").cast(pl.Int32))

    def _groups(self, node_prices: pl.DataFrame) -> pl.DataFrame:
        """Priced minute groups: per (node, day, GPU model, holder, state) the GPU-hours, first and last minute."""
        rows: list[dict[str, Any]] = []
        for g in self._gpus:
            ns, _, _, wl = g.pod or (None, None, None, None)
            t, end = self.window.start, self.window.start + g.minutes * MINUTE
            while t < end:
                day_end = min(end, dt.datetime.combine(t.date() + dt.timedelta(days=1), dt.time(), dt.UTC))
                rows.append(
                    {
                        "cluster": "c1",
                        "node": g.node,
                        "date": t.date(),
                        "gpu_model": g.model,
                        "namespace": ns,
                        "workload": wl,
                        "state": g.state,
                        "gpu_hours": (day_end - t).total_seconds() / 3600.0,
                        "first_seen": t,
                        "last_seen": day_end - MINUTE,
                    }
                )
                t = day_end
        keys = ["cluster", "node", "date", "gpu_model", "namespace", "workload", "state"]
        groups = (
            pl.DataFrame(rows)
            .group_by(keys, maintain_order=True)
            .agg(pl.col("gpu_hours").sum(), pl.col("first_seen").min(), pl.col("last_seen").max())
        )
        return priced(groups, node_prices, model_prices(groups["gpu_model"].unique().to_list(), CATALOG))

    def _devices(self) -> pl.DataFrame:
        rows = [
            {
                "cluster": "c1",
                "node": g.node,
                "gpu_model": g.model,
                "gpu_uuid": g.uuid,
                "namespace": g.pod[0],
                "workload": g.pod[3],
                "pod": g.pod[1],
                "container": g.pod[2],
                "minutes": g.minutes,
                "active_minutes": g.minutes if g.state == "active" else 0,
                "observed_minutes": g.minutes,
                "split_by": "",
                "busy_p95": g.util / 100.0,
                "busy_p99": g.util / 100.0,
                "duty_p95": g.util / 100.0,
                "peak_gib": g.mem_gib,
                "fb_total_gib": g.total_gib,
                "first_seen": self.window.start,
                "last_seen": self._last(g),
                "owner_kind": g.owner_kind,
                "cpu_request": g.cpu_request,
                "memory_request_bytes": g.memory_request_bytes,
            }
            for g in self._gpus
            if g.pod is not None
        ]
        return pl.DataFrame(
            rows,
            schema_overrides={"owner_kind": pl.String, "cpu_request": pl.Float64, "memory_request_bytes": pl.Int64},
        )

    def _demand(self) -> pl.DataFrame:
        """Per node and bucket: GPU-minutes held and observed in the bucket / the bucket's minutes."""
        size = self.options.bucket_minutes
        held: dict[tuple[str, dt.datetime], float] = {}
        seen: dict[tuple[str, dt.datetime], float] = {}
        for g in self._gpus:
            for i in range(0, g.minutes, size):
                key = (g.node, self.window.start + i * MINUTE)
                share = min(size, g.minutes - i) / size
                seen[key] = seen.get(key, 0.0) + share
                if g.pod is not None:
                    held[key] = held.get(key, 0.0) + share
        return pl.DataFrame(
            [
                {"cluster": "c1", "node": node, "bucket": bucket, "held_gpus": held.get((node, bucket), 0.0), "gpus": n}
                for (node, bucket), n in sorted(seen.items())
            ],
            schema={
                "cluster": pl.String,
                "node": pl.String,
                "bucket": pl.Datetime("us", "UTC"),
                "held_gpus": pl.Float64,
                "gpus": pl.Float64,
            },
        )

    def _by_workload(self) -> dict[tuple[str, str, str], list[_Gpu]]:
        out: dict[tuple[str, str, str], list[_Gpu]] = {}
        for g in self._gpus:
            if g.pod is not None:
                out.setdefault((g.pod[0], g.pod[3], g.model), []).append(g)
        return out

    def _streaks(self) -> pl.DataFrame:
        rows = []
        for (ns, wl, _), gpus in sorted(self._by_workload().items()):
            run = min(g.minutes for g in gpus)
            if any(g.state == "active" for g in gpus) or run < self.options.idle_reclaim_hours * 60:
                continue
            rows.append(
                {
                    "cluster": "c1",
                    "namespace": ns,
                    "workload": wl,
                    "start": self.window.start,
                    "end": self.window.start + run * MINUTE,
                    "minutes": run,
                    "gpu_minutes": run * len(gpus),
                    "observed_gpu_minutes": run * len(gpus),
                    "split_by": "",
                }
            )
        return pl.DataFrame(
            rows,
            schema={
                "cluster": pl.String,
                "namespace": pl.String,
                "workload": pl.String,
                "start": pl.Datetime("us", "UTC"),
                "end": pl.Datetime("us", "UTC"),
                "minutes": pl.Int64,
                "gpu_minutes": pl.Int64,
                "observed_gpu_minutes": pl.Int64,
                "split_by": pl.String,
            },
        )

    def _mig_fit(self, groups: pl.DataFrame) -> dict[str, Any]:
        assumptions = mig.DEFAULT_ASSUMPTIONS
        rows = []
        for (ns, wl, model), gpus in sorted(self._by_workload().items()):
            minutes = max(g.minutes for g in gpus)
            confidence = minutes / MINUTES_PER_DAY  # history span and observed minutes are both `minutes`
            util = max(g.util for g in gpus) / 100.0
            peak = max(g.mem_gib for g in gpus)
            rows.append(
                {
                    "namespace": ns,
                    "workload": wl,
                    "gpu_model": model,
                    "minutes": minutes,
                    "gpu_hours": sum(g.minutes for g in gpus) / 60.0,
                    "replicas": len(gpus),
                    "gpu_uuids": sorted(g.uuid for g in gpus),
                    "util_pct_p95": util * 100.0,
                    "peak_mem_gib": peak,
                    "confidence": confidence,
                    "history_hours": confidence * 24.0,
                    "compute_held": 1.0,
                    "compute_demand": min(1.0, util * assumptions.margin(confidence)),
                    "memory_demand_gib": peak * assumptions.memory_margin,
                }
            )
        models = observed_model_prices(groups)
        return mig.fit_and_pack(
            pl.DataFrame(rows, schema=DEMAND_SCHEMA),
            dict(zip(models["gpu_model"], models["usd_per_gpu_hour"], strict=True)),
            dict(zip(models["gpu_model"], models["price_source"], strict=True)),
            assumptions,
        ).to_report()
