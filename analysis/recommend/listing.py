"""The ranked recommendations with their plan, as one JSON document: what the dashboard's Recommendations page
draws, whether computed for the page or stored with the warehouse (``gpuledger warehouse rollup``)."""

from __future__ import annotations

import json
from typing import Any

from analysis.recommend import RecommendationSet
from analysis.recommend.files import render
from analysis.recommend.model import workloads_of
from analysis.recommend.plan import build_plan


def listing(found: RecommendationSet) -> dict[str, Any]:
    """``{"items": [Recommendation.to_dict()...], "files": {name: text}}``: every ranked recommendation with its
    ``rank``, the workloads it patches (``workloads``: [namespace, name]), whether its cluster's plan applies it
    (``in_plan``) and, if so, what it banks there (``plan_savings_usd_month``: the node-hours it removes x their
    price; ``plan_expected_usd_month``), and the plan's files (``files.render``). Plain JSON values only (times as
    ISO text), so a stored copy reads back equal."""
    plan = build_plan(found)
    applied = {a.rank: a for a in plan.applied}
    items = []
    for rank, item in enumerate(found.items, 1):
        a = applied.get(rank)
        items.append(
            {
                **item.to_dict(),
                "workloads": [list(w) for w in workloads_of(item)],
                "rank": rank,
                "in_plan": a is not None,
                "plan_savings_usd_month": a.savings_usd_month if a is not None else None,
                "plan_expected_usd_month": a.expected_savings_usd_month if a is not None else None,
            }
        )
    document: dict[str, Any] = json.loads(json.dumps({"items": items, "files": render(plan)}, default=str))
    return document
