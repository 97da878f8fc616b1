"""Errors sources detect, each with its one-line message (naming the input and the fix) built here."""

from __future__ import annotations


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
