"""The alert conditions (analysis.conditions), the rules on them, de-duplication, cooldown and persisted state."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from alerts import due
from alerts.config import AlertRules
from alerts.outbox import Entry, Outbox
from alerts.rules import AlertState, Conditions, Finding, decide, findings
from analysis import conditions
from gpuledger import alerting, delivering, report_sending
from gpuledger.settings import Settings, load_settings
from tests.alert_servers import Webhook
from tests.conftest import T0, allocation_rows, sample_rows
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES

UTC = dt.UTC
H = dt.timedelta(hours=1)


def minutes_frame(rows: list[tuple[str, int, str, str | None]]) -> pl.LazyFrame:
    """(gpu, minute offset from T0, state, workload) rows of a gpu_minutes-like frame on node n1."""
    return pl.DataFrame(
        {
            "ts": [T0 + dt.timedelta(minutes=m) for _, m, _, _ in rows],
            "cluster": ["c1"] * len(rows),
            "node": ["n1"] * len(rows),
            "gpu_uuid": [g for g, _, _, _ in rows],
            "mig_instance_id": pl.Series([None] * len(rows), dtype=pl.Int32),
            "namespace": [("ns" if w else None) for _, _, _, w in rows],
            "workload": [w for _, _, _, w in rows],
            "state": [s for _, _, s, _ in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    ).lazy()


# ------------------------------------------------------------------------------------------------------ conditions


def test_idle_streaks_break_on_gaps_holders_and_activity() -> None:
    rows = (
        [("g1", m, "idle_held", "train") for m in range(0, 120)]  # 2 h, then active: a closed streak
        + [("g1", m, "active", "train") for m in range(120, 130)]
        + [("g1", m, "idle_allocated", "train") for m in range(130, 190)]  # 1 h, ongoing
        + [("g2", m, "idle_held", "serve") for m in range(0, 60)]
        + [("g2", m, "idle_held", "serve") for m in range(70, 370)]  # gap at 60-69: a new 5 h streak, ongoing
        + [("g3", m, "idle_held", "a") for m in range(0, 30)]
        + [("g3", m, "idle_held", "b") for m in range(30, 60)]  # another holder: another streak
        + [("g4", m, "unallocated", None) for m in range(0, 300)]  # nobody holds it: not an idle streak
    )
    streaks = conditions.idle_streaks(minutes_frame(rows)).collect()
    got = {(r["gpu_uuid"], r["workload"], r["hours"], r["ongoing"]) for r in streaks.iter_rows(named=True)}
    assert got == {
        ("g1", "train", 2.0, False),
        ("g1", "train", 1.0, True),
        ("g2", "serve", 1.0, False),
        ("g2", "serve", 5.0, True),
        ("g3", "a", 0.5, False),
        ("g3", "b", 0.5, True),
    }
    idle = conditions.idle_workloads(streaks, min_hours=4)
    assert idle.select("namespace", "workload", "gpus", "longest_hours").to_dicts() == [
        {"namespace": "ns", "workload": "serve", "gpus": 1, "longest_hours": 5.0}
    ]
    assert idle["idle_since"][0] == T0 + dt.timedelta(minutes=70)


def test_node_silences_closed_and_ongoing() -> None:
    rows = (
        [("g1", m, "active", "w") for m in range(0, 60)]
        + [("g1", m, "no_data", None) for m in range(60, 100)]  # 40 min outage the rollup closed
        + [("g1", m, "active", "w") for m in range(100, 120)]
    )
    spans = pl.DataFrame(
        {
            "cluster": ["c1"],
            "gpu_uuid": ["g1"],
            "mig_instance_id": pl.Series([None], dtype=pl.Int32),
            "first": [T0],
            "last": [T0 + dt.timedelta(minutes=119, seconds=30)],
        }
    )
    now = T0 + dt.timedelta(minutes=180)
    silences = conditions.node_silences(minutes_frame(rows), spans, T0, now)
    assert silences.select("node", "start", "minutes", "ongoing").to_dicts() == [
        {"node": "n1", "start": T0 + dt.timedelta(minutes=120), "minutes": 60.0, "ongoing": True},
        {"node": "n1", "start": T0 + dt.timedelta(minutes=60), "minutes": 40.0, "ongoing": False},
    ]


def test_spend_change_against_the_trailing_days() -> None:
    day = dt.date(2026, 11, 19)
    daily = pl.DataFrame(
        {"date": [day - dt.timedelta(days=i) for i in (3, 2, 1, 0)], "cost_usd": [100.0, 100.0, 100.0, 180.0]}
    )
    change = conditions.spend_change(daily, day, trailing_days=7)
    assert change is not None
    assert (change.cost_usd, change.trailing_mean_usd, change.trailing_days, change.change_pct) == (
        180.0,
        100.0,
        3,
        80.0,
    )
    assert conditions.spend_change(daily, day + dt.timedelta(days=1), 7) is None


# ------------------------------------------------------------------------------------------------------ rules


def _idle(subjects: list[str]) -> dict[str, list[Finding]]:
    return {"idle_gpu": [Finding("idle_gpu", s, f"{s} idle") for s in subjects]}


def test_a_subject_is_notified_once_while_it_keeps_firing() -> None:
    state, now = AlertState(), T0
    assert [f.subject for f in decide(_idle(["a/x"]), state, now, 6 * H)] == ["a/x"]
    for i in range(1, 10):
        assert decide(_idle(["a/x"]), state, now + i * 15 * dt.timedelta(minutes=1), 6 * H) == []
    assert [f.subject for f in decide(_idle(["a/x", "b/y"]), state, now + 3 * H, 6 * H)] == ["b/y"]


def test_a_flapping_condition_never_storms() -> None:
    state, sent = AlertState(), 0
    for i in range(48):  # every 15 minutes for 12 h, alternating firing and clear
        now = T0 + i * dt.timedelta(minutes=15)
        sent += len(decide(_idle(["a/x"] if i % 2 == 0 else []), state, now, 6 * H))
    assert sent == 2  # at 0 h and once the 6 h cooldown had passed


def test_resolved_and_firing_again_after_the_cooldown_notifies_again() -> None:
    state = AlertState()
    assert decide(_idle(["a/x"]), state, T0, 1 * H)
    assert decide(_idle([]), state, T0 + 2 * H, 1 * H) == []
    assert state.tracks["idle_gpu"] == {}  # resolved and out of its cooldown: forgotten
    assert decide(_idle(["a/x"]), state, T0 + 3 * H, 1 * H)


def test_rules_not_evaluated_keep_their_state() -> None:
    state = AlertState()
    decide(_idle(["a/x"]), state, T0, 6 * H)
    assert decide({}, state, T0 + H, 6 * H) == []
    assert state.tracks["idle_gpu"]["a/x"].firing


def test_thresholds_pick_the_findings() -> None:
    namespaces = pl.DataFrame(
        {"namespace": ["a", "b", "c"], "gpu_hours": [10.0, 10.0, 1.0], "mean_pct": [3.0, 30.0, 1.0],
         "cost_usd": [40.0, 40.0, 4.0]}
    )  # fmt: skip
    fallbacks = pl.DataFrame({"price_source": ["fallback: OpenCost default 0.95 USD/GPU-hour"], "gpu_hours": [5.0],
                              "cost_usd": [4.75]})  # fmt: skip
    spend = conditions.SpendChange(dt.date(2026, 11, 19), 180.0, 100.0, 3, 80.0)
    c = Conditions(namespaces=namespaces, spend=spend, spend_evaluated=True, fallbacks=fallbacks)
    found = findings(c, AlertRules(namespace_util_below_pct=10, namespace_min_gpu_hours=4, spend_increase_pct=50))
    assert [f.subject for f in found["namespace_utilization"]] == ["a"]
    assert found["namespace_utilization"][0].text == (
        "a: 3.0% mean utilization over the last 24 h, 10.0 GPU-hours held ($40.00)"
    )
    assert found["daily_spend"][0].text == ("2026-11-19: $180.00, up 80.0% on the mean of the 3 days before ($100.00)")
    assert found["price_fallback"][0].subject == "fallback: OpenCost default 0.95 USD/GPU-hour"
    assert "idle_gpu" not in found and "node_silent" not in found  # not evaluated
    quiet = findings(c, AlertRules(spend_increase_pct=90, spend_min_trailing_days=3, price_fallback=False))
    assert quiet["daily_spend"] == [] and "price_fallback" not in quiet
    too_short = findings(c, AlertRules(spend_increase_pct=50, spend_min_trailing_days=4))
    assert too_short["daily_spend"] == []


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def alert_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: Webhook, extra: str = "") -> Settings:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL", hook.url)
    path = tmp_path / "alerts.toml"
    path.write_text(
        "[slack]\n[alerts]\nchannels = ['slack']\nidle_hours = 2\nnode_silent_minutes = 30\n"
        "namespace_util_below_pct = 10\nnamespace_min_gpu_hours = 1\nspend_increase_pct = 50\n"
        "spend_min_trailing_days = 2\ncooldown_hours = 6\nlookback_hours = 24\n" + extra
    )
    return load_settings(path)


def hand_made_fleet(lake: Lake) -> None:
    """Day 1-2: one GPU busy all day. Day 3: three GPUs, one of them held idle by `notebook` for its last 3 hours
    (spend up 200%), and no node facts, so every GPU-hour is priced by a fallback price."""
    start = T0
    with lake.writing():
        for day in range(3):
            base = start + dt.timedelta(days=day)
            append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(1440), start=base, util=60.0))
            append(lake, GPU_ALLOCATIONS, allocation_rows("GPU-a", range(1440), start=base))
        base = start + dt.timedelta(days=2)
        for gpu in ("GPU-b", "GPU-c"):
            append(lake, GPU_SAMPLES, sample_rows(gpu, range(1440), start=base, util=[60.0] * 1260 + [0.0] * 180,
                                                  node="node-2"))  # fmt: skip
            append(
                lake,
                GPU_ALLOCATIONS,
                allocation_rows(gpu, range(1440), start=base, namespace="research", pod="notebook-0",
                                workload="notebook"),
            )  # fmt: skip


def test_evaluate_queues_once_and_a_restart_never_resends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> None:
    lake = Lake(tmp_path / "wh", create=True)
    hand_made_fleet(lake)
    settings = alert_settings(tmp_path, monkeypatch, webhook)
    now = T0 + dt.timedelta(days=3, minutes=5)
    result = alerting.evaluate(lake, settings, now)
    assert {rule: [f.subject for f in items] for rule, items in result.found.items() if items} == {
        "idle_gpu": ["research/notebook"],
        "daily_spend": ["2026-11-04"],
        "price_fallback": ["fallback: OpenCost default 0.95 USD/GPU-hour"],
    }
    assert "research/notebook: 2 GPUs idle for 3.0 h" in result.found["idle_gpu"][0].text
    assert "up 200.0% on the mean of the 2 days before" in result.found["daily_spend"][0].text
    assert len(result.queued) == 3
    delivering.flush(lake, settings, lambda: now)
    assert sorted(p["blocks"][0]["text"]["text"] for p in webhook.accepted) == [
        "gpuledger alert: Costs priced by a fallback price (1)",
        "gpuledger alert: Daily GPU spend up (1)",
        "gpuledger alert: GPUs held idle (1)",
    ]
    # a "restart": a new Settings and Lake read the persisted state; nothing is queued again
    lake2, settings2 = Lake(lake.root), alert_settings(tmp_path, monkeypatch, webhook)
    again = alerting.evaluate(lake2, settings2, now + dt.timedelta(minutes=15))
    assert again.notified == [] and again.queued == []


def test_a_crash_before_the_state_is_saved_does_not_resend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> None:
    lake = Lake(tmp_path / "wh", create=True)
    hand_made_fleet(lake)
    settings = alert_settings(tmp_path, monkeypatch, webhook)
    now = T0 + dt.timedelta(days=3, minutes=5)
    first = alerting.evaluate(lake, settings, now)
    assert first.queued
    (lake.root / "_state" / "alerts.json").unlink()  # as if the process died after queueing, before saving state
    again = alerting.evaluate(lake, settings, now + dt.timedelta(minutes=15))
    assert again.notified == [] and again.queued == []


def test_evaluate_on_the_simulated_fleet_finds_the_collector_outage(
    sim_warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    settings = alert_settings(tmp_path, monkeypatch, webhook)
    result = alerting.evaluate(Lake(root), settings, dt.datetime(2026, 11, 20, 0, 0, tzinfo=UTC))
    outages = [f for f in result.found["node_silent"] if "until" in f.text]
    assert len(outages) == 1
    assert "no samples for 178 min" in outages[0].text


def test_outbox_entries_rebuild_state(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.enqueue([Entry("alert:idle@slack", "slack", "t", {}, covers=[["idle_gpu", "a/x"]])], T0)
    state = AlertState()
    for entry, (rule, subject) in box.covers_since(None):
        state.absorb(rule, subject, entry.created_at)
    assert decide(_idle(["a/x"]), state, T0 + H, 6 * H) == []


def test_a_scheduled_report_that_cannot_be_built_is_retried_until_it_is_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> None:
    from analysis.errors import EmptyWindow

    lake = Lake(tmp_path / "wh", create=True)
    with lake.writing():
        append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(60)))  # data on 2026-11-02 only
    settings = alert_settings(tmp_path, monkeypatch, webhook, "[reports]\nchannels = ['slack']\n")
    fired = T0 + dt.timedelta(days=2, hours=8)  # the daily report for 2026-11-03, which has no data yet
    with pytest.raises(EmptyWindow):
        report_sending.run_scheduled_report(lake, settings, "daily", fired)
    assert report_sending.retry_due_reports(lake, settings, fired + H) == 0  # still nothing to report: stays due
    with lake.writing():
        start = T0 + dt.timedelta(days=1)
        append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(1440), start=start))
    assert report_sending.retry_due_reports(lake, settings, fired + 2 * H) == 1
    assert lake.read_state(due.STATE_NAME) == {}
    delivering.flush(lake, settings, lambda: fired + 2 * H)
    assert [p["blocks"][0]["text"]["text"] for p in webhook.accepted] == ["gpuledger daily report: 2026-11-03"]
