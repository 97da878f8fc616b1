"""Hardened delivery: a secret put in the wrong setting is refused without being repeated, every try has one deadline
over the whole request, a slow server that may have taken a message is not sent it again at once, and torn outbox
files are set aside instead of stopping delivery. Real servers on loopback throughout."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from pydantic import ValidationError

from alerts.channels import SlackWebhook, SmtpChannel
from alerts.config import Delivery, Email, Slack
from alerts.outbox import DeliveryError, Entry, Outbox, RetryPolicy
from alerts.secrets import SecretError, read_secret
from gpuledger import delivering, report_sending
from gpuledger.settings import Settings, SettingsError, load_settings
from tests.alert_servers import Mailbox, Trickle, Webhook, clock, smtp_server
from warehouse.lake import Lake

HOOK = "https://hooks.slack.com/services/T0MISPLACED/B0SECRET/zz9Qx7wSecret"
PASS = "p4ss:w0rd!misplaced"
NOW = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
EMAIL = (
    "[email]\nhost = '127.0.0.1'\nport = 2525\nsecurity = 'none'\nsender = 'a@example.com'\n"
    "recipients = ['b@example.com']\n"
)
ENV_MESSAGE = (
    "must name an environment variable (it looks like a URL or secret; put the value in the environment and its "
    "name here)"
)
FILE_MESSAGE = (
    "must be the path of a file holding the secret (it looks like a URL; put the URL in a file, its path here)"
)


@pytest.fixture
def late_webhook() -> Iterator[Webhook]:
    hook = Webhook(slow_s=1.0).start()
    hook.mode = "late"
    yield hook
    hook.stop()


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Settings:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gpuledger.toml"
    path.write_text(text)
    return load_settings(path)


# ----------------------------------------------------------------------------------------------- misplaced secrets


@pytest.mark.parametrize(
    ("section", "secret", "error"),
    [
        (f"[slack]\nwebhook_url_env = '{HOOK}'\n", HOOK, ["webhook_url_env", ENV_MESSAGE]),
        (f"[slack]\nwebhook_url_file = '{HOOK}'\n", HOOK, ["webhook_url_file", FILE_MESSAGE]),
        (f"{EMAIL}username = 'gpuledger'\npassword_env = '{PASS}'\n", PASS, ["password_env", ENV_MESSAGE]),
        (
            f"{EMAIL}username = 'gpuledger'\npassword_file = 'hunter2relative'\n",
            "hunter2relative",
            [
                "Error: the SMTP password file named by `[email] password_file` cannot be read "
                "(No such file or directory): give the absolute path of the secret file"
            ],
        ),
        (
            f"{EMAIL}username = 'gpuledger'\npassword_env = 'hunter2lower'\n",
            "hunter2lower",
            [
                "Error: no SMTP password: set the environment variable named by `[email] password_env`, or that name "
                "with _FILE (a file path)"
            ],
        ),
    ],
    ids=["url-in-env-setting", "url-in-file-setting", "password-in-env-setting", "relative-file", "lowercase-name"],
)
@pytest.mark.parametrize("command", ["report", "schedule"])
def test_a_secret_in_the_wrong_setting_is_refused_and_never_echoed(
    section: str, secret: str, error: list[str], command: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    root = tmp_path / "wh"
    Lake(root, create=True)
    config = tmp_path / "gpuledger.toml"
    config.write_text(f"warehouse = '{root}'\n{section}")
    args = ["report", "--warehouse", str(root), "--send"] if command == "report" else ["schedule"]
    result = cli("-v", "--config", str(config), *args)
    assert result.exit_code == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: ") and all(part in last for part in error), last
    assert secret not in result.stdout and secret not in result.stderr


def test_a_secret_in_the_environment_settings_is_not_echoed_either(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "wh"
    Lake(root, create=True)
    monkeypatch.setenv("GPULEDGER_SLACK", json.dumps({"webhook_url_env": HOOK}))
    result = cli("report", "--warehouse", str(root), "--send")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "webhook_url_env" in result.stderr and ENV_MESSAGE in result.stderr
    assert HOOK not in result.output
    monkeypatch.setenv("GPULEDGER_SLACK", "{}")
    monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL_FILE", HOOK)  # the URL where the path of its file belongs
    result = cli("report", "--warehouse", str(root), "--send")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: the Slack webhook URL file named by $GPULEDGER_SLACK_WEBHOOK_URL_FILE cannot be read "
        "(No such file or directory): give the absolute path of the secret file\n"
    )
    assert HOOK not in result.output


def test_exception_texts_hold_no_misplaced_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as from_file:
        configure(tmp_path, monkeypatch, f"[slack]\nwebhook_url_env = '{HOOK}'\n")
    with pytest.raises(ValidationError) as direct:
        Slack(webhook_url_env=HOOK)
    with pytest.raises(ValidationError) as wrong_type:
        Email(host="h", sender="a@b", recipients=["c@d"], password_env=PASS, port=PASS)  # type: ignore[arg-type]
    with pytest.raises(SecretError) as read:
        read_secret("Slack webhook URL", HOOK, None, env={})
    assert str(read.value) == f"the environment variable name {ENV_MESSAGE}"
    for failure in (from_file, direct, wrong_type, read):
        assert HOOK not in str(failure.value) and PASS not in str(failure.value)


# ------------------------------------------------------------------------------------- deadlines and duplicates


def slack_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: Webhook, delivery: str = "") -> Settings:
    monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL", hook.url)
    return configure(tmp_path, monkeypatch, f"[slack]\n[reports]\nchannels = ['slack']\n[delivery]\n{delivery}")


def email_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int, delivery: str = "") -> Settings:
    return configure(
        tmp_path,
        monkeypatch,
        EMAIL.replace("2525", str(port)) + f"[reports]\nchannels = ['email']\n[delivery]\n{delivery}",
    )


def queue(lake: Lake, settings: Settings) -> str:
    queued = report_sending.queue_report(lake, settings, kind="daily", start="2026-11-19", end="2026-11-20", now=NOW)
    assert len(queued.queued) == 1
    return f"{queued.key}@{queued.queued[0]}"


def test_the_default_deadline_waits_for_a_slow_server() -> None:
    assert Delivery().timeout_s == 60.0


def test_a_slow_webhook_that_works_gets_one_copy_with_the_default_deadline(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, late_webhook: Webhook
) -> None:
    settings = slack_settings(tmp_path, monkeypatch, late_webhook)
    key = queue(wh, settings)
    assert delivering.flush(wh, settings, clock).sent == [key]
    assert late_webhook.requests == 1 and len(late_webhook.accepted) == 1


def test_a_webhook_answering_after_the_deadline_is_not_sent_the_message_again_at_once(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, late_webhook: Webhook
) -> None:
    late_webhook.slow_s = 3.0  # well past the deadline, which leaves room to send the request on a busy machine
    settings = slack_settings(
        tmp_path, monkeypatch, late_webhook, "attempts = 3\nbackoff_s = 0.01\nmax_backoff_s = 3600\ntimeout_s = 1\n"
    )
    key = queue(wh, settings)
    before = clock()
    result = delivering.flush(wh, settings, clock)
    assert result.ambiguous == [key]
    assert result.failed == {
        key: "the Slack webhook took the message but did not answer within 1 s (it may have arrived)"
    }
    assert late_webhook.requests == 1  # one copy, not one per attempt
    (pending,) = delivering.outbox(wh, settings).pending()
    assert pending.next_attempt_at is not None
    assert dt.datetime.fromisoformat(pending.next_attempt_at) >= before + dt.timedelta(seconds=3600)
    assert delivering.flush(wh, settings, clock).waiting == 1
    assert late_webhook.requests == 1


@pytest.fixture
def slow_mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox(delay_s=1.0)
    controller = smtp_server(box)
    yield box, controller.port
    controller.stop()


def test_a_slow_smtp_server_that_works_gets_one_copy_with_the_default_deadline(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_mailbox: tuple[Mailbox, int]
) -> None:
    box, port = slow_mailbox
    settings = email_settings(tmp_path, monkeypatch, port)
    key = queue(wh, settings)
    assert delivering.flush(wh, settings, clock).sent == [key]
    assert len(box.messages) == 1


def test_an_smtp_server_answering_data_after_the_deadline_gets_one_copy_per_outbox_run(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_mailbox: tuple[Mailbox, int]
) -> None:
    box, port = slow_mailbox
    box.delay_s = 3.0  # well past the deadline, which leaves room for the conversation up to DATA on a busy machine
    settings = email_settings(
        tmp_path, monkeypatch, port, "attempts = 4\nbackoff_s = 0.01\nmax_backoff_s = 3600\ntimeout_s = 1\n"
    )
    key = queue(wh, settings)
    result = delivering.flush(wh, settings, clock)
    assert result.ambiguous == [key]
    assert (
        result.failed[key]
        == f"SMTP server 127.0.0.1:{port} took the message but did not answer within 1 s (it may have arrived)"
    )
    assert len(box.messages) == 1  # not four
    assert delivering.flush(wh, settings, clock).waiting == 1  # the longer wait (max_backoff_s) is not over
    assert len(box.messages) == 1

    box.delay_s = 0.0

    def an_hour_later() -> dt.datetime:
        return clock() + dt.timedelta(hours=1, minutes=1)

    assert delivering.flush(wh, settings, an_hour_later).sent == [key]  # the next outbox run after max_backoff_s
    # the at-least-once window: the later retry is a second copy, with the same Message-ID for the server to drop
    assert len(box.messages) == 2
    assert box.messages[0]["Message-ID"] == box.messages[1]["Message-ID"]


@pytest.mark.parametrize("kind", ["http", "smtp"])
def test_a_server_that_never_finishes_answering_is_cut_off_by_the_deadline(kind: str) -> None:
    server = Trickle(kind)
    entry = Entry("k@x", "slack", "t", {"text": "hi", "blocks": [], "subject": "s", "html": "<p>hi</p>"})
    channel = (
        SlackWebhook(read_secret("url", "HOOK", None, env={"HOOK": server.url}) or pytest.fail(), timeout_s=0.5)
        if kind == "http"
        else SmtpChannel(
            host="127.0.0.1", port=server.port, security="none", sender="a@b.c", recipients=["d@e.f"], timeout_s=0.5
        )
    )
    failures: list[DeliveryError] = []

    def attempt() -> None:
        try:
            channel.send(entry)
        except DeliveryError as exc:
            failures.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(30)  # a guard against hanging the suite, not a measurement
    server.stop()
    assert not thread.is_alive(), "the try did not end"
    (failure,) = failures
    if kind == "http":
        assert (
            str(failure) == "the Slack webhook took the message but did not answer within 0.5 s (it may have arrived)"
        )
        assert failure.ambiguous
    else:
        assert str(failure) == f"SMTP server 127.0.0.1:{server.port} did not answer within 0.5 s"
        assert failure.retry and not failure.ambiguous


# ------------------------------------------------------------------------------------------------ torn outbox files


def test_torn_outbox_files_are_set_aside_and_stop_nothing(
    wh: Lake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Result],
) -> None:
    hook = Webhook().start()
    try:
        monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL", hook.url)
        config = tmp_path / "alerts.toml"
        config.write_text("[slack]\n[reports]\nchannels = ['slack']\n")
        sent_args = ["--config", str(config), "report", "--warehouse", str(wh.root), "--send", "--format", "json"]
        sent_args += ["--start", "2026-11-18", "--end", "2026-11-19"]
        assert cli(*sent_args).exit_code == 0
        assert len(hook.accepted) == 1

        box = Outbox(wh.root)
        (ledger,) = (box.root / "sent").glob("*.json")
        ledger.write_text(ledger.read_text()[:40])  # torn: the report was delivered, its ledger entry is damaged
        (box.root / "pending" / "list.json").write_text("[]")
        (box.root / "pending" / "fields.json").write_text(json.dumps({"key": 1, "what": "else"}))
        (box.root / "dead" / "empty.json").write_text("")
        settings = load_settings(config)
        torn_key = queue(wh, settings)
        torn_pending = box.root / "pending" / f"{Entry(torn_key, 'slack', '', {}).id}.json"
        torn_pending.write_text(torn_pending.read_text()[:-10])

        again = cli(*sent_args)
        assert again.exit_code == 0, again.stderr
        assert "delivered to slack" in again.stderr
        assert len(hook.accepted) == 1  # its ledger was torn, yet it is not sent twice
        assert f"outbox file {ledger} is torn or empty; moved to {box.root / 'bad' / ('sent-' + ledger.name)}" in (
            again.stderr
        )
        assert "pending/list.json is not an outbox entry: a JSON list, not an object" in again.stderr

        # the torn pending message is queued again by the job that made it, and delivered once
        assert queue(wh, settings) == torn_key
        assert delivering.flush(wh, settings, clock).sent == [torn_key]
        assert len(hook.accepted) == 2
        assert box.pending() == [] and box.dead() == []
        assert sorted(p.name for p in (box.root / "bad").iterdir()) == sorted(
            [
                "sent-" + ledger.name,
                "pending-list.json",
                "pending-fields.json",
                "dead-empty.json",
                "pending-" + torn_pending.name,
            ]
        )
    finally:
        hook.stop()


def test_a_flush_survives_a_torn_entry(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    (box.root / "pending" / "torn.json").write_text('{"key": "k@slack", "chan')
    assert box.flush({}, clock, RetryPolicy()).waiting == 0
    assert box.pending() == []
    assert (box.root / "bad" / "pending-torn.json").exists()
