"""Spot savings net of interruption risk, for workloads that run on on-demand capacity today.

Definitions (README "Definitions", "Spot savings"; pinned by ``tests/test_spot.py``). For one candidate using ``H``
GPU-hours of instance type ``T`` (``g`` GPUs per node) on ``N`` nodes at once, ``NH`` node-hours, over a window of
``W`` hours:

- prices ``p_od`` and ``p_spot`` (USD per GPU-hour) and the spot node price ``P = p_spot x g`` (USD per node-hour)
  come from the one price catalog (``analysis.pricing``); on AWS the spot price is an *estimate*: on-demand x (1 -
  Spot Advisor savings %);
- the Spot Advisor bucket ``b`` of ``T`` (0 ``<5%``, 1 ``5-10%``, 2 ``10-15%``, 3 ``15-20%``, 4 ``>20%`` of
  instances interrupted in the trailing month) gives ``m_b``, interruptions per node-month, the bucket's midpoint:
  2.5%, 7.5%, 12.5%, 17.5%, and 25% for the open-ended ``>20%``. Unknown risk (no Spot Advisor data, e.g. GCP) is
  taken as bucket 4;
- interruptions per month = ``m_b x NH / W`` (the node-months the workload runs per month; ``NH`` defaults to
  ``H / g`` when not measured);
- work lost per interruption ``L`` (hours) = progress since the last checkpoint (checkpoint interval / 2) + restart
  (a replacement node) + image pull + warm-up (settings ``spot_checkpoint_interval_s`` 300 s when unknown,
  ``spot_restart_overhead_s`` 120 s, ``spot_image_pull_s`` 300 s, ``spot_warm_up_s`` 300 s). Serving keeps no
  progress to lose: its ``L`` is restart + image pull + warm-up;
- nodes restarted per interruption ``R``: a job (training, batch) on ``N`` nodes is one multi-node job, so an
  interruption of any of its nodes restarts all its ranks: ``R = N``; serving restarts only the interrupted node's
  replicas: ``R = 1``;
- expected interruption cost per month = interruptions per month x ``R`` x ``L`` x ``P`` (the node price for every
  GPU of each restarted node, not the GPU-hours the workload used);
- gross savings = ``(p_od - p_spot) x H``; net savings = gross savings - interruption cost;
- monthly projection = window value x 730 / ``W`` (the window's usage is taken as typical).

Eligibility: checkpointed training and batch jobs (a job whose checkpoint interval is unknown is assumed to
checkpoint every 300 s, and the ``reason`` says so) and serving with replicas on more than one node are eligible;
single-replica services, replicas all on one node, notebooks and unknown kinds are not, nor is an instance type
with no spot price. Each ineligible row says why in ``reason``. A candidate is ``recommended`` when eligible and its
net savings are positive.

Entry points: ``spot_savings`` (a frame of candidates in, ``SpotSavings`` out); ``usage_candidates`` builds that frame
from the report's minute groups and priced nodes (workload kinds from configured patterns, else the stored owner
kinds, else guessed from names; replicas and nodes measured); ``report`` returns the report's ``spot`` section.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import polars as pl

from analysis.errors import AnalysisError
from analysis.pricing import INTERRUPTION_BUCKETS, ON_DEMAND, SPOT, PriceCatalog
from analysis.units import HOURS_PER_MONTH
from analysis.usage import owner_kinds
from analysis.window import Window

BUCKET_MONTHLY_INTERRUPTION: Mapping[int, float] = MappingProxyType({0: 0.025, 1: 0.075, 2: 0.125, 3: 0.175, 4: 0.25})
"""Share of instances interrupted per month for each Spot Advisor bucket: the bucket's midpoint (25% for >20%)."""
UNKNOWN_RISK_BUCKET = 4
"""Bucket assumed when the catalog has no interruption data (the worst one: unknown risk is not low risk)."""

JOB_KINDS = ("training", "batch")
SERVING_KINDS = ("inference", "service")
NOTEBOOK_KINDS = ("notebook",)
WORKLOAD_KINDS = JOB_KINDS + SERVING_KINDS + NOTEBOOK_KINDS

LOSS_INPUTS = (
    "gpus_per_node",
    "nodes",
    "nodes_basis",
    "node_hours",
    "interruption_bucket",
    "interruptions_per_node_month",
    "interruptions_per_month",
    "nodes_restarted",
    "progress_lost_s",
    "restart_overhead_s",
    "image_pull_s",
    "warm_up_s",
    "lost_hours_per_interruption",
    "spot_usd_per_node_hour",
)
"""The inputs of a candidate's expected interruption loss (their product), shown beside the figure."""

REQUIRED = ("instance_type", "capacity_type", "namespace", "workload", "workload_kind", "gpu_hours")
OPTIONAL: Mapping[str, type[pl.DataType]] = MappingProxyType(
    {
        "cluster": pl.String,
        "node_group": pl.String,
        "region": pl.String,
        "gpu_model": pl.String,
        "replicas": pl.Int64,
        "checkpoint_interval_s": pl.Float64,
        "checkpointed": pl.Boolean,
        "nodes": pl.Int64,
        "node_hours": pl.Float64,
        "nodes_basis": pl.String,
    }
)


class SpotInputError(AnalysisError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"spot savings: {detail}")


@dataclass(frozen=True)
class SpotAssumptions:
    """The knobs of the interruption model (settings ``spot_checkpoint_interval_s``, ``spot_restart_overhead_s``,
    ``spot_image_pull_s``, ``spot_warm_up_s``)."""

    checkpoint_interval_s: float = 300.0
    """Used for a job whose checkpoint interval is unknown."""
    restart_overhead_s: float = 120.0
    """Time to get a replacement node scheduled, provisioned and booted (80-120 s for a GPU instance)."""
    image_pull_s: float = 300.0
    """Time to pull the workload's image onto the new node (a 10 GB CUDA + PyTorch image: 4-5 minutes)."""
    warm_up_s: float = 300.0
    """Time from container start to useful work again: framework start, weights loaded, ranks rejoined."""
    min_serving_nodes: int = 2

    def __post_init__(self) -> None:
        for name in ("checkpoint_interval_s", "restart_overhead_s", "image_pull_s", "warm_up_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise SpotInputError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if self.min_serving_nodes < 2:
            raise SpotInputError(f"min_serving_nodes must be at least 2, not {self.min_serving_nodes}")

    @property
    def resume_s(self) -> float:
        """Seconds an interruption costs beyond lost progress: restart + image pull + warm-up."""
        return self.restart_overhead_s + self.image_pull_s + self.warm_up_s

    def values(self) -> dict[str, float | int]:
        """The settings' values, shown beside the figure (the report's ``spot.assumption_values``)."""
        return {
            "checkpoint_interval_s": self.checkpoint_interval_s,
            "restart_overhead_s": self.restart_overhead_s,
            "image_pull_s": self.image_pull_s,
            "warm_up_s": self.warm_up_s,
            "min_serving_nodes": self.min_serving_nodes,
        }

    def describe(self) -> tuple[str, ...]:
        """The formula and its assumptions, in words (also ``SpotSavings.assumptions``)."""
        midpoints = ", ".join(
            f"{b} ({INTERRUPTION_BUCKETS[b]}): {m:.1%}" for b, m in BUCKET_MONTHLY_INTERRUPTION.items()
        )
        return (
            "Interruptions per node-month m = the Spot Advisor bucket's midpoint: "
            f"{midpoints} (25% taken for the open-ended >20%); unknown risk (no Spot Advisor data, e.g. GCP) is "
            f"taken as bucket {UNKNOWN_RISK_BUCKET}. Interruptions per month = m x node-hours / window hours "
            "(node-hours measured, else GPU-hours / GPUs per node).",
            "Work lost per interruption L = checkpoint interval / 2 + restart overhead + image pull + warm-up "
            f"(checkpoint {self.checkpoint_interval_s:g} s when unknown, restart {self.restart_overhead_s:g} s, "
            f"image pull {self.image_pull_s:g} s, warm-up {self.warm_up_s:g} s); serving keeps no progress and "
            "loses restart + image pull + warm-up.",
            "Nodes restarted per interruption R: a job on N nodes is taken as one multi-node job, so an interruption "
            "of any of its nodes restarts all its ranks (R = N); serving restarts the interrupted node only (R = 1).",
            "Interruption cost per month = interruptions per month x R x L x spot USD per node-hour (the node price, "
            "for every GPU of each restarted node); net savings = (on-demand - spot USD/GPU-hour) x GPU-hours - "
            "interruption cost.",
            f"Monthly = window value x {HOURS_PER_MONTH:g} / window hours: the window's usage is taken as typical.",
            "Spot prices come from the price catalog (AWS: an estimate, on-demand x (1 - Spot Advisor savings %)). "
            "Nodes at once are measured from the minutes (time-weighted), else the mean GPUs held / GPUs per node, "
            "rounded up.",
            "Eligible: training and batch jobs that checkpoint (assumed when the interval is unknown) and serving "
            f"with replicas on at least {self.min_serving_nodes} nodes; not notebooks, single-replica services, "
            "replicas all on one node, or unknown kinds.",
        )


DEFAULT_ASSUMPTIONS = SpotAssumptions()


@dataclass(frozen=True)
class SpotSavings:
    """Spot candidates (one row per on-demand input row) and their total."""

    candidates: pl.DataFrame
    savings_usd_month: float
    """Net savings per month summed over recommended candidates (eligible, net savings > 0)."""
    gross_savings_usd_month: float
    """Gross savings per month over the same candidates."""
    interruption_cost_usd_month: float
    recommended: int
    assumptions: tuple[str, ...]

    def to_report(self) -> dict[str, Any]:
        """The report's ``spot`` section: ``candidates[]`` (recommended first) and ``savings_usd_month``."""
        return {
            "candidates": self.candidates.with_columns(pl.col(pl.Float64).round(4)).to_dicts(),
            "savings_usd_month": round(self.savings_usd_month, 2),
            "assumptions": list(self.assumptions),
        }


def spot_savings(
    workloads: pl.LazyFrame | pl.DataFrame,
    catalog: PriceCatalog,
    *,
    window_hours: float,
    assumptions: SpotAssumptions = DEFAULT_ASSUMPTIONS,
) -> SpotSavings:
    """Spot savings net of interruption risk for the on-demand rows of ``workloads`` (module docstring: formulas).

    ``workloads`` has one row per node group (instance type) and workload: ``instance_type``, ``capacity_type``,
    ``namespace``, ``workload``, ``workload_kind`` (training | batch | inference | service | notebook),
    ``gpu_hours`` (used in the window), and optionally ``cluster``, ``node_group``, ``region``, ``gpu_model``,
    ``replicas``, ``nodes`` (nodes it runs on at once; estimated from the GPU-hours when absent, except for serving),
    ``node_hours`` (default GPU-hours / GPUs per node), ``nodes_basis``, ``checkpoint_interval_s`` and
    ``checkpointed`` (False: the job keeps no checkpoints). Other
    columns (e.g. ``kind_basis``) are passed through. Rows not on on-demand are not candidates. ``window_hours``
    is the length of the window the GPU-hours were measured over. Candidates come back recommended first, by net
    savings per month.
    """
    if not math.isfinite(window_hours) or window_hours <= 0:
        raise SpotInputError(f"window_hours must be a positive number of hours, not {window_hours!r}")
    frame = workloads.collect() if isinstance(workloads, pl.LazyFrame) else workloads
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise SpotInputError(f"the workloads frame lacks the column(s) {', '.join(missing)}")
    frame = frame.with_columns(
        pl.lit(None, dtype=dtype).alias(name) for name, dtype in OPTIONAL.items() if name not in frame.columns
    ).with_columns(
        pl.col("instance_type", "capacity_type", "region", "gpu_model", "workload_kind").cast(pl.String),
        pl.col("gpu_hours").cast(pl.Float64),
        pl.col("replicas").cast(pl.Int64),
        pl.col("checkpoint_interval_s").cast(pl.Float64),
    )
    for column in ("gpu_hours", "checkpoint_interval_s"):
        if frame.filter(pl.col(column) < 0).height:
            raise SpotInputError(f"{column} must be >= 0")
    on_demand = frame.filter(pl.col("capacity_type") == ON_DEMAND)
    priced = on_demand.join(
        _prices(on_demand, catalog), on=["instance_type", "region", "gpu_model"], how="left", nulls_equal=True
    )
    out = priced.with_columns(pl.col("checkpoint_interval_s").is_not_null().alias("_interval_known"))
    out = out.with_columns(_effective_checkpoint(assumptions), *_nodes(window_hours)).with_columns(
        pl.col("interruption_bucket").fill_null(UNKNOWN_RISK_BUCKET).alias("_bucket"),
        (pl.col("checkpoint_interval_s") / 2).alias("progress_lost_s"),
        pl.lit(float(assumptions.restart_overhead_s)).alias("restart_overhead_s"),
        pl.lit(float(assumptions.image_pull_s)).alias("image_pull_s"),
        pl.lit(float(assumptions.warm_up_s)).alias("warm_up_s"),
        pl.when(_kind().is_in(JOB_KINDS)).then(pl.col("nodes")).otherwise(pl.lit(1)).alias("nodes_restarted"),
    )
    out = out.with_columns(
        pl.col("interruption_bucket")
        .replace_strict(dict(INTERRUPTION_BUCKETS), default=None, return_dtype=pl.String)
        .fill_null(f"unknown (assumed {INTERRUPTION_BUCKETS[UNKNOWN_RISK_BUCKET]})")
        .alias("interruption_risk"),
        pl.col("_bucket")
        .replace_strict(dict(BUCKET_MONTHLY_INTERRUPTION), return_dtype=pl.Float64)
        .alias("interruptions_per_node_month"),
        (
            (pl.col("progress_lost_s") + pl.col("restart_overhead_s") + pl.col("image_pull_s") + pl.col("warm_up_s"))
            / 3600.0
        ).alias("lost_hours_per_interruption"),
    )
    month = HOURS_PER_MONTH / window_hours
    out = out.with_columns(
        (pl.col("interruptions_per_node_month") * pl.col("node_hours") / window_hours).alias("interruptions_per_month"),
        ((pl.col("on_demand_usd_per_gpu_hour") - pl.col("spot_usd_per_gpu_hour")) * pl.col("gpu_hours")).alias(
            "gross_savings_usd"
        ),
    ).with_columns(
        (
            pl.col("interruptions_per_month")
            * pl.col("nodes_restarted")
            * pl.col("lost_hours_per_interruption")
            * pl.col("spot_usd_per_node_hour")
        ).alias("interruption_cost_usd_month")
    )
    out = out.with_columns((pl.col("interruption_cost_usd_month") / month).alias("interruption_cost_usd")).with_columns(
        (pl.col("gross_savings_usd") - pl.col("interruption_cost_usd")).alias("net_savings_usd")
    )
    out = out.with_columns(
        (pl.col("gross_savings_usd") * month).alias("gross_savings_usd_month"),
        (pl.col("net_savings_usd") * month).alias("net_savings_usd_month"),
        *_eligibility(assumptions),
    ).with_columns(
        (pl.col("eligible") & (pl.col("net_savings_usd") > 0)).alias("recommended"),
        pl.when(pl.col("eligible") & (pl.col("net_savings_usd") <= 0))
        .then(pl.concat_str("reason", pl.lit("; but expected interruptions cost more than spot saves")))
        .otherwise(pl.col("reason"))
        .alias("reason"),
    )
    columns = [
        "cluster",
        "node_group",
        "namespace",
        "workload",
        "workload_kind",
        "instance_type",
        "region",
        "gpu_model",
        "replicas",
        "gpus_per_node",
        "nodes",
        "nodes_basis",
        "node_hours",
        "gpu_hours",
        "checkpoint_interval_s",
        "on_demand_usd_per_gpu_hour",
        "spot_usd_per_gpu_hour",
        "spot_usd_per_node_hour",
        "on_demand_price_source",
        "spot_price_source",
        "interruption_bucket",
        "interruption_risk",
        "interruptions_per_node_month",
        "interruptions_per_month",
        "nodes_restarted",
        "progress_lost_s",
        "restart_overhead_s",
        "image_pull_s",
        "warm_up_s",
        "lost_hours_per_interruption",
        "gross_savings_usd",
        "interruption_cost_usd",
        "net_savings_usd",
        "gross_savings_usd_month",
        "interruption_cost_usd_month",
        "net_savings_usd_month",
        "eligible",
        "recommended",
        "reason",
    ]
    passed = [c for c in frame.columns if c not in columns and c not in ("capacity_type", "checkpointed")]
    candidates = out.select(*columns, *passed).sort(
        ["recommended", "net_savings_usd_month", "namespace", "workload"],
        descending=[True, True, False, False],
        nulls_last=True,
    )
    chosen = candidates.filter(pl.col("recommended"))
    return SpotSavings(
        candidates=candidates,
        savings_usd_month=float(chosen["net_savings_usd_month"].sum()),
        gross_savings_usd_month=float(chosen["gross_savings_usd_month"].sum()),
        interruption_cost_usd_month=float(chosen["interruption_cost_usd_month"].sum()),
        recommended=chosen.height,
        assumptions=assumptions.describe(),
    )


def _prices(frame: pl.DataFrame, catalog: PriceCatalog) -> pl.DataFrame:
    """On-demand and spot GPU-hour prices (and spot risk) per distinct (instance type, region, GPU model)."""
    keys = frame.select("instance_type", "region", "gpu_model").unique(maintain_order=True)
    rows = []
    for it, region, model in keys.iter_rows():
        od = catalog.gpu_hour_price(it, ON_DEMAND, model, region)
        sp = catalog.gpu_hour_price(it, SPOT, model, region)
        rows.append(
            {
                "on_demand_usd_per_gpu_hour": od.usd_per_gpu_hour,
                "spot_usd_per_gpu_hour": sp.usd_per_gpu_hour if sp.spot_priced else None,
                "spot_usd_per_node_hour": sp.usd_per_node_hour if sp.spot_priced else None,
                "on_demand_price_source": od.source,
                "spot_price_source": sp.source if sp.spot_priced else None,
                "interruption_bucket": sp.interruption_bucket,
                "gpus_per_node": od.gpu_count,
            }
        )
    schema = {
        "on_demand_usd_per_gpu_hour": pl.Float64,
        "spot_usd_per_gpu_hour": pl.Float64,
        "spot_usd_per_node_hour": pl.Float64,
        "on_demand_price_source": pl.String,
        "spot_price_source": pl.String,
        "interruption_bucket": pl.Int8,
        "gpus_per_node": pl.Int64,
    }
    return pl.concat([keys, pl.DataFrame(rows, schema=schema)], how="horizontal")


def _kind() -> pl.Expr:
    return pl.col("workload_kind").str.to_lowercase()


ESTIMATED_NODES = "estimated: mean GPUs held / GPUs per node, rounded up"


def _nodes(window_hours: float) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """``nodes``, ``nodes_basis`` and ``node_hours``: as given, else estimated from the GPU-hours. Serving keeps an
    unknown node count unknown (it decides eligibility)."""
    estimate = pl.col("nodes").is_null() & ~_kind().is_in(SERVING_KINDS)
    whole = (pl.col("gpu_hours") / window_hours / pl.col("gpus_per_node")).ceil().cast(pl.Int64).clip(lower_bound=1)
    return (
        pl.when(estimate).then(whole).otherwise(pl.col("nodes")).alias("nodes"),
        pl.when(estimate)
        .then(pl.lit(ESTIMATED_NODES))
        .when(pl.col("nodes").is_null())
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("nodes_basis").fill_null("given"))
        .alias("nodes_basis"),
        pl.col("node_hours").fill_null(pl.col("gpu_hours") / pl.col("gpus_per_node")).alias("node_hours"),
    )


def _effective_checkpoint(assumptions: SpotAssumptions) -> pl.Expr:
    """Seconds between checkpoints used in the model: serving keeps no progress (0); a job without a known interval
    gets the default."""
    return (
        pl.when(_kind().is_in(SERVING_KINDS))
        .then(pl.lit(0.0))
        .otherwise(pl.col("checkpoint_interval_s").fill_null(assumptions.checkpoint_interval_s))
        .alias("checkpoint_interval_s")
    )


def _eligibility(assumptions: SpotAssumptions) -> tuple[pl.Expr, pl.Expr]:
    """``eligible`` and ``reason``: the first rule that applies, in the order written."""
    kind = _kind()
    replicas = pl.col("replicas")
    nodes = pl.col("nodes")
    rules: list[tuple[pl.Expr, bool, pl.Expr]] = [
        (
            kind.is_in(NOTEBOOK_KINDS),
            False,
            pl.lit("notebook: an interruption kills the interactive session and its in-memory state"),
        ),
        (
            kind.is_in(SERVING_KINDS) & replicas.is_null(),
            False,
            pl.lit(
                f"replica count unknown: inference needs replicas on at least {assumptions.min_serving_nodes} nodes"
            ),
        ),
        (
            kind.is_in(SERVING_KINDS) & (replicas < 2),
            False,
            pl.lit("single replica: an interruption (2-minute notice) is an outage until a replacement serves"),
        ),
        (
            kind.is_in(SERVING_KINDS) & nodes.is_null(),
            False,
            pl.lit(f"node count unknown: inference needs replicas on at least {assumptions.min_serving_nodes} nodes"),
        ),
        (
            kind.is_in(SERVING_KINDS) & (nodes < assumptions.min_serving_nodes),
            False,
            pl.format(
                "{} replicas on {} node: one interruption takes them all down until a replacement serves",
                replicas,
                nodes,
            ),
        ),
        (
            ~kind.is_in(WORKLOAD_KINDS) | kind.is_null(),
            False,
            pl.format(
                "unknown workload kind '{}': only training, batch, inference, service and notebook are judged",
                pl.col("workload_kind").fill_null("(none)"),
            ),
        ),
        (
            kind.is_in(JOB_KINDS) & pl.col("checkpointed").eq(False),
            False,
            pl.lit("job without checkpoints: an interruption loses all its progress"),
        ),
        (
            pl.col("spot_usd_per_gpu_hour").is_null(),
            False,
            pl.format("no spot price known for {}", pl.col("instance_type").fill_null("(unknown instance type)")),
        ),
        (
            kind.is_in(SERVING_KINDS),
            True,
            pl.format(
                "replicated inference ({} replicas on {} nodes): the others serve while one node is replaced",
                replicas,
                nodes,
            ),
        ),
    ]
    eligible: pl.Expr = pl.lit(True)
    interval = pl.col("checkpoint_interval_s").round(0).cast(pl.Int64)
    reason: pl.Expr = (
        pl.when(pl.col("_interval_known"))
        .then(pl.format("checkpointed job: resumes from its last checkpoint (every {} s)", interval))
        .when(pl.col("checkpointed").eq(True))
        .then(
            pl.format("checkpointed job: resumes from its last checkpoint ({} s assumed, interval unknown)", interval)
        )
        .otherwise(pl.format("job: eligible if it checkpoints ({} s assumed, interval unknown)", interval))
    )
    reason = (
        pl.when(nodes > 1)
        .then(pl.format("{}; on {} nodes: an interruption of any one restarts all {}", reason, nodes, nodes))
        .otherwise(reason)
    )
    for condition, ok, text in reversed(rules):
        eligible = pl.when(condition).then(pl.lit(ok)).otherwise(eligible)
        reason = pl.when(condition).then(text).otherwise(reason)
    return eligible.alias("eligible"), reason.alias("reason")


# --- from the report's minute groups to candidates ------------------------------------------------------------------

NODE_GROUP_LABELS = ("karpenter.sh/nodepool", "eks.amazonaws.com/nodegroup", "cloud.google.com/gke-nodepool")
"""Node labels naming a node's group, in order of preference; a node with none is grouped by its instance type."""
_KIND_PATTERNS = (
    ("notebook", re.compile(r"jupyter|notebook|rstudio|code-server|(^|[/-])nb($|-)")),
    ("training", re.compile(r"train|finetune|fine-tune|pretrain|sweep|(^|[/-])ft($|-)")),
    ("batch", re.compile(r"batch|cron|nightly|hourly|daily|backfill|etl")),
)
"""How a workload's kind is guessed from ``namespace/workload`` when no configured pattern matches (first match);
anything else is taken as inference (a long-lived Deployment or StatefulSet serving requests)."""


OWNER_KINDS: Mapping[str, str] = {
    "Deployment": "inference",
    "ReplicaSet": "inference",
    "StatefulSet": "service",
    "Job": "batch",
    "CronJob": "batch",
    "PyTorchJob": "training",
    "MPIJob": "training",
    "TFJob": "training",
    "JobSet": "training",
    "RayJob": "training",
    "RayCluster": "training",
    "InferenceService": "inference",
    "LeaderWorkerSet": "inference",
    "Notebook": "notebook",
}
"""The workload kind a top-level owner kind implies. Two are refined by the name: a StatefulSet whose name says
notebook (``_KIND_PATTERNS``) is a notebook, and a Job or CronJob whose name says training is training."""


def owner_workload_kind(owner_kind: str, namespace: str | None, workload: str) -> str | None:
    """The kind ``OWNER_KINDS`` gives a top-level owner kind (refined by the name for StatefulSets and Jobs), or
    None for an owner kind it does not know (DaemonSet, Workflow...)."""
    kind = OWNER_KINDS.get(owner_kind)
    name = f"{namespace or ''}/{workload}".lower()
    if kind == "service" and _KIND_PATTERNS[0][1].search(name):
        return "notebook"
    if kind == "batch" and _KIND_PATTERNS[1][1].search(name):
        return "training"
    return kind


NAME_HEURISTIC = "name heuristic (no owner known)"


def workload_kind(
    namespace: str | None,
    workload: str,
    configured: Mapping[str, str] | None = None,
    owner_kind: str | None = None,
) -> tuple[str, str]:
    """(kind, its basis) of one workload.

    ``configured`` maps shell-style patterns over ``namespace/workload`` (``research/jupyter-*``, ``*/llama-ft-*``)
    to a kind (training | batch | inference | service | notebook); the first matching pattern wins ("configured
    (<pattern>)"). Otherwise the top-level owner kind decides (``owner_workload_kind``: "owner kind CronJob"). Only
    when no owner is known (or its kind is not in ``OWNER_KINDS``) is the kind guessed from the name
    (``_KIND_PATTERNS``: notebooks, training, batch, else inference), with the basis ``NAME_HEURISTIC``.
    """
    name = f"{namespace or ''}/{workload}"
    for pattern, kind in (configured or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            if kind.lower() not in WORKLOAD_KINDS:
                raise SpotInputError(
                    f"workload kind {kind!r} for pattern {pattern!r} is not one of {', '.join(WORKLOAD_KINDS)}"
                )
            return kind.lower(), f"configured ({pattern})"
    if owner_kind and (by_owner := owner_workload_kind(owner_kind, namespace, workload)) is not None:
        return by_owner, f"owner kind {owner_kind}"
    lowered = name.lower()
    for kind, regex in _KIND_PATTERNS:
        if regex.search(lowered):
            return kind, NAME_HEURISTIC
    return "inference", NAME_HEURISTIC


def usage_candidates(
    groups: pl.DataFrame,
    node_prices: pl.DataFrame,
    window: Window,
    *,
    workload_kinds: Mapping[str, str] | None = None,
    checkpoint_intervals_s: Mapping[str, float] | None = None,
    owners: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The ``spot_savings`` input built from the report's minute groups (``analysis.usage.minute_groups``: cluster,
    node, date, gpu_model, namespace, workload, state, gpu_hours, first_seen, last_seen) and the priced nodes
    (``analysis.pricing.price_nodes`` of the ``nodes`` table).

    One row per (cluster, node group, instance type, capacity type, region, GPU model, namespace, workload):
    ``gpu_hours`` is the GPU time the workload held (every state but ``no_data``; unallocated time has no workload);
    the node group is the first of ``NODE_GROUP_LABELS`` on the node, else its instance type; ``replicas`` is an
    *estimate*: the mean number of GPUs it held at once (GPU-hours / hours between its first and last minute,
    rounded, at least 1), i.e. replicas when each replica holds one GPU; ``nodes`` and ``node_hours`` are measured
    (``_node_presence``: the nodes it ran on at once, and the node-hours it was on them); ``workload_kind`` comes from
    ``workload_kind`` (configured patterns first, then the owner kind ``owners`` names for the workload:
    ``analysis.usage.workload_owners`` rows, joined once per workload; then the name) and ``kind_basis`` says how;
    ``checkpoint_interval_s`` from ``checkpoint_intervals_s`` (patterns over ``namespace/workload``, first match),
    else unknown.
    """
    facts = node_prices.select(
        "cluster",
        "node",
        "date",
        "instance_type",
        "capacity_type",
        "region",
        pl.coalesce(
            *(pl.col("labels").str.json_path_match(f"$['{label}']") for label in NODE_GROUP_LABELS),
            pl.col("instance_type"),
        ).alias("node_group"),
    ).unique(["cluster", "node", "date"], keep="first", maintain_order=True)
    held = groups.filter(pl.col("workload").is_not_null() & (pl.col("state") != "no_data"))
    keys = ["cluster", "node_group", "instance_type", "capacity_type", "region", "gpu_model", "namespace", "workload"]
    joined = held.join(facts, on=["cluster", "node", "date"], how="left")
    usage = (
        joined.group_by(keys)
        .agg(
            pl.col("gpu_hours").sum(),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
        )
        .with_columns(_span_hours().alias("_span_h"))
        .with_columns(
            (pl.col("gpu_hours") / pl.col("_span_h")).round(0).cast(pl.Int64).clip(lower_bound=1).alias("replicas")
        )
        .drop("first_seen", "last_seen", "_span_h")
        .join(_node_presence(joined, keys), on=keys, how="left", nulls_equal=True)
        .sort(keys, nulls_last=True)
    )
    names = usage.select("namespace", "workload").unique(maintain_order=True)
    if owners is not None and owners.height:
        names = names.join(owner_kinds(owners), on=["namespace", "workload"], how="left", maintain_order="left")
    else:
        names = names.with_columns(pl.lit(None, pl.String).alias("owner_kind"))
    kinds = [workload_kind(ns, wl, workload_kinds, owner) for ns, wl, owner in names.iter_rows()]
    intervals = [_checkpoint(ns, wl, checkpoint_intervals_s or {}) for ns, wl, _ in names.iter_rows()]
    decided = names.drop("owner_kind").with_columns(
        pl.Series("workload_kind", [k for k, _ in kinds], dtype=pl.String),
        pl.Series("kind_basis", [s for _, s in kinds], dtype=pl.String),
        pl.Series("checkpoint_interval_s", intervals, dtype=pl.Float64),
    )
    return usage.join(decided, on=["namespace", "workload"], how="left", nulls_equal=True, maintain_order="left")


def _span_hours() -> pl.Expr:
    return (pl.col("last_seen") - pl.col("first_seen")).dt.total_seconds() / 3600.0 + 1 / 60


MEASURED_NODES = "measured: node-hours / hours running"


def _node_presence(joined: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per workload: ``node_hours``, the hours it held GPUs on each node (first to last minute, per node and day),
    summed; ``nodes``, the nodes it ran on at once, time-weighted: node-hours / the hours it ran (per day, first to
    last minute on any node), rounded, at least 1."""
    per_node = joined.group_by([*keys, "node", "date"]).agg(pl.col("first_seen").min(), pl.col("last_seen").max())
    per_day = per_node.group_by([*keys, "date"]).agg(pl.col("first_seen").min(), pl.col("last_seen").max())
    node_hours = (
        per_node.with_columns(_span_hours().alias("h")).group_by(keys).agg(pl.col("h").sum().alias("node_hours"))
    )
    running = per_day.with_columns(_span_hours().alias("h")).group_by(keys).agg(pl.col("h").sum().alias("_running_h"))
    return (
        node_hours.join(running, on=keys, nulls_equal=True)
        .with_columns(
            (pl.col("node_hours") / pl.col("_running_h")).round(0).cast(pl.Int64).clip(lower_bound=1).alias("nodes"),
            pl.lit(MEASURED_NODES).alias("nodes_basis"),
        )
        .drop("_running_h")
    )


def _checkpoint(namespace: str | None, workload: str, configured: Mapping[str, float]) -> float | None:
    name = f"{namespace or ''}/{workload}"
    for pattern, seconds in configured.items():
        if fnmatch.fnmatchcase(name, pattern):
            if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
                raise SpotInputError(
                    f"checkpoint interval for pattern {pattern!r} must be seconds >= 0, not {seconds!r}"
                )
            return float(seconds)
    return None


def report(
    groups: pl.DataFrame,
    node_prices: pl.DataFrame,
    catalog: PriceCatalog,
    window: Window,
    *,
    assumptions: SpotAssumptions = DEFAULT_ASSUMPTIONS,
    workload_kinds: Mapping[str, str] | None = None,
    checkpoint_intervals_s: Mapping[str, float] | None = None,
    top_n: int | None = None,
    owners: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """The report's ``spot`` section: ``spot_savings`` over ``usage_candidates`` for the window (``top_n`` rows);
    ``owners``: the window's ``analysis.usage.workload_owners`` rows (the kinds' owner kinds), None when unknown."""
    candidates = usage_candidates(
        groups,
        node_prices,
        window,
        workload_kinds=workload_kinds,
        checkpoint_intervals_s=checkpoint_intervals_s,
        owners=owners,
    )
    result = spot_savings(candidates, catalog, window_hours=window.hours, assumptions=assumptions)
    section = result.to_report()
    if top_n is not None:
        section["candidates"] = section["candidates"][:top_n]
    section["gross_savings_usd_month"] = round(result.gross_savings_usd_month, 2)
    section["interruption_cost_usd_month"] = round(result.interruption_cost_usd_month, 2)
    section["recommended"] = result.recommended
    section["assumption_values"] = assumptions.values()
    return section
