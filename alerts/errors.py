"""Errors alerting detects, each with its one-line message built where it is raised; the CLI prints them."""

from __future__ import annotations


class AlertsError(Exception):
    """Base of every expected alerting failure (a missing secret, a bad cron expression, no channel)."""


class NoChannel(AlertsError):
    def __init__(self) -> None:
        super().__init__(
            "no delivery channel is configured: add a [slack] or [email] section to the config file "
            "(see `Alerts and scheduled reports` in the README)"
        )
