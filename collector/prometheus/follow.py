"""Following one Prometheus: scrape each interval as it closes, forever, resuming from the warehouse's watermark.

A step scrapes ``[start, now)`` through :class:`collector.prometheus.scraper.PrometheusScraper`: the scraper skips
what its state document records done and never fetches steps newer than ``now - settle_s``, so each step fetches
only the intervals that closed since the last one, a restart (even after ``kill -9``) resumes at the watermark with
no gap and no duplicate, and the write in flight is whole or not recorded.

Failures never end the loop. A Prometheus that cannot be reached (refused, 5xx, timeouts: the client already
retried within its deadline) or a warehouse that cannot be written (a full disk) makes the follower wait, doubling
from ``backoff_s`` up to ``max_backoff_s`` with up to 10% jitter, and say so once per distinct failure; a rejected
request (credentials, not a Prometheus) is said at every try, since it needs a person. The first success after a
failure says that it resumed.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from collector.errors import CollectorError, SourceRejected
from collector.prometheus.scraper import PrometheusScraper, ScrapeResult
from warehouse.errors import WarehouseError

log = logging.getLogger(__name__)

FULL_DISK = {errno.ENOSPC, errno.EDQUOT}


@dataclass(frozen=True)
class FollowStep:
    """What one step of the follower did."""

    at: dt.datetime
    ok: bool
    points: int
    samples: int
    watermark: dt.datetime | None
    error: str | None
    next_in_s: float
    """How long the follower waits before its next step."""


class Follower:
    """Runs ``scraper`` step after step until ``stop`` is set; ``after_store`` runs after a step that stored rows
    (the rollup refresh, say); ``wait`` is ``stop.wait`` unless a test injects one."""

    def __init__(
        self,
        scraper: PrometheusScraper,
        *,
        start: dt.datetime,
        stop: threading.Event,
        after_store: Callable[[ScrapeResult], None] | None = None,
        on_step: Callable[[FollowStep], None] | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        wait: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.scraper = scraper
        self.start = start
        self.stop = stop
        self.after_store = after_store
        self.on_step = on_step
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.wait = wait or stop.wait
        self.jitter = jitter
        self.failures = 0
        self._last_failure: str | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            step = self.step()
            if self.on_step is not None:
                self.on_step(step)
            if self.stop.is_set():
                return
            self.wait(step.next_in_s)

    def step(self) -> FollowStep:
        """One scrape of what closed since the last one; never raises for a source or a disk that fails."""
        at = self.scraper.clock()
        try:
            result = self.scraper.scrape(self.start, at + dt.timedelta(seconds=self.scraper.step_s))
            if result.chunks and self.after_store is not None:
                self.after_store(result)
        except (CollectorError, OSError) as exc:
            return self._failed(at, exc)
        except Exception as exc:  # a warehouse error (a full disk seen through the lake, a lock): keep following
            if not _is_write_failure(exc):
                raise
            return self._failed(at, exc)
        if self.failures:
            log.warning("follow: %s answers and the warehouse takes rows again; resumed", self.scraper.client.url)
        self.failures, self._last_failure = 0, None
        return FollowStep(at, True, result.points, result.samples, result.watermark, None, self._until_next_step(at))

    def _failed(self, at: dt.datetime, exc: BaseException) -> FollowStep:
        self.failures += 1
        reason = _describe(exc)
        pause = min(self.max_backoff_s, self.backoff_s * 2 ** (self.failures - 1)) * (1 + 0.1 * self.jitter())
        if isinstance(exc, SourceRejected) or reason != self._last_failure:
            log.warning("follow: %s; trying again in %.0f s", reason, pause)
        self._last_failure = reason
        watermark = _watermark(self.scraper)
        return FollowStep(at, False, 0, 0, watermark, reason, pause)

    def _until_next_step(self, at: dt.datetime) -> float:
        """Seconds until the next step closes and has settled (the scraper fetches none newer than settle_s)."""
        step = self.scraper.step_s
        now_s = at.timestamp()
        next_close = (now_s - self.scraper.settle_s) // step * step + step + self.scraper.settle_s
        return max(0.05, next_close - now_s)


def _watermark(scraper: PrometheusScraper) -> dt.datetime | None:
    try:
        done = scraper.done_spans()
    except Exception:  # the state cannot be read either: no watermark to tell
        return None
    return dt.datetime.fromtimestamp(done[-1][1], dt.UTC) if done else None


def _is_write_failure(exc: BaseException) -> bool:
    """A failure to store (the warehouse's own errors, an OSError underneath one), not a bug."""
    return isinstance(exc, WarehouseError) or isinstance(exc.__cause__, OSError)


def _describe(exc: BaseException) -> str:
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, OSError) and cause.errno in FULL_DISK:
        where = f" ({cause.filename})" if cause.filename else ""
        return f"the warehouse disk is full{where}: nothing is written until space is freed"
    return " ".join(str(exc).split()) or type(exc).__name__
