"""How requests to Prometheus authenticate, from the environment only, never logged and never in an error message.

``GPULEDGER_PROMETHEUS_TOKEN`` / ``GPULEDGER_PROMETHEUS_TOKEN_FILE`` (bearer), or ``GPULEDGER_PROMETHEUS_USER`` with
``GPULEDGER_PROMETHEUS_PASSWORD`` / ``GPULEDGER_PROMETHEUS_PASSWORD_FILE`` (basic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from collector.errors import CollectorError

ENV_TOKEN = "GPULEDGER_PROMETHEUS_TOKEN"
ENV_USER = "GPULEDGER_PROMETHEUS_USER"
ENV_PASSWORD = "GPULEDGER_PROMETHEUS_PASSWORD"
FILE_SUFFIX = "_FILE"

CREDENTIALS_FIX = (
    f"it needs credentials: set {ENV_TOKEN} (or {ENV_TOKEN}{FILE_SUFFIX}) for a bearer token, "
    f"or {ENV_USER} with {ENV_PASSWORD} (or {ENV_PASSWORD}{FILE_SUFFIX}) for basic auth"
)


@dataclass(frozen=True)
class Credentials:
    """How requests authenticate; ``describe`` names the environment variables, never their values."""

    headers: Mapping[str, str]
    auth: tuple[str, str] | None
    describe: str | None

    def __repr__(self) -> str:
        return f"Credentials({self.describe or 'none'})"


def credentials_from_env(env: Mapping[str, str]) -> Credentials:
    """A bearer token (``GPULEDGER_PROMETHEUS_TOKEN[_FILE]``) or basic auth (``GPULEDGER_PROMETHEUS_USER`` plus
    ``GPULEDGER_PROMETHEUS_PASSWORD[_FILE]``); none when neither is set. Setting both is an error."""
    token = _secret(env, ENV_TOKEN)
    user = env.get(ENV_USER) or None
    password = _secret(env, ENV_PASSWORD)
    if token is not None and (user is not None or password is not None):
        raise CollectorError(f"both {ENV_TOKEN} and {ENV_USER}/{ENV_PASSWORD} are set: keep one way to authenticate")
    if token is not None:
        return Credentials({"Authorization": f"Bearer {token}"}, None, f"the bearer token from {ENV_TOKEN}")
    if (user is None) != (password is None):
        missing = ENV_PASSWORD if password is None else ENV_USER
        raise CollectorError(f"basic auth for Prometheus needs {ENV_USER} and {ENV_PASSWORD}: {missing} is not set")
    if user is not None and password is not None:
        return Credentials({}, (user, password), f"the user and password from {ENV_USER}/{ENV_PASSWORD}")
    return Credentials({}, None, None)


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``name``'s value, else the first line of the file ``name_FILE`` names (a mounted Kubernetes secret)."""
    value = env.get(name)
    if value:
        return value.strip()
    path = env.get(name + FILE_SUFFIX)
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CollectorError(
            f"{name}{FILE_SUFFIX} names {path}, which cannot be read ({exc.strerror or type(exc).__name__}): "
            "fix the path or mount the secret there"
        ) from None
    secret = text.strip()
    if not secret:
        raise CollectorError(f"{name}{FILE_SUFFIX} names {path}, which is empty: put the secret in it")
    return secret
