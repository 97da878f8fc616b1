"""Team routing against real servers: each team's own Slack webhook and email recipients (real HTTP servers and a real
aiosmtpd on loopback) beside the platform channel. Each team gets its own report with only its numbers, the alerts
about its namespaces, each exactly once per recipient across a crash and a recipient that fails then recovers; a
secret put in a wrong team setting is never echoed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from alerts.routing import Destination, platform_findings, team_findings
from alerts.rules import Finding
from analysis.recommend.model import Recommendation
from analysis.team_scope import NO_NAMESPACE, is_teams, team_namespaces
from gpuledger import alerting, delivering, report_sending
from gpuledger.settings import Settings, SettingsError, load_settings
from tests.alert_servers import SECRET_PATH, Mailbox, Webhook, clock, smtp_server
from tests.conftest import REPO
from warehouse.lake import Lake

NOW = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
DAY = {"start": "2026-11-19", "end": "2026-11-20"}
TEAMS = "[teams]\nresearch = ['ml-training']\nserving = ['search', 'rec*']\n"
"""The simulated fleet's namespaces: ml-training, search, recsys and vision (no team: its own in cost allocation)."""
LEAKED = "https://hooks.slack.com/services/T0LEAK/B0LEAK/leakedSECRETvalue42"


@dataclass
class Recipients:
    platform: Webhook
    research: Webhook
    serving: Webhook
    mailbox: Mailbox
    smtp_port: int

    def hooks(self) -> dict[str, Webhook]:
        return {"slack": self.platform, "team:research/slack": self.research, "team:serving/slack": self.serving}

    def mail_to(self, address: str) -> list[EmailMessage]:
        return [m for m, e in zip(self.mailbox.messages, self.mailbox.envelopes, strict=True) if address in e.rcpt_tos]


@pytest.fixture
def recipients(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recipients]:
    hooks = [Webhook(slow_s=30.0).start() for _ in range(3)]
    mailbox = Mailbox()
    controller = smtp_server(mailbox)
    for name in [n for n in os.environ if n.startswith("GPULEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL", hooks[0].url)
    monkeypatch.setenv("RESEARCH_SLACK_WEBHOOK_URL", hooks[1].url)
    monkeypatch.setenv("SERVING_SLACK_WEBHOOK_URL", hooks[2].url)
    yield Recipients(*hooks, mailbox, controller.port)
    controller.stop()
    for hook in hooks:
        hook.stop()


def config(r: Recipients, extra: str = "", *, timeout_s: float = 5.0) -> str:
    return (
        TEAMS + "[slack]\n"
        f"[email]\nhost = '127.0.0.1'\nport = {r.smtp_port}\nsecurity = 'none'\nsender = 'gpuledger@example.com'\n"
        "recipients = ['platform@example.com']\n"
        "[team_channels.research]\nwebhook_url_env = 'RESEARCH_SLACK_WEBHOOK_URL'\n"
        "recipients = ['research-leads@example.com']\n"
        "[team_channels.serving]\nwebhook_url_env = 'SERVING_SLACK_WEBHOOK_URL'\n"
        "recipients = ['serving-oncall@example.com']\n"
        f"[delivery]\nattempts = 1\nbackoff_s = 0.01\nmax_backoff_s = 0.02\ntimeout_s = {timeout_s}\n" + extra
    )


def settings_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Settings:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gpuledger.toml"
    path.write_text(text)
    return load_settings(path)


def usd(value: float) -> str:
    return f"${value:,.2f}"


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def flush_until_sent(lake: Lake, settings: Settings, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while delivering.outbox(lake, settings).pending():
        assert time.monotonic() < end, "the outbox was not delivered in time"
        delivering.flush(lake, settings, clock)
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------------ reports


def test_each_team_gets_its_own_report_and_the_platform_the_fleet_report(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_of(tmp_path, monkeypatch, config(recipients))
    queued = report_sending.queue_report(wh, settings, kind="daily", **DAY, now=NOW)
    assert sorted(queued.queued) == sorted(
        ["slack", "email", "team:research/slack", "team:research/email", "team:serving/slack", "team:serving/email"]
    )
    result = delivering.flush(wh, settings, clock)
    assert len(result.sent) == 6 and result.failed == {}

    fleet, research, serving = queued.report, queued.team_reports["research"], queued.team_reports["serving"]
    spend = {r["namespace"]: r["cost_usd"] for r in fleet["utilization"]["by_namespace"]}
    # a team's numbers are its namespaces' numbers in the fleet report: spend, and the idle waste of its workloads
    assert research["fleet"]["cost_usd"] == pytest.approx(spend["ml-training"], abs=0.01)
    assert serving["fleet"]["cost_usd"] == pytest.approx(spend["search"] + spend["recsys"], abs=0.02)
    assert {r["namespace"] for r in research["idle_waste"]["by_workload"]} == {"ml-training"}
    assert {r["namespace"] for r in serving["idle_waste"]["by_workload"]} <= {"search", "recsys"}
    assert 0 < research["fleet"]["gpus"] < fleet["fleet"]["gpus"]

    slack = {name: hook.accepted for name, hook in recipients.hooks().items()}
    assert [len(messages) for messages in slack.values()] == [1, 1, 1]
    text = {name: json.dumps(messages[0]) for name, messages in slack.items()}
    mail = {
        "slack": recipients.mail_to("platform@example.com"),
        "team:research/slack": recipients.mail_to("research-leads@example.com"),
        "team:serving/slack": recipients.mail_to("serving-oncall@example.com"),
    }
    assert [len(messages) for messages in mail.values()] == [1, 1, 1]
    assert recipients.mailbox.envelopes[0].rcpt_tos != recipients.mailbox.envelopes[1].rcpt_tos
    for name, report in (("slack", fleet), ("team:research/slack", research), ("team:serving/slack", serving)):
        own = usd(report["fleet"]["cost_usd"])
        assert own in text[name] and own in body(mail[name][0]), name
    assert usd(research["fleet"]["cost_usd"]) not in text["team:serving/slack"] + body(mail["team:serving/slack"][0])
    assert usd(serving["fleet"]["cost_usd"]) not in text["team:research/slack"] + body(mail["team:research/slack"][0])
    for team in ("team:research/slack", "team:serving/slack"):
        assert usd(fleet["fleet"]["cost_usd"]) not in text[team]
        assert usd(spend["vision"]) not in text[team]  # a team without channels stays in the fleet report only
    assert usd(spend["vision"]) in text["slack"]
    assert "for team research" in text["team:research/slack"] and "for team" not in text["slack"]

    again = report_sending.queue_report(wh, settings, kind="daily", **DAY, now=NOW)
    assert again.queued == []
    delivering.flush(wh, settings, clock)
    assert [len(hook.accepted) for hook in recipients.hooks().values()] == [1, 1, 1]
    assert len(recipients.mailbox.messages) == 3
    assert SECRET_PATH not in caplog.text


def test_report_send_names_every_recipient(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients
) -> None:
    settings = settings_of(tmp_path, monkeypatch, config(recipients, "[reports]\nchannels = ['slack']\n"))
    recipients.serving.mode = "error"
    outcome = report_sending.send_report(wh, settings, **DAY, now=clock)
    assert outcome.delivered == ["slack", "team:research/slack"]
    assert outcome.queued == {"team:serving/slack": "the Slack webhook answered HTTP 500 (rollup_error)"}
    assert recipients.mailbox.messages == []  # reports go to Slack only, for the teams too


def test_a_team_that_held_nothing_gets_an_all_zero_report_not_the_fleets(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients
) -> None:
    text = config(recipients).replace("serving = ['search', 'rec*']", "serving = ['no-such-namespace']")
    settings = settings_of(tmp_path, monkeypatch, text)
    queued = report_sending.queue_report(wh, settings, kind="daily", **DAY, now=NOW)
    serving = queued.team_reports["serving"]
    assert (serving["fleet"]["cost_usd"], serving["fleet"]["gpus"], serving["idle_waste"]["by_workload"]) == (0, 0, [])


# ------------------------------------------------------------------------------------------------------- alerts

LOW_UTILIZATION = "[alerts]\nnamespace_util_below_pct = 90\nidle_hours = 0\nprice_fallback = false\n"
"""Every namespace of the simulated fleet is below 90 %; the node_silent rule finds one silent node (fleet-wide)."""


def alert_lines(hook: Webhook) -> list[str]:
    return [json.dumps(m) for m in hook.accepted]


def test_alerts_about_a_teams_namespaces_go_to_the_team_and_the_platform(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients
) -> None:
    settings = settings_of(tmp_path, monkeypatch, config(recipients, LOW_UTILIZATION + "channels = ['slack']\n"))
    result = alerting.evaluate(wh, settings, dt.datetime(2026, 11, 20, 0, 0, tzinfo=dt.UTC))
    assert {f.subject for f in result.found["namespace_utilization"]} == {"ml-training", "search", "recsys", "vision"}
    assert result.found["node_silent"]
    delivering.flush(wh, settings, clock)

    platform = alert_lines(recipients.platform)
    research, serving = alert_lines(recipients.research), alert_lines(recipients.serving)
    assert len(platform) == 2  # one message per rule: namespace_utilization and node_silent, every subject
    assert all(ns in platform[0] + platform[1] for ns in ("ml-training:", "search:", "recsys:", "vision:"))
    assert len(research) == 1 and "ml-training:" in research[0]
    assert not any(ns in research[0] for ns in ("search:", "recsys:", "vision:", "no samples"))
    assert len(serving) == 1 and "search:" in serving[0] and "recsys:" in serving[0]
    assert not any(ns in serving[0] for ns in ("ml-training:", "vision:", "no samples"))
    assert recipients.mailbox.messages == []

    later = alerting.evaluate(wh, settings, dt.datetime(2026, 11, 20, 0, 15, tzinfo=dt.UTC))
    assert later.queued == []  # still firing: nobody is told again
    delivering.flush(wh, settings, clock)
    assert [len(h.accepted) for h in recipients.hooks().values()] == [2, 1, 1]


def test_the_platform_can_leave_team_alerts_to_the_teams(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients
) -> None:
    extra = LOW_UTILIZATION + "channels = ['slack']\nplatform_gets_team_alerts = false\n"
    settings = settings_of(tmp_path, monkeypatch, config(recipients, extra))
    alerting.evaluate(wh, settings, dt.datetime(2026, 11, 20, 0, 0, tzinfo=dt.UTC))
    delivering.flush(wh, settings, clock)
    platform = " ".join(alert_lines(recipients.platform))
    assert "vision:" in platform and "no samples" in platform  # no team's channels: the platform's
    assert not any(ns in platform for ns in ("ml-training:", "search:", "recsys:"))
    assert len(recipients.research.accepted) == len(recipients.serving.accepted) == 1


def test_routing_follows_the_teams_setting() -> None:
    teams = {"research": ["ml-*"], "serving": ["search", "ml-serving"]}
    assert team_namespaces(["ml-training", "ml-serving", "search", "vision", None], teams) == {
        "research": ["ml-serving", "ml-training"],  # the first team whose pattern matches, as in cost allocation
        "serving": ["search"],
    }
    items = [
        Finding("namespace_utilization", "ml-training", "a", "ml-training"),
        Finding("namespace_utilization", "search", "b", "search"),
        Finding("namespace_utilization", "vision", "c", "vision"),
        Finding("node_silent", "c1/n1", "d"),
    ]
    by_team = team_findings(items, teams, ["research"])  # serving has no channels
    assert by_team == {"research": [items[0]]}
    assert platform_findings(items, by_team, platform_gets_team_alerts=True) == items
    assert platform_findings(items, by_team, platform_gets_team_alerts=False) == items[1:]
    assert Destination("slack").name == "slack" and Destination("email", "research").name == "team:research/email"


def test_a_teams_plan_items_are_those_about_its_namespaces_only() -> None:
    def rec(namespace: str | None) -> Recommendation:
        target = {"cluster": "c1", "node_group": None, "namespace": namespace, "workload": None}
        return Recommendation("idle_reclaim", target, "scale to zero", {}, 10.0, "catalog", {}, "low", 1.0)

    assert is_teams(rec("ml-training"), ["ml-training"])
    assert not is_teams(rec("search"), ["ml-training"])
    assert not is_teams(rec(None), ["ml-training"])  # a node-level change stays in the fleet report
    assert not is_teams(rec(NO_NAMESPACE), [])


# -------------------------------------------------------------------------------------------- exactly once


def test_a_recipient_that_fails_then_recovers_gets_one_copy_and_blocks_nobody(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients
) -> None:
    settings = settings_of(tmp_path, monkeypatch, config(recipients, "[reports]\nchannels = ['slack']\n"))
    recipients.research.mode = "error"
    queued = report_sending.queue_report(wh, settings, kind="daily", **DAY, now=NOW)
    first = delivering.flush(wh, settings, clock)
    assert sorted(first.sent) == [f"{queued.key}@slack", f"{queued.key}@team:serving/slack"]
    assert list(first.failed) == [f"{queued.key}@team:research/slack"]
    for _ in range(3):  # more runs while it is down: the others are not sent again
        time.sleep(0.03)
        delivering.flush(wh, settings, clock)
    assert recipients.research.requests >= 2
    recipients.research.mode = "ok"
    flush_until_sent(wh, settings)
    delivering.flush(wh, settings, clock)
    assert [len(h.accepted) for h in recipients.hooks().values()] == [1, 1, 1]
    assert "for team research" in json.dumps(recipients.research.accepted[0])


FLUSH = """
import datetime as dt, sys
from pathlib import Path
from gpuledger import delivering
from gpuledger.settings import load_settings
from warehouse.lake import Lake
delivering.flush(Lake(Path(sys.argv[1])), load_settings(Path(sys.argv[2])), lambda: dt.datetime.now(dt.UTC))
"""


def test_a_crash_between_two_recipients_sends_each_exactly_once(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients
) -> None:
    """A real process delivers the platform's copy, then is killed while team research's server holds its request;
    the next run delivers research's and serving's copies and not the platform's again."""
    text = config(recipients, "[reports]\nchannels = ['slack']\n", timeout_s=60)
    settings = settings_of(tmp_path, monkeypatch, text)
    queued = report_sending.queue_report(wh, settings, kind="daily", **DAY, now=NOW)
    recipients.research.mode = "slow"  # takes the request and answers only after 30 s
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", FLUSH, str(wh.root), str(tmp_path / "gpuledger.toml")], env=env, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while recipients.research.requests == 0:
            assert process.poll() is None and time.monotonic() < deadline, "the flush did not reach research"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(recipients.platform.accepted) == 1 and recipients.serving.requests == 0
    box = delivering.outbox(wh, settings)
    found = box.status(f"{queued.key}@slack")
    assert found is not None and found[0] == "sent"

    recipients.research.mode = "ok"
    again = report_sending.queue_report(
        wh, settings, kind="daily", **DAY, now=NOW
    )  # the job runs again after the restart
    assert again.queued == []
    result = delivering.flush(wh, settings, clock)
    assert sorted(result.sent) == [f"{queued.key}@team:research/slack", f"{queued.key}@team:serving/slack"]
    delivering.flush(wh, settings, clock)
    assert [len(h.accepted) for h in recipients.hooks().values()] == [1, 1, 1]


# ------------------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[team_channels.research]\nwebhook_url_env = '" + LEAKED + "'\n",
            "key `[team_channels.research] webhook_url_env` must name an environment variable (it looks like a URL "
            "or secret; put the value in the environment and its name here)",
        ),
        (
            "[team_channels.research]\nwebhook_url_file = '" + LEAKED + "'\n",
            "key `[team_channels.research] webhook_url_file` must be the path of a file holding the secret (it looks "
            "like a URL; put the URL in a file, its path here)",
        ),
        (
            "[email]\nhost = 'h'\nsender = 's@example.com'\nrecipients = ['p@example.com']\n"
            "[team_channels.research]\nrecipients = ['" + LEAKED + "']\n",
            "key `[team_channels.research] recipients` must be email addresses (name@example.com): fix the one that "
            "is not",
        ),
        (
            "[team_channels.research]\nwebhook_url = '" + LEAKED + "'\n",
            "key `[team_channels.research] webhook_url` is not a setting: remove it",
        ),
        (
            "[team_channels]\nresearch = '" + LEAKED + "'\n",
            "key `[team_channels] research` should be a table (a [section])",
        ),
        (
            "[team_channels.reserach]\nwebhook_url_env = 'RESEARCH_SLACK_WEBHOOK_URL'\n",
            "key `team_channels` must name teams of the `teams` setting: `reserach` is not one (add it to [teams] "
            "with its namespaces, or fix the name)",
        ),
        (
            "[team_channels.research]\nrecipients = ['research-leads@example.com']\n",
            "key `team_channels` must go with an [email] section when a team has recipients (`research` has; team "
            "mail goes through that SMTP server): add one",
        ),
        (
            "[team_channels.research]\n",
            "key `[team_channels] research` must have webhook_url_env, webhook_url_file or recipients: add one or "
            "remove the team",
        ),
    ],
)
def test_a_bad_team_setting_is_one_line_naming_it_and_the_fix_never_the_value(
    text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gpuledger.toml"
    path.write_text(TEAMS + text)
    with pytest.raises(SettingsError) as bad:
        load_settings(path)
    assert str(bad.value) == f"{path} {expected}"
    assert "\n" not in str(bad.value) and "leaked" not in str(bad.value).lower()


def test_a_secret_in_the_team_variable_is_not_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPULEDGER_TEAMS", json.dumps({"research": ["ml-training"]}))
    monkeypatch.setenv("GPULEDGER_TEAM_CHANNELS", json.dumps({"research": {"webhook_url_env": LEAKED}}))
    with pytest.raises(SettingsError) as bad:
        load_settings(None)
    assert str(bad.value).startswith(
        "the variable GPULEDGER_TEAM_CHANNELS key `research.webhook_url_env` must name an environment variable"
    )
    assert "leaked" not in str(bad.value).lower()


def test_a_missing_team_secret_names_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipients: Recipients
) -> None:
    monkeypatch.delenv("RESEARCH_SLACK_WEBHOOK_URL")
    settings = settings_of(tmp_path, monkeypatch, config(recipients))
    with pytest.raises(Exception) as missing:
        delivering.channels(settings)
    assert str(missing.value) == (
        "no Slack webhook URL of team research: set the environment variable RESEARCH_SLACK_WEBHOOK_URL or "
        "RESEARCH_SLACK_WEBHOOK_URL_FILE (a file path)"
    )
    # a lower-case name may be the secret itself: the error names the setting instead
    lower = config(recipients).replace("'RESEARCH_SLACK_WEBHOOK_URL'", "'hunter2leaked'")
    with pytest.raises(Exception) as named:
        delivering.channels(settings_of(tmp_path, monkeypatch, lower))
    assert str(named.value) == (
        "no Slack webhook URL of team research: set the environment variable named by "
        "`[team_channels.research] webhook_url_env`, or that name with _FILE (a file path)"
    )
    secret_file = tmp_path / "serving-hook"
    secret_file.write_text(recipients.serving.url + "\n")
    by_file = config(recipients).replace(
        "webhook_url_env = 'SERVING_SLACK_WEBHOOK_URL'", f"webhook_url_file = '{secret_file}'"
    )
    monkeypatch.setenv("RESEARCH_SLACK_WEBHOOK_URL", recipients.research.url)
    built = delivering.channels(settings_of(tmp_path, monkeypatch, by_file))
    assert sorted(built) == sorted(
        ["slack", "email", "team:research/slack", "team:research/email", "team:serving/slack", "team:serving/email"]
    )
