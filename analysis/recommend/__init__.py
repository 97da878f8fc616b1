"""Recommendations: what to change, why, what it saves, and the configuration that applies it.

Pure: ``build`` takes frames (the report's priced minute groups, priced nodes, the passes of
``analysis.recommend.usage``) and the report's MIG fit and spot sections, and returns a ``RecommendationSet``; the
reading happens in ``gpuledger.recommending``, the files are rendered by ``analysis.recommend.files.render``.

**Kinds**, each judged on the window's telemetry (``M`` = 730 / window hours turns a window's dollars into a month's),
one module each, listed once in build order in ``analysis.recommend.kinds``, whose docstring says when it applies and
how its savings are computed: ``gpu_count`` (``gpu-count``), ``mig_slices`` (``mig``), ``time_slicing``
(``time-slicing``), ``gpu_model`` (``gpu-model``), ``spot_pools`` (``spot``), ``autoscaling`` (``autoscaling``),
``idle_reclaim`` (``idle-reclaim``). What they share:
``model`` (the dataclasses), ``context`` (the per-build context and the window's node and price facts),
``manifests`` (owner patches, Karpenter NodePools).

MIG, time-slicing and a cheaper model are alternatives for one workload: each workload gets the first that applies,
in that order (MIG keeps it on its nodes, time-slicing keeps its GPU model). Spot, autoscaling and idle reclaim are
computed on today's capacity and may overlap with the others: their savings do not simply add up.

**Ranking** (``model.ranked``): expected savings = savings per month x confidence; score = expected savings / (1 +
pods restarted + 4 x nodes drained): a change that saves the same, on as much evidence, and disturbs less ranks
first; ties go to the larger expected savings, then savings, then build order, then target and change.
**Confidence** = min(1, min(history span in days, observed GPU-minutes / 1440) / ``confidence_days``), after VPA's
confidence from history length and sample count.

**One plan per cluster** (``plan.build_plan``): each workload gets at most one change, the highest ranked;
competing ones are alternatives, spot + time-slicing combine into one pool; the plan's total is the headline, each
change priced by the node-hours it removes (``node_hours.bank``, from the ``NodeFleet`` that ``build`` puts in the
result when ``RecommendInputs.pod_hours`` is given; without it the plan keeps each change's own figure).

**Names** come from telemetry and are untrusted: every name an exported object carries must satisfy Kubernetes'
rules (``analysis.recommend.names``) or the recommendation is skipped with a warning.
"""

from __future__ import annotations

from analysis.recommend.context import Context, node_facts, node_prices
from analysis.recommend.kinds import KIND_MODULES, KINDS
from analysis.recommend.manifests import nodepool
from analysis.recommend.model import (
    RANK_RULE,
    SCORE_RULE,
    Manifest,
    Recommendation,
    RecommendationSet,
    RecommendInputs,
    RecommendOptions,
    ranked,
)
from analysis.recommend.node_hours import node_fleet
from analysis.recommend.plan import Plan, build_plan

__all__ = [
    "KINDS",
    "Manifest",
    "Plan",
    "RecommendInputs",
    "RecommendOptions",
    "Recommendation",
    "RecommendationSet",
    "build",
    "build_plan",
    "node_facts",
    "node_prices",
    "nodepool",
    "ranked",
]


def build(inputs: RecommendInputs) -> RecommendationSet:
    """Every recommendation of the window, ranked by score (expected savings per unit of disruption; ``ranked``)."""
    ctx = Context(inputs)
    items = [r for kind in KIND_MODULES for r in kind.recommendations(ctx) if r.savings_usd_month > 0]
    fleet = None
    if inputs.pod_hours is not None:
        held, present = inputs.pod_hours
        fleet = node_fleet(
            inputs.window, held, present, ctx.facts, ctx.prices, inputs.streaks, inputs.catalog,
            inputs.options.idle_reclaim_hours, inputs.options.autoscaling_min_percentile,
        )  # fmt: skip
    return RecommendationSet(
        fleet=fleet,
        window=inputs.window,
        items=ranked(items, KINDS),
        warnings=tuple(sorted(set(ctx.warnings))),
        assumptions={
            **inputs.options.as_dict(),
            "expected_savings": "savings per month x confidence",
            "score": SCORE_RULE,
            "rank": RANK_RULE,
            "confidence": "min(1, min(history span in days, observed GPU-minutes / 1440) / confidence_days)",
            "overlap": (
                "mig, time-slicing and gpu-model are alternatives (first that applies per workload); spot, "
                "autoscaling and idle-reclaim are computed on today's capacity and may overlap with the others"
            ),
        },
    )
