"""Delivery wiring: the configured Slack and email channels (secrets read when they are built) and the warehouse's
outbox they deliver from, retried as ``[delivery]`` says. Sending itself is ``alerts.channels`` and
``alerts.outbox``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from alerts.channels import SlackWebhook, SmtpChannel
from alerts.outbox import Channel, FlushResult, Outbox, RetryPolicy
from alerts.secrets import read_secret
from gpuledger.settings import Settings
from warehouse.lake import Lake


def channels(settings: Settings) -> dict[str, Channel]:
    """The configured channels, with their secrets read now (from the environment or a file)."""
    out: dict[str, Channel] = {}
    timeout = settings.delivery.timeout_s
    if settings.slack is not None:
        url = read_secret(
            "Slack webhook URL",
            settings.slack.webhook_url_env,
            settings.slack.webhook_url_file,
            required=True,
            setting="[slack] webhook_url_env",
        )
        assert url is not None
        out["slack"] = SlackWebhook(url, timeout_s=timeout)
    if settings.email is not None:
        e = settings.email
        password = read_secret(
            "SMTP password",
            e.password_env,
            e.password_file,
            required=e.username is not None,
            setting="[email] password_env",
        )
        out["email"] = SmtpChannel(
            host=e.host,
            port=e.port,
            security=e.security,
            sender=e.sender,
            recipients=e.recipients,
            username=e.username,
            password=password,
            ca_file=e.ca_file,
            timeout_s=timeout,
        )
    return out


def configured(settings: Settings, wanted: list[str]) -> list[str]:
    """The channels of ``wanted`` that have a section in the settings, in ``wanted``'s order."""
    present = [name for name, section in (("slack", settings.slack), ("email", settings.email)) if section]
    return [name for name in wanted if name in present]


def outbox(lake: Lake, settings: Settings) -> Outbox:
    return Outbox(lake.root, keep_sent_days=settings.delivery.keep_sent_days)


def retry_policy(settings: Settings) -> RetryPolicy:
    d = settings.delivery
    return RetryPolicy(attempts=d.attempts, backoff_s=d.backoff_s, max_backoff_s=d.max_backoff_s)


def flush(
    lake: Lake, settings: Settings, now: Callable[[], dt.datetime], *, targets: dict[str, Channel] | None = None
) -> FlushResult:
    """Deliver every queued message that is due."""
    return outbox(lake, settings).flush(
        targets if targets is not None else channels(settings), now, retry_policy(settings)
    )
