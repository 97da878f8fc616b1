"""The alert job: read the warehouse for the alert conditions, evaluate the rules, queue a message per rule for the
platform channels and one per rule for each team with channels whose namespaces it is about (``alerts.routing``).

Reading happens here; the conditions are computed by ``analysis.conditions``, the rules and their state by
``alerts.rules``, the messages by ``alerts.report``; delivery is ``gpuledger.delivering``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import polars as pl

from alerts import routing, rules
from alerts.outbox import Entry
from alerts.report import alert_message
from analysis import conditions, usage
from analysis.window import Window
from gpuledger import delivering, jobs, reporting
from gpuledger.delivering import outbox
from gpuledger.settings import Settings
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing
from warehouse.schema import GPU_MINUTES, GPU_SAMPLES

log = logging.getLogger(__name__)


def priced_groups(lake: Lake, settings: Settings, window: Window) -> pl.DataFrame:
    """The window's minute groups priced as the report prices them (``gpuledger.reporting.priced_usage``)."""
    return reporting.priced_usage(lake, settings, window).groups


def read_conditions(lake: Lake, settings: Settings, now: dt.datetime) -> rules.Conditions:
    """Everything the enabled rules need, read for the windows ending at ``now``."""
    r = settings.alerts
    lookback = Window(now - dt.timedelta(hours=r.lookback_hours), now)
    minutes = usage.in_window(lake.scan(GPU_MINUTES, start=lookback.start, end=lookback.end), lookback)
    streaks = conditions.idle_streaks(minutes).collect() if r.idle_hours > 0 else None
    silences = (
        conditions.node_silences(minutes, lake.series_spans(GPU_SAMPLES), lookback.start, now)
        if r.node_silent_minutes > 0
        else None
    )
    priced = reporting.priced_usage(lake, settings, lookback) if r.price_fallback or r.silent_gpu_minutes > 0 else None
    groups = priced.groups if priced is not None else None
    fallbacks = conditions.price_fallbacks(groups) if groups is not None and r.price_fallback else None
    partly = priced.partly_reporting if priced is not None and r.silent_gpu_minutes > 0 else None
    namespaces = None
    if r.namespace_util_below_pct > 0:
        ns_window = Window(now - dt.timedelta(hours=r.namespace_window_hours), now)
        ns_groups = groups if ns_window == lookback and groups is not None else priced_groups(lake, settings, ns_window)
        namespaces = conditions.namespace_utilization(ns_groups)
    spend = None
    if r.spend_increase_pct > 0:
        day, spend_window = conditions.spend_window(now, r.spend_trailing_days)
        daily = conditions.daily_spend(priced_groups(lake, settings, spend_window))
        spend = conditions.spend_change(daily, day, r.spend_trailing_days)
    return rules.Conditions(
        idle_streaks=streaks,
        namespaces=namespaces,
        namespace_window_hours=r.namespace_window_hours,
        spend=spend,
        spend_evaluated=r.spend_increase_pct > 0,
        silences=silences,
        fallbacks=fallbacks,
        partly_reporting=partly,
    )


@dataclass(frozen=True)
class Evaluation:
    found: dict[str, list[rules.Finding]]
    notified: list[rules.Finding]
    queued: list[str]
    """Outbox keys queued by this evaluation."""


def evaluate(lake: Lake, settings: Settings, now: dt.datetime, *, refresh: bool = True) -> Evaluation:
    """Evaluate every rule at ``now``, queue one message per rule for the subjects that start firing, then save the
    alert state (the outbox entries name their subjects, so a crash in between re-sends nothing)."""
    if refresh:
        jobs.refresh(lake, settings)
    with diagnosing(lake):
        found = rules.findings(read_conditions(lake, settings, now), settings.alerts)
    box = outbox(lake, settings)
    state = rules.AlertState.from_json(lake.read_state(rules.STATE_NAME))
    state.absorb_outbox(box)
    notify = rules.decide(found, state, now, dt.timedelta(hours=settings.alerts.cooldown_hours))
    wanted = list(settings.alerts.channels)
    to_platform = delivering.platform(settings, wanted)
    to_teams = delivering.teams(settings, wanted)
    by_rule: dict[str, list[rules.Finding]] = {}
    for item in notify:
        by_rule.setdefault(item.rule, []).append(item)
    entries: list[Entry] = []
    for rule, items in by_rule.items():
        by_team = routing.team_findings(items, settings.teams, to_teams)
        messages = [(found_items, to_teams[team]) for team, found_items in by_team.items()]
        platform_items = routing.platform_findings(
            items, by_team, platform_gets_team_alerts=settings.alerts.platform_gets_team_alerts
        )
        if platform_items and to_platform:
            messages.insert(0, (platform_items, to_platform))
        elif platform_items:
            log.warning("alert %s fired for %d subjects but no channel is configured", rule, len(platform_items))
        for found_items, destinations in messages:
            rendered = alert_message(rule, found_items, now=now, thresholds=rules.thresholds(settings.alerts, rule))
            key = rules.message_key(rule, found_items, now)
            entries += routing.entries(rendered, key, destinations, [[rule, f.subject] for f in found_items])
    queued = [e.key for e in box.enqueue(entries, now)]  # every destination's copy under one lock
    lake.write_state(rules.STATE_NAME, state.to_json())
    return Evaluation(found, notify, queued)
