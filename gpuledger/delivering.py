"""Delivery wiring: the configured destinations (the platform's ``[slack]`` and ``[email]``, each team's
``[team_channels.<team>]``), their channels (secrets read when they are built) and the warehouse's outbox they deliver
from, retried as ``[delivery]`` says. Sending itself is ``alerts.channels`` and ``alerts.outbox``; who gets what is
``alerts.routing``."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence

from alerts.channels import SlackWebhook, SmtpChannel
from alerts.config import Email
from alerts.outbox import Channel, FlushResult, Outbox, RetryPolicy
from alerts.routing import Destination
from alerts.secrets import Secret, read_secret
from gpuledger.settings import Settings
from warehouse.lake import Lake


def channels(settings: Settings) -> dict[str, Channel]:
    """Every destination's channel by its name (``Destination.name``), with the secrets read now (from the
    environment or a file)."""
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
    password = None
    if settings.email is not None:
        password = _smtp_password(settings.email)
        out["email"] = _smtp(settings.email, settings.email.recipients, password, timeout)
    for team, own in settings.team_channels.items():
        if own.slack:
            env = own.webhook_url_env
            team_url = read_secret(
                f"Slack webhook URL of team {team}",
                env or "_",  # no variable named: only the file is read (an empty environment has none)
                own.webhook_url_file,
                os.environ if env else {},
                required=True,
                setting=f"[team_channels.{team}] webhook_url_env",
            )
            assert team_url is not None
            out[Destination("slack", team).name] = SlackWebhook(team_url, timeout_s=timeout)
        if own.recipients and settings.email is not None:
            out[Destination("email", team).name] = _smtp(settings.email, own.recipients, password, timeout)
    return out


def _smtp_password(e: Email) -> Secret | None:
    return read_secret(
        "SMTP password",
        e.password_env,
        e.password_file,
        required=e.username is not None,
        setting="[email] password_env",
    )


def _smtp(e: Email, recipients: list[str], password: Secret | None, timeout_s: float) -> SmtpChannel:
    return SmtpChannel(
        host=e.host,
        port=e.port,
        security=e.security,
        sender=e.sender,
        recipients=recipients,
        username=e.username,
        password=password,
        ca_file=e.ca_file,
        timeout_s=timeout_s,
    )


def configured(settings: Settings, wanted: Sequence[str]) -> list[str]:
    """The platform channels of ``wanted`` that have a section in the settings, in ``wanted``'s order."""
    present = [name for name, section in (("slack", settings.slack), ("email", settings.email)) if section]
    return [name for name in wanted if name in present]


def platform(settings: Settings, wanted: Sequence[str]) -> list[Destination]:
    """The platform's destinations among the channel kinds ``wanted``."""
    return [Destination(kind) for kind in configured(settings, wanted)]


def teams(settings: Settings, wanted: Sequence[str]) -> dict[str, list[Destination]]:
    """Each team with channels among the kinds ``wanted`` -> its destinations (``[team_channels]`` order)."""
    out: dict[str, list[Destination]] = {}
    for team, own in settings.team_channels.items():
        kinds = [kind for kind in wanted if kind in own.kinds and (kind != "email" or settings.email is not None)]
        if kinds:
            out[team] = [Destination(kind, team) for kind in kinds]
    return out


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
