"""Where a figure leads: a waste to the recommendation that removes it, a recommendation to its evidence.

Pages are addressed by their file under ``views/`` (``st.page_link``) or by their URL path (a table's link
column); the Recommendations and Idle waste pages read the query parameters named here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

NAMESPACE = "namespace"
WORKLOAD = "workload"
UNALLOCATED = "unallocated"
"""``?unallocated=1``: the recommendations for GPU-time no pod held (those that target node groups)."""
SEARCH = "q"
"""Idle waste's search box."""

RECOMMENDATIONS = "views/recommendations.py"
IDLE_WASTE = "views/idle_waste.py"
EVIDENCE_PAGES = {"mig": "views/mig_fit.py", "spot": "views/spot.py", "autoscaling": "views/gpus.py"}
"""The page that shows a recommendation kind's evidence; any other kind's is its workload on Idle waste."""


def fix_params(namespace: str | None, workload: str | None) -> dict[str, str]:
    """The Recommendations page's query for what removes this waste (no namespace: unallocated time)."""
    if namespace is None:
        return {UNALLOCATED: "1"}
    return {NAMESPACE: namespace, **({WORKLOAD: workload} if workload else {})}


def fix_url(namespace: str | None, workload: str | None) -> str:
    """The same, as a link relative to the page it is on (every page is one path segment under the app)."""
    return "recommendations?" + urlencode(fix_params(namespace, workload))


def evidence(kind: str, target: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The page (and its query) that shows why a recommendation of ``kind`` on ``target`` was made."""
    page = EVIDENCE_PAGES.get(kind)
    if page is not None:
        return page, {}
    who = target.get("workload") or target.get("namespace")
    return IDLE_WASTE, ({SEARCH: str(who)} if who else {})


def evidence_url(kind: str, target: Mapping[str, Any]) -> str:
    """The same, as a link relative to the page it is on (a page's URL is its file's name without ``.py``)."""
    page, query = evidence(kind, target)
    path = page.removeprefix("views/").removesuffix(".py")
    return f"{path}?{urlencode(query)}" if query else path


def matches(item: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    """Whether a recommendation (``to_dict`` with ``workloads``: the namespace/name pairs it patches) is what the
    Recommendations page was asked for: it targets that workload, or it changes it (a spot pool moving it)."""
    target = item.get("target") or {}
    if query.get(UNALLOCATED):
        return target.get("workload") is None and target.get("namespace") is None
    namespace, workload = query.get(NAMESPACE), query.get(WORKLOAD)
    if target.get("namespace") == namespace and (not workload or target.get("workload") == workload):
        return True
    return any(ns == namespace and (not workload or name == workload) for ns, name in item.get("workloads") or [])


def asked(query: Mapping[str, str]) -> str | None:
    """What the Recommendations page was filtered to, in words (None: not filtered)."""
    if query.get(UNALLOCATED):
        return "unallocated GPU-time (node groups)"
    if query.get(NAMESPACE):
        return "/".join(query[k] for k in (NAMESPACE, WORKLOAD) if query.get(k))
    return None
