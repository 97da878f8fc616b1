"""The outbox: every message is written to disk before it is sent, and marked sent only after a server accepted it.

Layout under ``<warehouse>/_outbox/``::

    pending/<id>.json   a message waiting for (another) delivery attempt
    sent/<id>.json      the ledger: messages a server accepted (kept ``keep_sent_days``)
    dead/<id>.json      messages a server rejected as malformed (HTTP 400/413): kept, logged, never retried
    bad/<dir>-<id>.json files found torn or not an outbox entry, set aside (logged) so they stop nothing else
    .lock               flock held while enqueueing or flushing, so two processes never send the same message

``id`` is a hash of the message's *idempotency key* (``report:weekly:2026-11-16/2026-11-23@slack``): enqueueing a key
that is pending or in the ledger does nothing, so a job that runs twice, or a restart, never sends twice. The part
after ``@`` names the recipient (``slack``, ``email``, ``team:<team>/slack``, ... — ``alerts.routing``): each
recipient's copy is its own entry, delivered, retried and remembered on its own, so the guarantees below hold per
recipient and one that fails holds back no other. Each file is written whole to a temporary name, fsynced, renamed
into place, and its directory fsynced.

Delivery is exactly once except in two windows, where it is at least once:

- the process dies after the server accepted a message and before the ledger entry is on disk (a few milliseconds:
  the ledger write directly follows the server's answer); the message is sent again on the next flush;
- a try is *ambiguous*: the message went out whole but the server's answer did not come within the try's deadline
  (or the connection dropped first). The server may have it, so it is not tried again in the same flush: it stays
  pending and is retried after ``max_backoff_s``, which sends a second copy when the server did take the first.

Email narrows both with a ``Message-ID`` derived from the key, by which mail servers and clients collapse a
duplicate; Slack incoming webhooks have no such key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alerts.errors import AlertsError
from warehouse.files import fsync_dir, write_atomic

log = logging.getLogger("gpuledger.outbox")

DIRNAME = "_outbox"


class DeliveryError(Exception):
    """One failed delivery attempt. ``retry``: worth trying again (down, timeout, 5xx, 429); ``rejected``: the server
    refused the message itself (malformed), so a retry cannot help. The message never holds a secret."""

    def __init__(
        self,
        message: str,
        *,
        retry: bool = True,
        rejected: bool = False,
        wait_s: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry = retry
        self.rejected = rejected
        self.wait_s = wait_s
        """How long the server asked us to wait (HTTP 429 Retry-After)."""
        self.ambiguous = ambiguous
        """The message went out whole but no answer came: the server may have it, so it is not retried at once."""


class Channel(Protocol):
    name: str

    def send(self, entry: Entry) -> None:
        """Deliver ``entry`` once; return only when the server accepted it, else raise ``DeliveryError``."""


@dataclass
class Entry:
    key: str
    channel: str
    title: str
    payload: dict[str, Any]
    covers: list[list[str]] = field(default_factory=list)
    """Alert (rule, subject) pairs this message notifies about, so alert state can be rebuilt from the outbox."""
    created_at: str = ""
    attempts: int = 0
    next_attempt_at: str | None = None
    last_error: str | None = None
    sent_at: str | None = None

    @property
    def id(self) -> str:
        return entry_id(self.key)


def entry_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def channel_key(key: str, channel: str) -> str:
    """The idempotency key of one channel's copy of the message ``key`` (``report:weekly:...@slack``)."""
    return f"{key}@{channel}"


@dataclass
class FlushResult:
    sent: list[str] = field(default_factory=list)
    """Keys delivered by this flush."""
    failed: dict[str, str] = field(default_factory=dict)
    """Key -> why it is still queued."""
    waiting: int = 0
    """Messages not tried this time (backing off, or their channel is not configured)."""
    rejected: dict[str, str] = field(default_factory=dict)
    ambiguous: list[str] = field(default_factory=list)
    """Keys (also in ``failed``) whose last try may have arrived: retried only after ``max_backoff_s``."""
    busy: bool = False
    """Another process held the outbox: it delivers what is pending."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 3600.0


class Outbox:
    def __init__(self, warehouse: Path, *, lock_timeout_s: float = 120.0, keep_sent_days: float = 30.0) -> None:
        self.root = Path(warehouse) / DIRNAME
        self.lock_timeout_s = lock_timeout_s
        self.keep_sent = dt.timedelta(days=keep_sent_days)
        for sub in ("pending", "sent", "dead", "bad"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------------------------------------- queue

    def enqueue(self, entries: list[Entry], now: dt.datetime) -> list[Entry]:
        """Queue ``entries``; those whose key is pending, sent or dead already are skipped. Returns the new ones."""
        added = []
        with self._locked(wait=True):
            for entry in entries:
                if self.known(entry.key):
                    log.info("message %s is already queued or sent: not queued again", entry.key)
                    continue
                entry.created_at = entry.created_at or now.isoformat()
                self._write(self._path("pending", entry.id), asdict(entry))
                added.append(entry)
        return added

    def known(self, key: str) -> bool:
        """Whether ``key`` is pending, sent or dead; one whose sent or dead file was set aside as torn counts too
        (it was delivered or refused: sending it again could only duplicate it)."""
        eid = entry_id(key)
        return any(self._path(sub, eid).exists() for sub in ("pending", "sent", "dead")) or any(
            self._path("bad", f"{sub}-{eid}").exists() for sub in ("sent", "dead")
        )

    def status(self, key: str) -> tuple[str, Entry] | None:
        """Where ``key`` is (``pending``, ``sent`` or ``dead``) with its entry, or None."""
        eid = entry_id(key)
        for sub in ("sent", "pending", "dead"):
            entry = self._read(sub, self._path(sub, eid))
            if entry is not None:
                return sub, entry
        for sub in ("sent", "dead"):
            if self._path("bad", f"{sub}-{eid}").exists():
                torn = f"its {sub} file was torn and set aside in {self.root / 'bad'}"
                return sub, Entry(key, key.rpartition("@")[2], "", {}, last_error=torn)
        return None

    def pending(self) -> list[Entry]:
        return self._load("pending")

    def sent(self) -> list[Entry]:
        return self._load("sent")

    def dead(self) -> list[Entry]:
        return self._load("dead")

    def covers_since(self, since: dt.datetime | None) -> list[tuple[Entry, list[str]]]:
        """(entry, [rule, subject]) for every pending or sent entry created at or after ``since``."""
        out = []
        for entry in self._load("pending") + self._load("sent"):
            if since is not None and entry.created_at and dt.datetime.fromisoformat(entry.created_at) < since:
                continue
            out += [(entry, cover) for cover in entry.covers]
        return out

    def delivery(self, key: str, channels: list[str]) -> tuple[list[str], dict[str, str]]:
        """Where the message ``key`` stands on ``channels``: those that have it (delivered by this process or an
        earlier one), and channel -> why each other one does not (the last error, rejected, or not tried yet)."""
        delivered: list[str] = []
        waiting: dict[str, str] = {}
        for name in channels:
            found = self.status(channel_key(key, name))
            if found is not None and found[0] == "sent":
                delivered.append(name)
            elif found is not None and found[0] == "dead":
                waiting[name] = f"rejected, kept in {self.root / 'dead'}: {found[1].last_error}"
            else:
                error = found[1].last_error if found else None
                waiting[name] = error or "not tried yet (another gpuledger process is delivering the outbox)"
        return delivered, waiting

    # ---------------------------------------------------------------------------------------------- flush

    def flush(
        self,
        channels: Mapping[str, Channel],
        now: Callable[[], dt.datetime],
        policy: RetryPolicy = RetryPolicy(),
        *,
        sleep: Callable[[float], None] = time.sleep,
        wait: bool = False,
    ) -> FlushResult:
        """Try every pending message that is due: up to ``policy.attempts`` tries with doubling waits, then it stays
        queued with ``next_attempt_at`` pushed back (doubling per failed flush, at most ``max_backoff_s``)."""
        result = FlushResult()
        with self._locked(wait=wait) as held:
            if not held:
                log.info("another gpuledger process is flushing the outbox; it will deliver what is pending")
                return FlushResult(busy=True)
            self._prune_sent(now())
            for entry in self._load("pending"):
                sent_path = self._path("sent", entry.id)
                if sent_path.exists():  # a process died between the ledger write and the removal of pending
                    self._path("pending", entry.id).unlink(missing_ok=True)
                    continue
                channel = channels.get(entry.channel)
                due = entry.next_attempt_at is None or dt.datetime.fromisoformat(entry.next_attempt_at) <= now()
                if channel is None or not due:
                    if channel is None:
                        log.warning(
                            "message %s waits for channel %s, which is not configured", entry.key, entry.channel
                        )
                    result.waiting += 1
                    continue
                self._deliver(entry, channel, now, policy, sleep, result)
        return result

    def _deliver(
        self,
        entry: Entry,
        channel: Channel,
        now: Callable[[], dt.datetime],
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        result: FlushResult,
    ) -> None:
        error: DeliveryError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                wait = max(policy.backoff_s * 2 ** (attempt - 1), (error.wait_s if error else None) or 0.0)
                sleep(min(wait, policy.max_backoff_s))
            try:
                channel.send(entry)
            except DeliveryError as exc:
                error = exc
                entry.attempts += 1
                log.warning(
                    "delivery of %s to %s failed (try %d of %d): %s",
                    entry.key,
                    entry.channel,
                    attempt + 1,
                    policy.attempts,
                    exc,
                )
                if not exc.retry or exc.ambiguous:
                    break
                continue
            entry.attempts += 1
            entry.sent_at = now().isoformat()
            entry.last_error = None
            self._write(self._path("sent", entry.id), asdict(entry))  # the commit point
            self._path("pending", entry.id).unlink(missing_ok=True)
            fsync_dir(self.root / "pending")
            result.sent.append(entry.key)
            log.info("delivered %s to %s", entry.key, entry.channel)
            return
        assert error is not None
        entry.last_error = str(error)
        if error.rejected:
            self._write(self._path("dead", entry.id), asdict(entry))
            self._path("pending", entry.id).unlink(missing_ok=True)
            result.rejected[entry.key] = str(error)
            log.error(
                "%s rejected %s; kept in %s, not retried: %s", entry.channel, entry.key, self.root / "dead", error
            )
            return
        flushes = max(entry.attempts // max(policy.attempts, 1), 1)
        delay = min(policy.backoff_s * 2 ** (flushes + policy.attempts - 1), policy.max_backoff_s)
        if error.ambiguous:
            delay = policy.max_backoff_s
            result.ambiguous.append(entry.key)
            log.warning("%s may have %s already: it is tried again only after %g s", entry.channel, entry.key, delay)
        entry.next_attempt_at = (now() + dt.timedelta(seconds=delay)).isoformat()
        self._write(self._path("pending", entry.id), asdict(entry))
        result.failed[entry.key] = str(error)
        log.error(
            "could not deliver %s to %s (%s); it stays queued in %s and is retried after %s",
            entry.key,
            entry.channel,
            error,
            self.root / "pending",
            entry.next_attempt_at,
        )

    def _prune_sent(self, now: dt.datetime) -> None:
        for path in (self.root / "sent").glob("*.json"):
            entry = self._read("sent", path)
            if entry is not None and entry.sent_at and dt.datetime.fromisoformat(entry.sent_at) < now - self.keep_sent:
                path.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------------- files

    def _path(self, sub: str, eid: str) -> Path:
        return self.root / sub / f"{eid}.json"

    def _load(self, sub: str) -> list[Entry]:
        out = [entry for path in sorted((self.root / sub).glob("*.json")) if (entry := self._read(sub, path))]
        return sorted(out, key=lambda e: (e.created_at, e.key))

    def _read(self, sub: str, path: Path) -> Entry | None:
        """The entry in ``path``, or None when there is none; a torn file, or one that is not an outbox entry, is
        moved to ``bad/`` with an error in the log, so it stops neither a flush nor a later enqueue of its key."""
        try:
            return _entry(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            reason = "torn or empty" if isinstance(exc, json.JSONDecodeError) else f"not an outbox entry: {exc}"
        aside = self._path("bad", f"{sub}-{path.stem}")
        try:
            path.replace(aside)
            fsync_dir(aside.parent)
        except FileNotFoundError:
            return None
        log.error("outbox file %s is %s; moved to %s", path, reason, aside)
        return None

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def _locked(self, *, wait: bool) -> Iterator[bool]:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + (self.lock_timeout_s if wait else 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        if wait:
                            raise OutboxBusy(self.root) from None
                        yield False
                        return
                    time.sleep(0.05)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _entry(data: Any) -> Entry:
    """An ``Entry`` from a file's JSON; ValueError or TypeError when it is not one (a hand edit, another version)."""
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__}, not an object")
    entry = Entry(**data)
    if not isinstance(entry.key, str) or not isinstance(entry.channel, str) or not isinstance(entry.payload, dict):
        raise TypeError("key, channel or payload has the wrong type")
    if not isinstance(entry.attempts, int):
        raise TypeError("attempts is not a number")
    for stamp in (entry.created_at, entry.next_attempt_at, entry.sent_at):
        if stamp:
            dt.datetime.fromisoformat(stamp)
    return entry


class OutboxBusy(AlertsError):
    def __init__(self, root: Path) -> None:
        super().__init__(f"the outbox {root} stayed locked by another gpuledger process; try again")
