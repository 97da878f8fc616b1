"""What alerting is told by the config file: rule thresholds, report schedules, channels and delivery policy.

These are the nested sections of the one settings object (``gpuledger.settings.Settings``: ``[alerts]``,
``[reports]``, ``[scheduler]``, ``[slack]``, ``[email]``, ``[team_channels.<team>]``, ``[delivery]``). Secrets are
never values here: a channel names the environment variable that holds its secret, or a file to read it from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from alerts.secrets import env_name_problem, file_setting_problem

ChannelName = Literal["slack", "email"]


def _every_channel() -> list[ChannelName]:
    return ["slack", "email"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertRules(_Section):
    """Thresholds of the alert rules; a threshold of 0 turns its rule off (TOML has no null)."""

    idle_hours: float = Field(default=4.0, ge=0, description="A workload holding a GPU idle this long.")
    namespace_util_below_pct: float = Field(
        default=10.0, ge=0, le=100, description="A namespace whose mean utilization over the window is below this."
    )
    namespace_window_hours: float = Field(default=24.0, gt=0, description="Window of the namespace rule.")
    namespace_min_gpu_hours: float = Field(
        default=4.0, ge=0, description="Namespaces that held fewer GPU-hours in the window are not judged."
    )
    spend_increase_pct: float = Field(
        default=50.0, ge=0, description="Yesterday's spend (UTC day) above the trailing days' mean by this much."
    )
    spend_trailing_days: int = Field(default=7, ge=1, description="Days the spend rule compares against.")
    spend_min_trailing_days: int = Field(
        default=3, ge=1, description="The spend rule needs at least this many trailing days with data."
    )
    node_silent_minutes: float = Field(
        default=30.0, ge=0, description="A node with no samples (no_data) for this long."
    )
    price_fallback: bool = Field(default=True, description="Alert when a cost is priced by a fallback price.")
    silent_gpu_minutes: float = Field(
        default=30.0,
        ge=0,
        description="A node whose GPU count (instance type, GFD label) exceeds the GPUs reporting for this long.",
    )
    lookback_hours: float = Field(
        default=24.0, gt=0, description="Window of the idle, silence and price-fallback rules."
    )
    cooldown_hours: float = Field(
        default=6.0, ge=0, description="After an alert for a subject, the same subject stays quiet this long."
    )
    cron: str = Field(default="*/15 * * * *", description='When `gpuledger schedule` evaluates the rules ("": never).')
    channels: list[ChannelName] = Field(
        default_factory=_every_channel, description="Where alerts go (configured channels only)."
    )
    platform_gets_team_alerts: bool = Field(
        default=True,
        description="Alerts about a team that has its own channels go to the platform channels too "
        "(false: to the team only).",
    )


class Reports(_Section):
    daily: str = Field(default="0 8 * * *", description='Cron of the daily report (the previous day; "": none).')
    weekly: str = Field(default="0 9 * * 1", description="Cron of the weekly report (the previous 7 days).")
    top_n: int = Field(default=5, ge=1, le=20, description="Rows in each list of a sent report.")
    channels: list[ChannelName] = Field(
        default_factory=_every_channel, description="Where reports go (configured channels only)."
    )


class Scheduler(_Section):
    timezone: str = Field(default="UTC", description="Time zone of every cron expression and report day.")
    misfire_grace_s: int = Field(
        default=3600,
        ge=1,
        description="A job that could not run on time still runs if this late (also after a restart).",
    )
    coalesce: bool = Field(default=True, description="Missed runs of one job run once, not once each.")
    outbox_every_s: float = Field(default=60.0, gt=0, description="How often queued messages are retried.")


class _SecretNames(_Section):
    """A channel's section: it names where its secret is, and a value that is the secret itself is refused without
    being repeated (nor is any input repeated in its validation errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @field_validator("webhook_url_env", "password_env", check_fields=False)
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        problem = env_name_problem(value) if value is not None else None
        if problem:
            raise PydanticCustomError("secret_in_setting", problem)
        return value

    @field_validator("webhook_url_file", "password_file", mode="before", check_fields=False)
    @classmethod
    def _names_a_file(cls, value: Any) -> Any:
        problem = file_setting_problem(value) if isinstance(value, str) else None
        if problem:
            raise PydanticCustomError("secret_in_setting", problem)
        return value


class Slack(_SecretNames):
    webhook_url_env: str = Field(
        default="GPULEDGER_SLACK_WEBHOOK_URL", description="Environment variable holding the incoming-webhook URL."
    )
    webhook_url_file: Path | None = Field(default=None, description="Or a file holding it (a mounted secret).")


class Email(_SecretNames):
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_env: str = Field(default="GPULEDGER_SMTP_PASSWORD", description="Environment variable with the password.")
    password_file: Path | None = Field(default=None, description="Or a file holding it (a mounted secret).")
    sender: str
    recipients: list[str] = Field(min_length=1)
    ca_file: Path | None = Field(default=None, description="CA bundle for a server with a private certificate.")


class TeamChannels(_SecretNames):
    """One team's own channels (a team of the ``teams`` setting): its Slack incoming webhook, and its email
    recipients, mailed through the ``[email]`` server. The team gets its own daily and weekly reports and the alerts
    about its namespaces there."""

    webhook_url_env: str | None = Field(
        default=None, description="Environment variable holding the team's incoming-webhook URL."
    )
    webhook_url_file: Path | None = Field(default=None, description="Or a file holding it (a mounted secret).")
    recipients: list[str] = Field(default_factory=list, description="The team's email recipients.")

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        if any("@" not in address or "://" in address or " " in address.strip() for address in value):
            raise PydanticCustomError(
                "secret_in_setting", "must be email addresses (name@example.com): fix the one that is not"
            )
        return [address.strip() for address in value]

    @model_validator(mode="after")
    def _has_a_channel(self) -> TeamChannels:
        if not self.kinds:
            raise PydanticCustomError(
                "no_channel", "must have webhook_url_env, webhook_url_file or recipients: add one or remove the team"
            )
        return self

    @property
    def slack(self) -> bool:
        return self.webhook_url_env is not None or self.webhook_url_file is not None

    @property
    def kinds(self) -> list[ChannelName]:
        """The kinds of channel this team has, in the order of ``_every_channel``."""
        has = {"slack": self.slack, "email": bool(self.recipients)}
        return [kind for kind in _every_channel() if has[kind]]


class Delivery(_Section):
    attempts: int = Field(default=3, ge=1, description="Tries per delivery before the message waits in the outbox.")
    backoff_s: float = Field(default=1.0, ge=0, description="First wait between tries; doubles each time.")
    max_backoff_s: float = Field(default=3600.0, ge=0, description="Longest wait before a queued message is retried.")
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Deadline of one try, from connecting to the server's answer (a slower answer is not retried "
        "at once: the message may have arrived).",
    )
    keep_sent_days: float = Field(default=30.0, gt=0, description="How long the sent ledger remembers a message.")


def team_channels_problem(
    team_channels: dict[str, TeamChannels], teams: dict[str, list[str]], email: Email | None
) -> str | None:
    """Why ``team_channels`` cannot be used with these ``teams`` and ``[email]`` section, or None. A team is named
    (a key, never a secret); a value is not."""
    unknown = [team for team in team_channels if team not in teams]
    if unknown:
        return (
            f"must name teams of the `teams` setting: `{unknown[0]}` is not one "
            "(add it to [teams] with its namespaces, or fix the name)"
        )
    mailed = [team for team, channels in team_channels.items() if channels.recipients]
    if mailed and email is None:
        return (
            f"must go with an [email] section when a team has recipients (`{mailed[0]}` has; team mail goes "
            "through that SMTP server): add one"
        )
    return None
