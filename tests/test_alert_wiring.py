"""The pieces of the alert, report and delivery wiring that live in ``alerts/`` and ``analysis/``: what an alert
message says of its thresholds, one outbox entry per channel, the spend rule's day, the due-report state, alert
state rebuilt from the outbox since it was saved, and where ``report --send`` says a rejected report is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts import due
from alerts.config import AlertRules
from alerts.outbox import Entry, Outbox
from alerts.report import Rendered
from alerts.rules import AlertState, thresholds
from analysis.conditions import spend_window
from analysis.window import Window
from gpuledger import report_sending
from gpuledger.settings import load_settings
from tests.alert_servers import Webhook, clock
from tests.conftest import T0
from warehouse.lake import Lake

UTC = dt.UTC


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def test_an_alert_message_states_its_rule_thresholds_and_the_cooldown() -> None:
    rules = AlertRules(spend_increase_pct=25, spend_trailing_days=5, cooldown_hours=2.5)
    assert thresholds(rules, "daily_spend") == "spend_increase_pct = 25 against 5 days; cooldown_hours = 2.5"
    assert thresholds(AlertRules(), "namespace_utilization") == (
        "namespace_util_below_pct = 10 over 24 h (namespaces with at least 4 GPU-hours); cooldown_hours = 6"
    )
    assert thresholds(AlertRules(), "no_such_rule") == "; cooldown_hours = 6"


def test_a_message_is_one_entry_per_channel_keyed_by_channel() -> None:
    rendered = Rendered("t", {"text": "slack"}, {"subject": "t", "text": "mail", "html": "<p>mail</p>"})
    covers = [["idle_gpu", "ns/a"]]
    slack, email = rendered.entries("alert:idle_gpu:x", ["slack", "email"], covers)
    assert (slack.key, slack.channel, slack.payload, slack.covers) == (
        "alert:idle_gpu:x@slack",
        "slack",
        {"text": "slack"},
        covers,
    )
    assert (email.key, email.payload["text"], email.title) == ("alert:idle_gpu:x@email", "mail", "t")


def test_the_spend_rule_judges_yesterday_in_utc_against_its_trailing_days() -> None:
    now = dt.datetime(2026, 11, 20, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))  # 2026-11-19 23:30 UTC
    day, window = spend_window(now, 7)
    assert day == dt.date(2026, 11, 18)
    assert window == Window(dt.datetime(2026, 11, 11, tzinfo=UTC), dt.datetime(2026, 11, 19, tzinfo=UTC))


def test_a_due_report_is_kept_in_the_warehouse_until_forgotten(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "wh", create=True)
    window = due.period_window("daily", T0 + dt.timedelta(hours=8), "UTC")
    marker = due.mark_due(lake, "daily", window)
    (report,) = due.due_reports(Lake(lake.root))
    assert (report.marker, report.kind, report.start, report.end) == (
        marker,
        "daily",
        window.start.isoformat(),
        window.end.isoformat(),
    )
    due.forget_due(lake, marker)
    assert due.due_reports(lake) == [] and lake.read_state(due.STATE_NAME) == {}


def test_alert_state_absorbs_only_what_the_outbox_got_after_it_was_saved(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.enqueue([Entry("alert:old@slack", "slack", "t", {}, covers=[["idle_gpu", "a/old"]])], T0)
    box.enqueue(
        [Entry("alert:new@slack", "slack", "t", {}, covers=[["idle_gpu", "a/new"]])], T0 + 2 * dt.timedelta(hours=1)
    )
    state = AlertState(saved_at=(T0 + dt.timedelta(hours=1)).isoformat())
    state.absorb_outbox(box)
    assert list(state.tracks["idle_gpu"]) == ["a/new"]
    assert state.tracks["idle_gpu"]["a/new"].last_notified == (T0 + 2 * dt.timedelta(hours=1)).isoformat()


def test_report_send_says_a_rejected_report_is_kept_in_dead(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL", webhook.url)
    config = tmp_path / "gpuledger.toml"
    config.write_text("[slack]\n[reports]\nchannels = ['slack', 'email']\n[delivery]\nattempts = 1\ntimeout_s = 2\n")
    webhook.mode = "reject"
    outcome = report_sending.send_report(wh, load_settings(config), start=None, end=None, now=clock)
    assert outcome.delivered == [] and list(outcome.queued) == ["slack"]  # email is not configured
    assert outcome.queued["slack"].startswith(f"rejected, kept in {wh.root / '_outbox' / 'dead'}: ")
    assert "invalid_blocks" in outcome.queued["slack"]
