"""What alerting is told by the config file: rule thresholds, report schedules, channels and delivery policy.

These are the nested sections of the one settings object (``gpuledger.settings.Settings``: ``[alerts]``,
``[reports]``, ``[scheduler]``, ``[slack]``, ``[email]``, ``[delivery]``). Secrets are never values here: a channel
names the environment variable that holds its secret, or a file to read it from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
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
    def _names_a_variable(cls, value: str) -> str:
        problem = env_name_problem(value)
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
