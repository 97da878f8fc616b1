"""Secrets (webhook URLs, SMTP passwords): read only from the environment or a file, never printed or logged.

A ``Secret`` shows ``***`` in ``repr``/``str``; only ``reveal()`` gives the value, at the moment of use. Every
secret read is also registered with a log-record redactor, so a value that slips into a log message (a library
logging a URL, an exception text) is replaced by ``***`` before any handler sees it.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path

from alerts.errors import AlertsError

MASK = "***"


class SecretError(AlertsError):
    """A secret that is not set or cannot be read; the message names where it was looked for, never a value."""


class Secret:
    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        self._value = value
        self.origin = origin
        """Where it came from, e.g. ``$GPULEDGER_SLACK_WEBHOOK_URL`` or ``file /run/secrets/slack``."""
        redact_in_logs(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.origin})"

    __str__ = __repr__


def read_secret(
    what: str, env_name: str, file: Path | None, env: Mapping[str, str] | None = None, *, required: bool = True
) -> Secret | None:
    """``what`` (for messages) from the environment variable ``env_name``, else ``file``, else the file named by
    ``<env_name>_FILE`` (a mounted Kubernetes secret). The first non-empty one wins."""
    env = os.environ if env is None else env
    value = env.get(env_name, "").strip()
    if value:
        return Secret(value, f"${env_name}")
    path = file or (Path(env[f"{env_name}_FILE"]) if env.get(f"{env_name}_FILE") else None)
    if path is not None:
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise SecretError(
                f"the {what} file {path} cannot be read ({exc.strerror or type(exc).__name__}): "
                "fix the path or mount the secret there"
            ) from None
        if not text:
            raise SecretError(f"the {what} file {path} is empty: put the secret in it")
        return Secret(text.splitlines()[0].strip(), f"file {path}")
    if required:
        raise SecretError(f"no {what}: set the environment variable {env_name} or {env_name}_FILE (a file path)")
    return None


# ------------------------------------------------------------------------------------------------ log redaction

_lock = threading.Lock()
_values: set[str] = set()
_installed = False


def redact(text: str) -> str:
    for value in sorted(_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_in_logs(value: str) -> None:
    """Replace ``value`` by ``***`` in every log record created from now on (message, arguments, traceback)."""
    global _installed
    if len(value) < 4:  # too short to search for without mangling ordinary text
        return
    with _lock:
        _values.add(value)
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _values:
                try:
                    message = record.getMessage()
                except Exception:  # a bad format string: leave it for the handler to report
                    return record
                record.msg, record.args = redact(message), None
                if record.exc_info and record.exc_info[1] is not None:
                    record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
