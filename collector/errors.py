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


class BadUrl(CollectorError):
    """A source URL that cannot be fetched at all (another scheme than http or https, no host)."""

    def __init__(self, what: str, url: str, problem: str, fix: str) -> None:
        super().__init__(f"{what} URL {url} {problem}: {fix}")
        self.url = url


class AnswerTooLarge(CollectorError):
    """A source whose answer is over the size limit; reading stopped there, so memory stays bounded."""

    def __init__(self, what: str, url: str, size: str, limit_mib: float, setting: str) -> None:
        super().__init__(
            f"{what} at {url} answered {size}, over the {limit_mib:g} MiB limit: raise the {setting} setting "
            f"(GPULEDGER_{setting.upper()}) if it really serves that much, or check the URL"
        )
        self.url = url


class NoDcgmSeries(CollectorError):
    """A Prometheus that answers but holds no DCGM series for the window: it is not the one that scrapes
    dcgm-exporter, or dcgm-exporter is not among its targets. Names what the server does hold instead."""

    def __init__(self, url: str, window: str, jobs: list[str], more_jobs: bool, names: list[str], more: bool) -> None:
        def listed(values: list[str], truncated: bool) -> str:
            return ", ".join(values) + (", ..." if truncated else "") if values else "none"

        super().__init__(
            f"Prometheus at {url} holds no DCGM series (DCGM_FI_*) from {window}; its jobs: "
            f"{listed(jobs, more_jobs)}; its metrics include: {listed(names, more)}: point --prometheus at the "
            "Prometheus that scrapes dcgm-exporter, or add dcgm-exporter to its scrape targets (nothing was stored "
            "and the window is not marked done)"
        )
        self.url = url


class SpoolUnusable(CollectorError):
    def __init__(self, path: object, reason: str) -> None:
        super().__init__(
            f"spool {path} cannot be used: {reason}; set the spool_dir setting (GPULEDGER_SPOOL_DIR) "
            "to a writable directory"
        )
        self.path = path


class NotStored(CollectorError):
    """``collect --once`` could not store its sample: the job was not done, even when the batch is kept.

    ``kept``: the spool that holds the batch for a later run, or None when it could not be kept; ``rejected``: the
    warehouse refused the rows themselves (they are set aside, never replayed)."""

    def __init__(self, warehouse: object, reason: str, kept: object | None, *, rejected: bool = False) -> None:
        if rejected:
            message = (
                f"warehouse {warehouse} rejected the sample ({reason}); it is kept in {kept} and never replayed: "
                "the source sent rows that break the table contract, report it with that batch"
            )
        else:
            where = (
                f"it is kept in the spool {kept} for the next `gpuledger collect` to store"
                if kept is not None
                else "it could not be spooled either and is lost"
            )
            message = (
                f"the sample was not stored ({reason}); {where}: make warehouse {warehouse} a writable directory "
                "or pass another --warehouse"
            )
        super().__init__(message)


class MetricsPortBusy(CollectorError):
    def __init__(self, addr: str, port: int, reason: str) -> None:
        super().__init__(
            f"cannot serve /metrics on {addr}:{port} ({reason}): pass another --metrics-port (or --metrics-addr), "
            "or stop what holds that port"
        )


class BillFileError(CollectorError):
    """A cost export that ``gpuledger import-bill`` cannot read as FOCUS: unreadable, empty, another format, a
    missing column or a value that is not what the column holds."""

    def __init__(self, path: object, detail: str, fix: str) -> None:
        super().__init__(f"bill {path}: {detail}; {fix}")
        self.path = path


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
