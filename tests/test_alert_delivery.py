"""Delivery against real servers: a real HTTP server as the Slack webhook, real aiosmtpd as the mail server.

Faults (server down, HTTP 500, timeout) leave the message queued; it is delivered exactly once when the server comes
back. No log line, error or outbox file holds a secret.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from alerts.channels import SlackWebhook, SmtpChannel
from alerts.outbox import DeliveryError, Entry, Outbox, RetryPolicy
from alerts.report import check_blocks
from alerts.secrets import Secret, SecretError, read_secret
from gpuledger import delivering, report_sending, reporting
from gpuledger.settings import Settings, load_settings
from tests.alert_servers import SECRET_PATH, Authenticator, Mailbox, Webhook, clock, self_signed, smtp_server
from warehouse.lake import Lake

PASSWORD = "s3cr3t-SMTP-pa55word"
NOW = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(slow_s=1.0).start()
    yield hook
    hook.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = smtp_server(box)
    yield box, controller.port
    controller.stop()


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Settings:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gpuledger.toml"
    path.write_text(text)
    return load_settings(path)


def slack_config(hook: Webhook, monkeypatch: pytest.MonkeyPatch, *, timeout_s: float = 0.3) -> str:
    monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL", hook.url)
    return (
        "[slack]\n"
        "[reports]\nchannels = ['slack']\n"
        f"[delivery]\nattempts = 2\nbackoff_s = 0.01\nmax_backoff_s = 0.02\ntimeout_s = {timeout_s}\n"
    )


def the_report(lake: Lake, settings: Settings) -> dict[str, Any]:
    return reporting.fleet_report(lake, settings, start=None, end=None, now=NOW)


# ---------------------------------------------------------------------------------------------------------- email


def test_email_arrives_with_both_parts_and_the_right_numbers(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    settings = configure(
        tmp_path,
        monkeypatch,
        f"[email]\nhost = '127.0.0.1'\nport = {port}\nsecurity = 'none'\nsender = 'gpuledger@example.com'\n"
        "recipients = ['lead@example.com', 'finops@example.com']\n[reports]\nchannels = ['email']\n",
    )
    queued = report_sending.queue_report(wh, settings, kind="weekly", start=None, end=None, now=NOW)
    assert queued.queued == ["email"]
    result = delivering.flush(wh, settings, clock)
    assert result.sent == [f"{queued.key}@email"]

    assert len(box.messages) == 1
    message = box.messages[0]
    assert box.envelopes[0].rcpt_tos == ["lead@example.com", "finops@example.com"]
    assert message["From"] == "gpuledger@example.com"
    assert message["Subject"].startswith("gpuledger weekly report: ")
    assert message["Message-ID"].endswith("@gpuledger>")
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None and page is not None
    plain, html = text.get_content(), page.get_content()
    report = queued.report
    spend = f"${report['fleet']['cost_usd']:,.2f}"
    waste = f"${report['idle_waste']['cost_usd']:,.2f}"
    top = report["idle_waste"]["by_workload"][0]
    for part in (plain, html):
        assert spend in part and waste in part
        assert top["workload"] in part
        assert "Top recommendations" in part
    assert html.lstrip().startswith("<!doctype html>")

    # the same report again: its key is in the ledger, so nothing is queued or sent twice
    again = report_sending.queue_report(wh, settings, kind="weekly", start=None, end=None, now=NOW)
    assert again.queued == []
    delivering.flush(wh, settings, clock)
    assert len(box.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_auth_and_starttls_and_ssl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    pair = self_signed(tmp_path)
    if pair is None:
        pytest.skip("the openssl command is not installed")
    cert, key = pair
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    monkeypatch.setenv("GPULEDGER_SMTP_PASSWORD", PASSWORD)
    password = read_secret("SMTP password", "GPULEDGER_SMTP_PASSWORD", None)
    entry = Entry("report:test@email", "email", "t", {"subject": "s", "text": "plain body", "html": "<p>html</p>"})
    for security in ("starttls", "ssl"):
        box, auth = Mailbox(), Authenticator("gpuledger", PASSWORD)
        controller = smtp_server(
            box,
            auth=auth,
            tls_context=server_context if security == "starttls" else None,
            ssl_context=server_context if security == "ssl" else None,
        )
        try:
            channel = SmtpChannel(
                host="127.0.0.1",
                port=controller.port,
                security=security,
                sender="a@example.com",
                recipients=["b@example.com"],
                username="gpuledger",
                password=password,
                ca_file=cert,
                timeout_s=5,
            )
            channel.send(entry)
            assert len(box.messages) == 1, security
            assert box.messages[0].get_body(("plain",)).get_content().strip() == "plain body"  # type: ignore[union-attr]
            wrong = SmtpChannel(
                host="127.0.0.1",
                port=controller.port,
                security=security,
                sender="a@example.com",
                recipients=["b@example.com"],
                username="gpuledger",
                password=Secret("not-the-password", "test"),
                ca_file=cert,
                timeout_s=5,
            )
            with pytest.raises(DeliveryError) as failed:
                wrong.send(entry)
            assert "refused the login of gpuledger" in str(failed.value)
            assert not failed.value.retry
        finally:
            controller.stop()
    assert PASSWORD not in caplog.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_server_down_then_back(wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    from tests.alert_servers import free_port

    port = free_port()
    monkeypatch.setenv("GPULEDGER_SMTP_PASSWORD", PASSWORD)
    settings = configure(
        tmp_path,
        monkeypatch,
        f"[email]\nhost = '127.0.0.1'\nport = {port}\nsecurity = 'none'\nusername = 'gpuledger'\n"
        "sender = 'gpuledger@example.com'\nrecipients = ['lead@example.com']\n"
        "[reports]\nchannels = ['email']\n[delivery]\nattempts = 2\nbackoff_s = 0.01\nmax_backoff_s = 0.01\n",
    )
    queued = report_sending.queue_report(wh, settings, kind="daily", start="2026-11-19", end="2026-11-20", now=NOW)
    result = delivering.flush(wh, settings, clock)
    assert list(result.failed) == [f"{queued.key}@email"]
    assert "unreachable" in result.failed[f"{queued.key}@email"]

    box = Mailbox()
    controller = smtp_server(box, auth=Authenticator("gpuledger", PASSWORD), port=port)
    try:
        flush_until_sent(wh, settings)
        delivering.flush(wh, settings, clock)
        assert len(box.messages) == 1
    finally:
        controller.stop()
    assert PASSWORD not in caplog.text
    assert_no_secret_in(wh.root, PASSWORD)


def flush_until_sent(lake: Lake, settings: Settings, deadline_s: float = 10.0) -> None:
    """Flush until the outbox is empty (queued messages back off for a moment between flushes)."""
    import time

    end = time.monotonic() + deadline_s
    while delivering.outbox(lake, settings).pending():
        assert time.monotonic() < end, "the outbox was not delivered in time"
        delivering.flush(lake, settings, clock)
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------- Slack


def test_slack_payload_is_valid_block_kit_within_limits(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> None:
    settings = configure(tmp_path, monkeypatch, slack_config(webhook, monkeypatch))
    queued = report_sending.queue_report(wh, settings, kind="weekly", start=None, end=None, now=NOW)
    delivering.flush(wh, settings, clock)
    assert len(webhook.accepted) == 1
    payload = webhook.accepted[0]
    assert check_blocks(payload) == []
    assert isinstance(payload["text"], str) and payload["text"]
    assert 0 < len(payload["blocks"]) <= 50
    allowed = {"header", "section", "divider", "context"}
    for block in payload["blocks"]:
        assert block["type"] in allowed
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] == "mrkdwn" and 0 < len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
    body = json.dumps(payload)
    report = queued.report
    assert f"${report['fleet']['cost_usd']:,.2f}" in body
    assert f"${report['idle_waste']['cost_usd']:,.2f}" in body
    assert report["idle_waste"]["by_workload"][0]["workload"] in body


def test_long_lists_stay_within_slack_limits() -> None:
    from alerts.report import alert_message
    from alerts.rules import Finding

    items = [Finding("idle_gpu", f"ns/w{i}", f"ns/workload-{i}: " + "x" * 300) for i in range(600)]
    rendered = alert_message("idle_gpu", items, now=NOW, thresholds="idle_hours = 4")
    assert check_blocks(rendered.slack) == []
    assert len(rendered.slack["blocks"]) == 50
    assert len(rendered.slack["text"]) <= 3000


@pytest.mark.parametrize("fault", ["down", "error", "slow"])
def test_a_fault_leaves_the_message_queued_and_it_is_delivered_once_when_the_server_is_back(
    fault: str, wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = configure(tmp_path, monkeypatch, slack_config(webhook, monkeypatch, timeout_s=0.3))
    if fault == "down":
        webhook.stop()
    else:
        webhook.mode = fault
    queued = report_sending.queue_report(wh, settings, kind="daily", start="2026-11-19", end="2026-11-20", now=NOW)
    key = f"{queued.key}@slack"

    result = delivering.flush(wh, settings, clock)
    assert list(result.failed) == [key]
    expected = {
        "down": "the Slack webhook is unreachable (ConnectError)",
        "error": "the Slack webhook answered HTTP 500 (rollup_error)",
        "slow": "the Slack webhook took the message but did not answer within 0.3 s (it may have arrived)",
    }[fault]
    assert result.failed[key] == expected
    pending = delivering.outbox(wh, settings).pending()
    assert [e.key for e in pending] == [key]
    tries = 1 if fault == "slow" else 2  # a try that may have arrived is not repeated within the flush
    assert pending[0].attempts == tries and pending[0].last_error == expected
    if fault != "down":
        assert webhook.requests == tries
    assert webhook.accepted == []

    if fault == "down":
        webhook.start()
    webhook.mode = "ok"
    flush_until_sent(wh, settings)
    for _ in range(3):
        delivering.flush(wh, settings, clock)
    assert len(webhook.accepted) == 1
    assert [e.key for e in delivering.outbox(wh, settings).sent()] == [key]
    assert SECRET_PATH not in caplog.text
    assert_no_secret_in(wh.root, SECRET_PATH)


def test_a_rejected_message_is_kept_aside_not_retried(
    wh: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> None:
    settings = configure(tmp_path, monkeypatch, slack_config(webhook, monkeypatch))
    webhook.mode = "reject"
    queued = report_sending.queue_report(wh, settings, kind="daily", start="2026-11-19", end="2026-11-20", now=NOW)
    result = delivering.flush(wh, settings, clock)
    assert result.rejected == {f"{queued.key}@slack": "the Slack webhook answered HTTP 400 (invalid_blocks)"}
    assert webhook.requests == 1
    box = delivering.outbox(wh, settings)
    assert box.pending() == [] and [e.key for e in box.dead()] == [f"{queued.key}@slack"]
    delivering.flush(wh, settings, clock)
    assert webhook.requests == 1


def test_two_processes_flushing_at_once_send_once(tmp_path: Path, webhook: Webhook) -> None:
    """The outbox lock: a second flusher that finds it held leaves the message to the first."""
    box = Outbox(tmp_path)
    box.enqueue([Entry("k@slack", "slack", "t", {"text": "hi", "blocks": []})], NOW)
    channel = SlackWebhook(Secret(webhook.url, "test"), timeout_s=2)
    with box._locked(wait=True):
        assert Outbox(tmp_path).flush({"slack": channel}, clock, FAST).busy
    assert Outbox(tmp_path).flush({"slack": channel}, clock, FAST).sent == ["k@slack"]
    assert len(webhook.accepted) == 1


def test_a_crash_after_the_ledger_write_does_not_resend(tmp_path: Path, webhook: Webhook) -> None:
    """A pending file whose ledger entry exists (killed between the two renames) is dropped, not sent again."""
    box = Outbox(tmp_path)
    entry = Entry("k@slack", "slack", "t", {"text": "hi", "blocks": []})
    box.enqueue([entry], NOW)
    shutil.copy(box.root / "pending" / f"{entry.id}.json", box.root / "sent" / f"{entry.id}.json")
    result = box.flush({"slack": SlackWebhook(Secret(webhook.url, "test"))}, clock, FAST)
    assert result.sent == [] and webhook.requests == 0
    assert box.pending() == []


# ------------------------------------------------------------------------------------------------ report --send


def test_report_send_queues_on_failure_and_delivers_once_on_the_next_run(
    wh: Lake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    webhook: Webhook,
    cli: Callable[..., Result],
    caplog: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = tmp_path / "alerts.toml"
    config.write_text(slack_config(webhook, monkeypatch))
    monkeypatch.setenv("GPULEDGER_SLACK_WEBHOOK_URL", webhook.url)
    args = ["--config", str(config), "report", "--warehouse", str(wh.root), "--send", "--format", "json"]
    webhook.mode = "error"
    failed = cli(*args)
    assert failed.exit_code == 2
    assert json.loads(failed.stdout)["fleet"]["gpus"] == 16
    last = failed.stderr.splitlines()[-1]
    assert last.startswith("Error: report not delivered to slack (slack: the Slack webhook answered HTTP 500")
    assert last.endswith(
        "/_outbox/pending and is retried by `gpuledger schedule` or the next `gpuledger report --send`"
    )
    webhook.mode = "ok"
    import time

    time.sleep(0.1)  # past the queued message's backoff
    sent = cli(*args)
    assert sent.exit_code == 0, sent.stderr
    assert "delivered to slack" in sent.stderr
    again = cli(*args)
    assert again.exit_code == 0
    assert len(webhook.accepted) == 1
    for output in (failed.output, sent.output, again.output, caplog.text):
        assert SECRET_PATH not in output


def test_report_send_without_a_channel_or_secret_is_one_line(
    wh: Lake, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("report", "--warehouse", str(wh.root), "--send")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: no delivery channel is configured: add a [slack] or [email] section to the config file "
        "(see `Alerts and scheduled reports` in the README)\n"
    )
    config = tmp_path / "slack.toml"
    config.write_text("[slack]\n")
    result = cli("--config", str(config), "report", "--warehouse", str(wh.root), "--send")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: no Slack webhook URL: set the environment variable GPULEDGER_SLACK_WEBHOOK_URL or "
        "GPULEDGER_SLACK_WEBHOOK_URL_FILE (a file path)\n"
    )


# ---------------------------------------------------------------------------------------------------------- secrets


def test_secrets_come_from_the_environment_or_a_file_and_never_show(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "hook"
    path.write_text("https://hooks.example.com/services/FROMFILE123\n")
    secret = read_secret("Slack webhook URL", "X_URL", path, env={})
    assert secret is not None and secret.reveal() == "https://hooks.example.com/services/FROMFILE123"
    assert "FROMFILE123" not in repr(secret) and "FROMFILE123" not in str(secret)
    by_env = read_secret("x", "X_URL", None, env={"X_URL_FILE": str(path)})
    assert by_env is not None and by_env.origin == f"file {path}"
    with pytest.raises(SecretError, match=r"^the x file .*missing cannot be read \(No such file or directory\)"):
        read_secret("x", "X_URL", tmp_path / "missing", env={})
    logging.getLogger("some.library").info("POST %s -> 200", secret.reveal())
    try:
        raise RuntimeError(f"failed for {secret.reveal()}")
    except RuntimeError:
        logging.getLogger("other").exception("boom")
    assert "FROMFILE123" not in caplog.text
    assert "***" in caplog.text


def assert_no_secret_in(root: Path, secret: str) -> None:
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".toml", ".txt", ""):
            assert secret not in path.read_text(errors="replace"), path
