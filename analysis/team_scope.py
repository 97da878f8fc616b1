"""One team's part of the fleet: its namespaces (the ``teams`` setting), its report inputs and its plan items.

A team's report is the fleet report narrowed to the namespaces its patterns match, by the dashboard's namespace
filter (``analysis.filters``): the GPU-time its pods held (active, idle_held, idle_allocated), priced as the fleet's.
Unallocated and unobserved GPU-time, which no namespace holds, stays in the fleet report. Its plan items are the
recommendations about its namespaces only: node-level changes, and those that touch other teams' workloads too, stay
in the fleet's.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from analysis.allocation import team_of
from analysis.filters import Filters, narrow
from analysis.report import ReportInputs

if TYPE_CHECKING:
    from analysis.recommend.model import Recommendation

NO_NAMESPACE = "(none)"
"""A name no Kubernetes namespace can have (namespaces are DNS labels): the filter of a team that held nothing, so
its report is all zeros rather than the fleet's (an empty filter is no filter)."""


def team_namespaces(namespaces: Iterable[str | None], teams: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Team -> the namespaces among ``namespaces`` that its patterns match first (``analysis.allocation.team_of``'s
    rule), sorted. A namespace no pattern matches is its own team in cost allocation, but not a team here."""
    names = sorted({n for n in namespaces if n is not None})
    out: dict[str, list[str]] = {}
    for namespace, team in team_of(names, teams).items():
        if namespace is None or team is None or team not in teams:
            continue
        if any(fnmatch.fnmatchcase(namespace, p) for p in teams[team]):
            out.setdefault(team, []).append(namespace)
    return out


def team_inputs(inputs: ReportInputs, namespaces: Sequence[str], *, gpus: int) -> ReportInputs:
    """The report inputs of the team holding ``namespaces``; ``gpus``: the GPUs its pods held in the window."""
    return narrow(inputs, Filters.of(namespaces=namespaces or (NO_NAMESPACE,)), gpus=gpus)


def is_teams(rec: Recommendation, namespaces: Iterable[str]) -> bool:
    """Whether ``rec`` is about the team's namespaces only: its target namespace and those of the workloads it
    patches are all the team's (a change about no namespace is not)."""
    from analysis.recommend.model import workloads_of  # the recommend package, which a report does not import

    about = {ns for ns in (rec.target.get("namespace"), *(ns for ns, _ in workloads_of(rec))) if ns is not None}
    return bool(about) and about <= set(namespaces)
