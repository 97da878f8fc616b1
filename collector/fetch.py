"""One bounded HTTP GET for every source that fetches over HTTP: a deadline on the whole request, a limit on the body.

requests' ``timeout`` bounds each socket read, not the request: a server that sends a byte every second keeps a
plain ``session.get`` going for as long as it likes, and ``response.content`` takes a body of any size. :func:`get`
runs the request in a worker thread and waits for it at most until the deadline, headers and body alike. The body
is streamed (decoded, in reads of at most 64 KiB) and the worker stops at the deadline or as soon as the body is
over the limit, so a body is never held past ``max_bytes`` + 64 KiB and an abandoned worker ends within one read.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions

from analysis.units import MIB

READ_BYTES = 1 << 16


def display_url(url: str) -> str:
    """``url`` as errors and logs show it: scheme, host, port and path only (no user, password or query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class TimedOut(Exception):
    """The whole request took longer than its deadline; ``started``: the server had sent its headers."""

    def __init__(self, within_s: float, *, started: bool) -> None:
        what = "the answer did not finish" if started else "no answer"
        super().__init__(f"{what} within {within_s:g} s")
        self.started = started


class TooLarge(Exception):
    """The body is over the limit; ``size`` says how much was seen (declared by Content-Length, or read)."""

    def __init__(self, seen: int, *, declared: bool) -> None:
        size = f"{seen / MIB:.1f} MiB"
        super().__init__(f"{size} (by its Content-Length)" if declared else f"{size} and more (reading stopped there)")
        self.seen = seen
        self.declared = declared


@dataclass(frozen=True)
class Reply:
    status_code: int
    reason: str
    content: bytes

    def json(self) -> Any:
        """The body decoded as JSON; ValueError when it is not JSON."""
        return json.loads(self.content)


@dataclass
class _Progress:
    started: bool = False
    outcome: Reply | BaseException | None = None


def get(
    session: requests.Session,
    url: str,
    *,
    within_s: float,
    max_bytes: int,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: Any = None,
) -> Reply:
    """GET ``url``, all of it within ``within_s`` seconds and at most ``max_bytes`` of (decoded) body.

    Raises TimedOut, TooLarge, or what requests raises for a connection that fails (requests.ConnectionError also
    for a body cut off mid-way)."""
    deadline = time.monotonic() + within_s
    progress = _Progress()

    def work() -> None:
        try:
            progress.outcome = _read(session, url, deadline, within_s, max_bytes, progress, params, headers, auth)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            progress.outcome = exc

    worker = threading.Thread(target=work, name="gpuledger-http-get", daemon=True)  # no URL: it may hold a secret
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()) + 0.5)
    outcome = progress.outcome
    if outcome is None:
        raise TimedOut(within_s, started=progress.started)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _read(
    session: requests.Session,
    url: str,
    deadline: float,
    within_s: float,
    max_bytes: int,
    progress: _Progress,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    auth: Any,
) -> Reply:
    try:
        response = session.get(url, params=params, headers=headers, auth=auth, timeout=_left(deadline), stream=True)
    except requests.Timeout:
        raise TimedOut(within_s, started=False) from None
    progress.started = True
    with response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise TooLarge(int(declared), declared=True)
        body = bytearray()
        try:
            while chunk := response.raw.read1(READ_BYTES, decode_content=True):
                body += chunk
                if len(body) > max_bytes:
                    raise TooLarge(len(body), declared=False)
                if time.monotonic() > deadline:
                    raise TimedOut(within_s, started=True)
        except urllib3.exceptions.ReadTimeoutError:
            raise TimedOut(within_s, started=True) from None
        except urllib3.exceptions.HTTPError as exc:
            raise requests.ConnectionError(exc) from exc
        return Reply(response.status_code, response.reason or "", bytes(body))


def _left(deadline: float) -> float:
    """The read timeout for what is left of the deadline (never zero, which would mean non-blocking)."""
    return max(0.001, deadline - time.monotonic())
