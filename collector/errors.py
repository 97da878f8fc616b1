"""Errors sources detect, each with its one-line message (naming the input and the fix) built here."""

from __future__ import annotations

import socket
from collections.abc import Iterator


class CollectorError(Exception):
    """Base of every expected collector failure; the CLI prints it as one line and exits 2."""


class SourceUnreachable(CollectorError):
    def __init__(self, what: str, url: str, reason: str, fix: str) -> None:
        super().__init__(f"{what} at {url} cannot be reached ({reason}): {fix}")
        self.url = url


class SourceRejected(CollectorError):
    """The source answered, but not with data we can use (HTTP 4xx, auth failure, a body that is not metrics)."""

    def __init__(self, what: str, url: str, reason: str, fix: str) -> None:
        super().__init__(f"{what} at {url} refused the request ({reason}): {fix}")
        self.url = url


def connection_failure(exc: BaseException) -> str:
    """The root cause of a failed HTTP connection in a few words, found in requests'/urllib3's chain of wrapped
    errors (one wording for every source that fetches over HTTP)."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            return "host name not found"
        if isinstance(cause, ConnectionRefusedError) or "Connection refused" in str(cause):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if type(cause).__name__ == "SSLError":
            return "TLS handshake failed"
    return "connection failed"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(item for item in linked if isinstance(item, BaseException))
