"""A range query's answer as values: its series, their timestamps, and DCGM points.

Prometheus' JSON gives each series as ``{"metric": {labels}, "values": [[seconds, "text"], ...]}``; anything else is
a :class:`SourceRejected` naming the URL (:func:`parsed`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from collector.dcgm import DcgmPoint
from collector.errors import SourceRejected
from collector.prometheus.client import NOT_PROMETHEUS_FIX, WHAT

SOURCE = "prometheus"
"""The ``source`` of every row read from Prometheus."""


class Series(NamedTuple):
    """One series of a range query's answer: its labels (``__name__`` removed) and its (epoch seconds, value)."""

    labels: Mapping[str, str]
    values: list[tuple[float, float]]


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp(seconds: float) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=round(seconds * 1_000_000))


class Timestamps:
    """Epoch seconds to aware datetimes, cached: a chunk's points share a few hundred step times."""

    def __init__(self) -> None:
        self._cache: dict[float, dt.datetime] = {}

    def __call__(self, seconds: float) -> dt.datetime:
        value = self._cache.get(seconds)
        if value is None:
            value = self._cache[seconds] = timestamp(seconds)
        return value


def dcgm_points(
    metric: str, result: Iterable[Mapping[str, Any]], when: Callable[[float], dt.datetime]
) -> list[DcgmPoint]:
    """One DcgmPoint per finite value of a range query's ``result`` (its series as Prometheus' JSON has them)."""
    points: list[DcgmPoint] = []
    append = points.append
    for item in result:
        labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
        for seconds, text in item["values"]:
            value = float(text)
            if value - value == 0.0:  # finite: NaN and infinities give NaN
                append(DcgmPoint(metric, labels, when(seconds), value))
    return points


def parse_series(result: list[dict[str, Any]]) -> list[Series]:
    return [
        Series(
            {k: v for k, v in item["metric"].items() if k != "__name__"},
            [(float(t), float(v)) for t, v in item["values"]],
        )
        for item in result
    ]


T = TypeVar("T")


def parsed(url: str, parse: Callable[[list[dict[str, Any]]], T], result: list[dict[str, Any]]) -> T:
    """``parse(result)``, or SourceRejected when the series are not shaped as Prometheus' API shapes them."""
    try:
        return parse(result)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"a range query answered with malformed series ({type(exc).__name__})"
        raise SourceRejected(WHAT, url, reason, NOT_PROMETHEUS_FIX) from None
