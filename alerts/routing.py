"""Who gets a message: the platform channels (``[slack]``, ``[email]``) and each team's own (``[team_channels]``).

A *destination* is one recipient of a message: the platform's Slack or email, or one team's. Each gets its own outbox
entry, keyed ``<message key>@<destination>``, so delivery is exactly once per destination: one that fails is retried
on its own while the others are delivered, and one that has a message never gets it again.

Reports: the fleet report goes to the platform, and each team with channels gets its own. Alerts about a namespace
(``Finding.namespace``: idle workloads, low namespace utilization) go to the team the ``teams`` setting puts the
namespace in, when that team has channels, and to the platform as well unless ``platform_gets_team_alerts`` is
false; fleet-wide alerts (spend, nodes, prices) and those of a team without channels go to the platform only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from alerts.outbox import Entry, channel_key
from alerts.report import Rendered
from alerts.rules import Finding
from analysis.team_scope import team_namespaces


@dataclass(frozen=True)
class Destination:
    kind: str
    """``slack`` or ``email``: which rendering it gets."""
    team: str | None = None
    """None: the platform channel."""

    @property
    def name(self) -> str:
        """The outbox's name for it (an entry's ``channel``): ``slack``, ``email``, ``team:<team>/slack``, ..."""
        return self.kind if self.team is None else f"team:{self.team}/{self.kind}"


def entries(rendered: Rendered, key: str, destinations: Sequence[Destination], covers: list[list[str]]) -> list[Entry]:
    """One outbox entry per destination, keyed ``key@<destination>``: Slack ones get the Block Kit payload, email ones
    the email; ``covers``: the alert (rule, subject) pairs the message notifies about."""
    return [
        Entry(
            key=channel_key(key, d.name),
            channel=d.name,
            title=rendered.title,
            payload=rendered.slack if d.kind == "slack" else rendered.email,
            covers=covers,
        )
        for d in destinations
    ]


def team_findings(
    items: Sequence[Finding], teams: Mapping[str, Sequence[str]], with_channels: Collection[str]
) -> dict[str, list[Finding]]:
    """The findings about each team's namespaces, for the teams of ``with_channels`` (teams without channels, and
    fleet-wide findings, are in no list)."""
    owner = {ns: team for team, found in team_namespaces((f.namespace for f in items), teams).items() for ns in found}
    out: dict[str, list[Finding]] = {}
    for item in items:
        team = owner.get(item.namespace) if item.namespace is not None else None
        if team is not None and team in with_channels:
            out.setdefault(team, []).append(item)
    return out


def platform_findings(
    items: Sequence[Finding], by_team: Mapping[str, Sequence[Finding]], *, platform_gets_team_alerts: bool
) -> list[Finding]:
    """The findings the platform channels get: all of them, or (``platform_gets_team_alerts`` false) those no team
    with channels gets."""
    if platform_gets_team_alerts:
        return list(items)
    routed = {id(f) for found in by_team.values() for f in found}
    return [f for f in items if id(f) not in routed]
