"""Secrets (webhook URLs, SMTP passwords): read only from the environment or a file, never printed or logged.

A ``Secret`` shows ``***`` in ``repr``/``str``; only ``reveal()`` gives the value, at the moment of use. Every
secret read is also registered with a log-record redactor, so a value that slips into a log message (a library
logging a URL, an exception text) is replaced by ``***`` before any handler sees it.
"""

from __future__ import annotations

import logging
import os
import re
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


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What an environment variable's name looks like; a ``*_env`` setting holding anything else holds a secret."""
PLAIN_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
"""A conventional (upper-case) variable name: the only kind an error message repeats, so that a secret that happens
to look like a name (``hunter2``) is never echoed."""


def env_name_problem(value: str) -> str | None:
    """Why ``value`` cannot be the name of an environment variable (it holds a secret instead), or None."""
    if ENV_NAME.fullmatch(value):
        return None
    return (
        "must name an environment variable (it looks like a URL or secret; "
        "put the value in the environment and its name here)"
    )


def file_setting_problem(value: str) -> str | None:
    """Why ``value`` cannot be the path of a secret file (it is a URL, so the secret itself), or None."""
    if "://" not in value:
        return None
    return "must be the path of a file holding the secret (it looks like a URL; put the URL in a file, its path here)"


def read_secret(
    what: str,
    env_name: str,
    file: Path | None,
    env: Mapping[str, str] | None = None,
    *,
    required: bool = True,
    setting: str | None = None,
) -> Secret | None:
    """``what`` (for messages) from the environment variable ``env_name``, else ``file``, else the file named by
    ``<env_name>_FILE`` (a mounted Kubernetes secret). The first non-empty one wins.

    ``setting`` names the setting that holds ``env_name`` (``[slack] webhook_url_env``; ``file`` comes from the same
    name ending in ``_file``). Errors name a variable only when it looks like one (upper case) and a file only by an
    absolute path; otherwise they name the setting, so a secret put in the wrong setting is never repeated."""
    env = os.environ if env is None else env
    env_label = f"`{setting}`" if setting else "the environment variable name"
    problem = env_name_problem(env_name)
    if problem:
        raise SecretError(f"{env_label} {problem}")
    value = env.get(env_name, "").strip()
    if value:
        return Secret(value, f"${env_name}")
    plain = PLAIN_ENV_NAME.fullmatch(env_name) is not None
    if file is not None:
        path, named_by = file, f"`{_file_setting(setting)}`" if setting else "its setting"
    elif env.get(f"{env_name}_FILE"):
        path = Path(env[f"{env_name}_FILE"])
        named_by = f"${env_name}_FILE" if plain else f"the _FILE variable of {env_label}"
    else:
        path = None
    if path is not None:
        shown = str(path) if path.is_absolute() and file_setting_problem(str(path)) is None else None
        name = shown or f"named by {named_by}"
        try:
            text = path.read_text().strip()
        except OSError as exc:
            fix = "fix the path or mount the secret there" if shown else "give the absolute path of the secret file"
            raise SecretError(
                f"the {what} file {name} cannot be read ({exc.strerror or type(exc).__name__}): {fix}"
            ) from None
        if not text:
            raise SecretError(f"the {what} file {name} is empty: put the secret in it")
        return Secret(text.splitlines()[0].strip(), f"file {shown or named_by}")
    if required:
        if plain:
            raise SecretError(f"no {what}: set the environment variable {env_name} or {env_name}_FILE (a file path)")
        raise SecretError(
            f"no {what}: set the environment variable named by {env_label}, or that name with _FILE (a file path)"
        )
    return None


def _file_setting(setting: str) -> str:
    return setting[: -len("_env")] + "_file" if setting.endswith("_env") else f"{setting} file"


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
