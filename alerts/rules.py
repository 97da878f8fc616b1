"""Alert rules: thresholds applied to the conditions ``analysis.conditions`` computed, and when to notify.

Rules (thresholds in ``[alerts]`` of the config file; 0 turns a rule off):

- ``idle_gpu``: a workload has held a GPU in idle_held/idle_allocated for ``idle_hours`` or longer, and still does.
- ``namespace_utilization``: a namespace's mean utilization over ``namespace_window_hours`` is below
  ``namespace_util_below_pct`` (namespaces holding fewer than ``namespace_min_gpu_hours`` are not judged).
- ``daily_spend``: yesterday's spend (UTC day) is more than ``spend_increase_pct`` above the mean of the
  ``spend_trailing_days`` before it.
- ``node_silent``: a node had no samples (``no_data``) for ``node_silent_minutes`` or longer in the lookback window.
- ``price_fallback``: some GPU-time in the lookback window is priced by a fallback price.
- ``gpus_not_reporting``: a node has GPUs (its instance type's or GFD's count) that sent no sample for
  ``silent_gpu_minutes`` or longer in the lookback window (``analysis.silent_gpus``).

**De-duplication and cooldown.** Each finding has a *subject* (a workload, a namespace, a day, a node, a price
source). The state keeps, per rule and subject, whether it is firing and when it was last notified. A subject is
notified when it starts firing, not while it keeps firing; one that stops and starts again within ``cooldown_hours``
of its last notification is not notified again, so a flapping condition never storms. The state is persisted in the
warehouse (``_state/alerts.json``) after the messages are in the outbox; the outbox entries also name the subjects
they cover, so a process that died in between rebuilds the state from them and a restart never re-sends.

A finding about a namespace names it (``Finding.namespace``), so ``alerts.routing`` can send it to that namespace's
team as well as to the platform.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from alerts.config import AlertRules
from alerts.outbox import Outbox
from analysis.conditions import SpendChange, idle_workloads

RULES: dict[str, str] = {
    "idle_gpu": "GPUs held idle",
    "namespace_utilization": "Namespaces with low GPU utilization",
    "daily_spend": "Daily GPU spend up",
    "node_silent": "Nodes without samples",
    "price_fallback": "Costs priced by a fallback price",
    "gpus_not_reporting": "Nodes with GPUs that do not report",
}
STATE_NAME = "alerts"


@dataclass(frozen=True)
class Finding:
    rule: str
    subject: str
    text: str
    """One line with the evidence and numbers, plain text."""
    namespace: str | None = None
    """The namespace the finding is about (idle workloads, namespaces): its team gets the alert too. None: a
    fleet-wide finding (spend, nodes, prices), for the platform channels only."""


@dataclass(frozen=True)
class Conditions:
    """What analysis says about the fleet now; a rule whose input is None was not evaluated (its state is kept)."""

    idle_streaks: pl.DataFrame | None = None
    namespaces: pl.DataFrame | None = None
    namespace_window_hours: float = 24.0
    spend: SpendChange | None = None
    spend_evaluated: bool = False
    silences: pl.DataFrame | None = None
    fallbacks: pl.DataFrame | None = None
    partly_reporting: pl.DataFrame | None = None
    """``analysis.silent_gpus.partly_reporting`` of the lookback window."""


def _shared(idle: dict[str, Any]) -> str:
    """What an idle finding adds when the workload shared its GPUs: its own GPU-hours and how they were split."""
    if not idle.get("split_by"):
        return ""
    return f"; shared GPU: its share {idle['gpu_hours']:.1f} GPU-hours, split by {idle['split_by']}"


def findings(c: Conditions, rules: AlertRules) -> dict[str, list[Finding]]:
    """Findings per evaluated rule (an evaluated rule with nothing to say maps to an empty list)."""
    out: dict[str, list[Finding]] = {}
    if rules.idle_hours > 0 and c.idle_streaks is not None:
        out["idle_gpu"] = [
            Finding(
                "idle_gpu",
                f"{r['namespace']}/{r['workload']}",
                f"{r['namespace']}/{r['workload']}: {r['gpus']} GPU{'s' if r['gpus'] != 1 else ''} idle for "
                f"{r['longest_hours']:.1f} h (since {_at(r['idle_since'])}) on {r['nodes']}{_shared(r)}",
                r["namespace"],
            )
            for r in idle_workloads(c.idle_streaks, rules.idle_hours).iter_rows(named=True)
        ]
    if rules.namespace_util_below_pct > 0 and c.namespaces is not None:
        low = c.namespaces.filter(
            (pl.col("gpu_hours") >= rules.namespace_min_gpu_hours)
            & (pl.col("mean_pct") < rules.namespace_util_below_pct)
        )
        out["namespace_utilization"] = [
            Finding(
                "namespace_utilization",
                r["namespace"],
                f"{r['namespace']}: {r['mean_pct']:.1f}% mean utilization over the last "
                f"{c.namespace_window_hours:g} h, {r['gpu_hours']:,.1f} GPU-hours held (${r['cost_usd'] or 0:,.2f})",
                r["namespace"],
            )
            for r in low.iter_rows(named=True)
        ]
    if rules.spend_increase_pct > 0 and c.spend_evaluated:
        s = c.spend
        fired = (
            s is not None
            and s.trailing_days >= rules.spend_min_trailing_days
            and s.change_pct > rules.spend_increase_pct
        )
        out["daily_spend"] = (
            [
                Finding(
                    "daily_spend",
                    s.day.isoformat(),
                    f"{s.day.isoformat()}: ${s.cost_usd:,.2f}, up {s.change_pct:.1f}% on the mean of the "
                    f"{s.trailing_days} days before (${s.trailing_mean_usd:,.2f})",
                )
            ]
            if fired and s is not None
            else []
        )
    if rules.node_silent_minutes > 0 and c.silences is not None:
        long = (
            c.silences.filter(pl.col("minutes") >= rules.node_silent_minutes)
            .sort("minutes", descending=True)
            .unique(["cluster", "node"], keep="first", maintain_order=True)
        )
        out["node_silent"] = [
            Finding(
                "node_silent",
                f"{r['cluster']}/{r['node']}",
                f"{r['cluster']}/{r['node']}: no samples for {r['minutes']:,.0f} min (since {_at(r['start'])}"
                + (", still silent)" if r["ongoing"] else f", until {_at(r['end'])})"),
            )
            for r in long.iter_rows(named=True)
        ]
    if rules.price_fallback and c.fallbacks is not None:
        out["price_fallback"] = [
            Finding(
                "price_fallback",
                r["price_source"],
                f"{r['gpu_hours']:,.1f} GPU-hours (${r['cost_usd'] or 0:,.2f}) priced by {r['price_source']}: "
                "add the instance type's price (instance_type_prices or custom_pricing_csv)",
            )
            for r in c.fallbacks.iter_rows(named=True)
        ]
    if rules.silent_gpu_minutes > 0 and c.partly_reporting is not None:
        out["gpus_not_reporting"] = [
            Finding(
                "gpus_not_reporting",
                f"{r['cluster']}/{r['node']}",
                f"{r['cluster']}/{r['node']}: {r['gpus']} GPUs ({r['gpu_count_basis']}"
                + (f" {r['instance_type']}" if r["gpu_count_basis"] == "instance type" and r["instance_type"] else "")
                + f"), {r['reporting']} reporting: {r['silent_gpu_hours']:,.1f} GPU-hours unobserved "
                f"(${r['cost_usd'] or 0:,.2f}) since {_at(r['first_silent'])}; check its dcgm-exporter or agent",
            )
            for r in c.partly_reporting.iter_rows(named=True)
            if r["silent_gpu_hours"] * 60.0 / max(r["silent_gpus"], 1) >= rules.silent_gpu_minutes
        ]
    return out


# ---------------------------------------------------------------------------------------------------------- state


@dataclass
class Track:
    firing: bool
    since: str
    last_notified: str | None = None
    resolved_at: str | None = None


@dataclass
class AlertState:
    tracks: dict[str, dict[str, Track]] = field(default_factory=dict)
    saved_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AlertState:
        if not data:
            return cls()
        return cls(
            {rule: {s: Track(**t) for s, t in subjects.items()} for rule, subjects in data.get("tracks", {}).items()},
            data.get("saved_at"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "tracks": {rule: {s: asdict(t) for s, t in subjects.items()} for rule, subjects in self.tracks.items()},
            "saved_at": self.saved_at,
        }

    def absorb(self, rule: str, subject: str, notified_at: str) -> None:
        """Record a notification found in the outbox (sent or queued), in case the state was not saved after it."""
        track = self.tracks.setdefault(rule, {}).get(subject)
        if track is None:
            self.tracks[rule][subject] = Track(firing=True, since=notified_at, last_notified=notified_at)
        elif track.last_notified is None or track.last_notified < notified_at:
            track.last_notified = notified_at
            if not track.firing and (track.resolved_at or "") <= notified_at:
                track.firing, track.since, track.resolved_at = True, notified_at, None

    def absorb_outbox(self, box: Outbox) -> None:
        """Absorb every notification the outbox holds (sent or queued) from the time this state was saved on."""
        since = dt.datetime.fromisoformat(self.saved_at) if self.saved_at else None
        for entry, (rule, subject) in box.covers_since(since):
            self.absorb(rule, subject, entry.created_at)


def decide(
    found: dict[str, list[Finding]], state: AlertState, now: dt.datetime, cooldown: dt.timedelta
) -> list[Finding]:
    """The findings to notify now; updates ``state`` (firing, resolved, last notified) for every evaluated rule."""
    stamp = now.isoformat()
    notify: list[Finding] = []
    for rule, items in found.items():
        tracks = state.tracks.setdefault(rule, {})
        seen = set()
        for item in items:
            seen.add(item.subject)
            track = tracks.get(item.subject)
            if track is not None and track.firing:
                continue
            quiet = (
                track is not None
                and track.last_notified is not None
                and now - dt.datetime.fromisoformat(track.last_notified) < cooldown
            )
            if quiet:
                assert track is not None
                track.firing, track.since, track.resolved_at = True, stamp, None
                continue
            tracks[item.subject] = Track(firing=True, since=stamp, last_notified=stamp)
            notify.append(item)
        for subject, track in list(tracks.items()):
            if subject in seen:
                continue
            if track.firing:
                track.firing, track.resolved_at = False, stamp
            notified = dt.datetime.fromisoformat(track.last_notified) if track.last_notified else None
            if notified is None or now - notified >= cooldown:
                del tracks[subject]
    state.saved_at = stamp
    return notify


def thresholds(rules: AlertRules, rule: str) -> str:
    """The settings that made ``rule`` fire, and the cooldown, as an alert message states them."""
    return {
        "idle_gpu": f"idle_hours = {rules.idle_hours:g}",
        "namespace_utilization": f"namespace_util_below_pct = {rules.namespace_util_below_pct:g} over "
        f"{rules.namespace_window_hours:g} h (namespaces with at least {rules.namespace_min_gpu_hours:g} GPU-hours)",
        "daily_spend": f"spend_increase_pct = {rules.spend_increase_pct:g} against {rules.spend_trailing_days} days",
        "node_silent": f"node_silent_minutes = {rules.node_silent_minutes:g}",
        "price_fallback": "price_fallback = true",
        "gpus_not_reporting": f"silent_gpu_minutes = {rules.silent_gpu_minutes:g}",
    }.get(rule, "") + f"; cooldown_hours = {rules.cooldown_hours:g}"


def message_key(rule: str, items: list[Finding], now: dt.datetime) -> str:
    """The idempotency key of one rule's message: rule, evaluation minute and the subjects it covers."""
    digest = hashlib.sha256("\n".join(sorted(f.subject for f in items)).encode()).hexdigest()[:12]
    return f"alert:{rule}:{now.strftime('%Y-%m-%dT%H:%MZ')}:{digest}"


def _at(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "?"
