"""Range queries against one Prometheus (``/api/v1/query_range``), each bounded in time and size, with retries.

Errors: timeouts, refused or dropped connections and HTTP 5xx/429 are retried with exponential backoff (``tries``
attempts); then, and for every other failure, one :class:`SourceUnreachable` or :class:`SourceRejected` line that
names the URL (without any credentials) and the fix. Deadlines: each attempt, headers and body, ends within
``timeout_s``; one query, its retries and the waits between them included, ends within ``2 * timeout_s``. An answer
over ``max_body_mib`` is not read further (:class:`AnswerTooLarge`). Both bounds are :func:`collector.fetch.get`'s.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import msgspec
import requests

from collector import fetch as bounded
from collector.errors import AnswerTooLarge, SourceRejected, SourceUnreachable, connection_failure
from collector.prometheus.credentials import CREDENTIALS_FIX, Credentials, credentials_from_env
from collector.prometheus.spans import Span

log = logging.getLogger(__name__)

WHAT = "Prometheus"
MAX_POINTS_PER_SERIES = 11_000
"""Prometheus answers 400 to a range query whose series would hold more than 11,000 points."""

UNREACHABLE_FIX = (
    "check the --prometheus URL and that Prometheus is running "
    "(e.g. `kubectl -n monitoring port-forward svc/prometheus-operated 9090`)"
)
MALFORMED_SERIES = "a range query answered with malformed series ({})"
NOT_PROMETHEUS_FIX = (
    "pass Prometheus' base URL (the one whose /api/v1/query_range answers), e.g. http://prometheus:9090"
)
QUERY_FAILED_FIX = (
    "the server could not evaluate a range query; if it loads too many samples, lower the chunk size or raise "
    "Prometheus' --query.max-samples"
)


class PrometheusClient:
    """One Prometheus' HTTP API, as range queries whose ``result`` comes back as Prometheus' JSON has it.

    ``session``: the requests.Session to use (tests pass a counting one); ``headers``: extra request headers;
    ``env``: where credentials are read (default ``os.environ``); ``sleep``: the wait between tries (injectable).
    ``queries`` counts the HTTP requests sent, retries included.
    """

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 60.0,
        tries: int = 5,
        backoff_s: float = 0.5,
        max_body_mib: float = 256.0,
    ) -> None:
        if tries < 1:
            raise ValueError("tries must be at least 1")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceUnreachable(WHAT, bounded.display_url(url) or "''", "not an http(s) URL", NOT_PROMETHEUS_FIX)
        self.base = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path.rstrip("/"), "", ""))
        self.url = bounded.display_url(url)
        self.session = session if session is not None else requests.Session()
        self.credentials = self._credentials(parts, os.environ if env is None else env)
        self.headers = {"Accept": "application/json", **(headers or {}), **self.credentials.headers}
        self.sleep = sleep
        self.timeout_s = timeout_s
        self.tries = tries
        self.backoff_s = backoff_s
        self.max_body_mib = max_body_mib
        self.queries = 0

    def __repr__(self) -> str:
        return f"PrometheusClient({self.url!r}, auth={self.credentials.describe or 'none'})"

    @staticmethod
    def _credentials(parts: SplitResult, env: Mapping[str, str]) -> Credentials:
        found = credentials_from_env(env)
        if found.describe is None and parts.username:
            return Credentials({}, (parts.username, parts.password or ""), "the user and password in the URL")
        return found

    def query_range(self, query: str, span: Span, step_s: int) -> list[dict[str, Any]]:
        """The ``result`` list of ``query`` evaluated at every step of ``span`` (its end excluded)."""
        return self._matrix(self._get("/api/v1/query_range", _range_params(query, span, step_s)))

    def query_range_series(self, query: str, span: Span, step_s: int) -> list[RangeSeries]:
        """:meth:`query_range`'s series with their values as numbers, decoded straight from the answer's bytes by
        msgspec (the values' text read as floats as ``float()`` reads it). An answer that does not decode so (a
        value such as ``+Inf``, which msgspec does not read, or a malformed one) is decoded as :meth:`query_range`
        decodes it, with the same errors, and then converted."""
        body = self._get("/api/v1/query_range", _range_params(query, span, step_s), decode=_decode_range)
        if isinstance(body, _RangeAnswer) and body.status == "success" and body.data.resultType == "matrix":
            return body.data.result
        result = self._matrix(body)
        try:
            return [RangeSeries(item["metric"], [(float(t), float(v)) for t, v in item["values"]]) for item in result]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SourceRejected(
                WHAT, self.url, MALFORMED_SERIES.format(type(exc).__name__), NOT_PROMETHEUS_FIX
            ) from None

    def _matrix(self, body: Any) -> list[dict[str, Any]]:
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise SourceRejected(WHAT, self.url, "a range query answered without a matrix", NOT_PROMETHEUS_FIX)
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(
        self, label: str, *, match: str | None = None, span: Span | None = None, limit: int = 10
    ) -> tuple[list[str], bool]:
        """Up to ``limit`` values of ``label`` (``/api/v1/label/<label>/values``), sorted, restricted to the series
        ``match`` selects within ``span`` when given; and whether there were more. The request is bounded like a
        range query (deadline, size, retries); ``limit`` is also sent, so servers that know it (2.51+) stop early."""
        params = {"limit": str(limit + 1)}
        if match is not None:
            params["match[]"] = match
        if span is not None:
            params["start"], params["end"] = str(span[0]), str(span[1])
        body = self._get(f"/api/v1/label/{label}/values", params)
        data = body.get("data")
        if not isinstance(data, list):
            raise SourceRejected(WHAT, self.url, f"label {label} answered without a list of values", NOT_PROMETHEUS_FIX)
        values = sorted(str(v) for v in data)
        return values[:limit], len(values) > limit

    def _get(self, path: str, params: Mapping[str, str], decode: Callable[[bytes], Any] | None = None) -> Any:
        """One query's answer. Each try ends within ``timeout_s``; no try or wait starts that would end past
        ``2 * timeout_s`` from the first, so a server that never answers ends the query there. ``decode``: how a
        200 answer is decoded first (None when it cannot be decoded so), before the plain JSON decoding."""
        url = self.base + path
        deadline = time.monotonic() + 2 * self.timeout_s
        for attempt in range(1, self.tries + 1):
            failure = self._attempt(url, path, params, min(self.timeout_s, deadline - time.monotonic()), decode)
            if not isinstance(failure, _Retry):
                return failure
            pause = self.backoff_s * 2 ** (attempt - 1)
            if attempt == self.tries:
                raise SourceUnreachable(WHAT, self.url, f"{failure.reason}, after {attempt} tries", failure.fix)
            if time.monotonic() + pause >= deadline:
                tries = f"{attempt} tries (a query may take {2 * self.timeout_s:g} s with its retries)"
                raise SourceUnreachable(WHAT, self.url, f"{failure.reason}, after {tries}", failure.fix)
            log.info("prometheus: %s %s; retrying in %.1f s", self.url, failure.reason, pause)
            self.sleep(pause)
        raise AssertionError("unreachable")

    def _attempt(
        self,
        url: str,
        path: str,
        params: Mapping[str, str],
        within_s: float,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        """The decoded JSON answer, a _Retry for a transient failure, or raise for a permanent one."""
        self.queries += 1
        try:
            response = bounded.get(
                self.session,
                url,
                within_s=within_s,
                max_bytes=int(self.max_body_mib * (1 << 20)),
                params=params,
                headers=self.headers,
                auth=self.credentials.auth,
            )
        except bounded.TimedOut as exc:
            what = "the answer did not finish" if exc.started else "no answer"
            return _Retry(f"{what} within {self.timeout_s:g} s", UNREACHABLE_FIX)
        except bounded.TooLarge as exc:
            raise AnswerTooLarge(WHAT, self.url, str(exc), self.max_body_mib, "prometheus_max_body_mib") from None
        except requests.ConnectionError as exc:
            return _Retry(connection_failure(exc), UNREACHABLE_FIX)
        except requests.RequestException as exc:
            raise SourceUnreachable(WHAT, self.url, type(exc).__name__, UNREACHABLE_FIX) from None
        if decode is not None and response.status_code == 200:
            decoded = decode(response.content)
            if decoded is not None:
                return decoded
        return self._answer(response, path)

    def _answer(self, response: bounded.Reply, path: str) -> Any:
        status = response.status_code
        if status in (401, 403):
            fix = CREDENTIALS_FIX
            if self.credentials.describe is not None:
                fix = f"{self.credentials.describe} was not accepted: renew it or check what it may read"
            raise SourceRejected(WHAT, self.url, _status(response), fix)
        if status >= 500 or status == 429:
            return _Retry(_status(response), "check Prometheus' health and logs, then re-run: finished chunks are kept")
        body = _json(response)
        if status in (400, 422) and isinstance(body, dict) and body.get("status") == "error":
            reason = f"{_status(response)}: {_one_line(str(body.get('error')))}"
            raise SourceRejected(WHAT, self.url, reason, QUERY_FAILED_FIX)
        if status == 404:
            raise SourceRejected(WHAT, self.url, f"HTTP 404 for {path}", NOT_PROMETHEUS_FIX)
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise SourceRejected(
                WHAT, self.url, f"{_status(response)}, not a Prometheus API answer", NOT_PROMETHEUS_FIX
            )
        return body


class RangeSeries(msgspec.Struct):
    """One series of a range query's answer: its labels as Prometheus sends them (``__name__`` too, when there)
    and its (epoch seconds, value) pairs."""

    metric: dict[str, str]
    values: list[tuple[float, float]]


class _Matrix(msgspec.Struct):
    resultType: str
    result: list[RangeSeries]


class _RangeAnswer(msgspec.Struct):
    status: str
    data: _Matrix


_RANGE_DECODER = msgspec.json.Decoder(_RangeAnswer, strict=False)  # strict=False: "0.5" decodes as a float


def _decode_range(content: bytes) -> _RangeAnswer | None:
    if b'"-0"' in content:  # msgspec reads the text "-0" as 0.0, float() as -0.0: let the plain decoding read it
        return None
    try:
        return _RANGE_DECODER.decode(content)
    except msgspec.MsgspecError:  # not this shape, "+Inf", or not JSON: the plain decoding says what it is
        return None


def _range_params(query: str, span: Span, step_s: int) -> dict[str, str]:
    start, end = span
    return {"query": query, "start": str(start), "end": str(end - step_s), "step": str(step_s)}


T = TypeVar("T")


def pipelined(calls: Sequence[Callable[[], T]], *, ahead: int = 1, in_flight: int = 1) -> Generator[T, None, None]:
    """The answers of ``calls`` (each one query, e.g. a bound :meth:`PrometheusClient.query_range`), in order,
    made by ``in_flight`` worker threads, each taking the next call as soon as its last one is done: while the
    caller reads one answer the server works on the next ones, so the server's time overlaps the caller's CPU
    (and, with ``in_flight`` > 1, the server answers that many queries at once). Nothing is sent after a call
    fails, but the ``in_flight`` - 1 calls that may be under way then; its error is raised where its answer would
    come. At most ``ahead`` + ``in_flight`` calls are made or under way and unread. Closing the iterator early
    stops the workers and waits for the calls in flight (bounded as every query is)."""
    if ahead < 1 or in_flight < 1:
        raise ValueError(f"ahead and in_flight must be at least 1, not {ahead} and {in_flight}")
    done: dict[int, tuple[T | None, BaseException | None]] = {}
    ready = threading.Condition()
    slots = threading.Semaphore(ahead + in_flight)
    order = iter(range(len(calls)))
    stop = threading.Event()

    def work() -> None:
        while True:
            slots.acquire()
            with ready:  # one worker at a time takes a call, so calls start in order
                i = None if stop.is_set() else next(order, None)
            if i is None:
                return
            try:
                outcome: tuple[T | None, BaseException | None] = (calls[i](), None)
            except BaseException as exc:  # handed to the reader, which raises it
                stop.set()
                outcome = (None, exc)
            with ready:
                done[i] = outcome
                ready.notify_all()

    workers = [
        threading.Thread(target=work, name="gpuledger-prometheus-queries", daemon=True)
        for _ in range(min(in_flight, max(1, len(calls))))
    ]
    for worker in workers:
        worker.start()
    try:
        for i in range(len(calls)):
            with ready:
                ready.wait_for(lambda i=i: i in done)  # type: ignore[misc]
                answer, failure = done.pop(i)
            slots.release()
            if failure is not None:
                raise failure
            yield answer  # type: ignore[misc]  # an answer came, not a failure
    finally:
        stop.set()
        for _ in workers:  # free the workers waiting for a slot; each then sees stop and ends
            slots.release()
        for worker in workers:
            worker.join()


@dataclass(frozen=True)
class _Retry:
    reason: str
    fix: str


def _status(response: bounded.Reply) -> str:
    return f"HTTP {response.status_code} {_one_line(response.reason or '')}".rstrip()


def _json(response: bounded.Reply) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
