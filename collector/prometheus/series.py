"""A range query's answer as values: its series, their timestamps, and DCGM points.

Prometheus' JSON gives each series as ``{"metric": {labels}, "values": [[seconds, "text"], ...]}``; anything else is
a :class:`SourceRejected` naming the URL (:func:`parsed`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from collector.dcgm import DcgmSeries
from collector.errors import SourceRejected
from collector.prometheus.client import MALFORMED_SERIES, NOT_PROMETHEUS_FIX, WHAT, RangeSeries

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


def dcgm_series(
    metric: str, result: Iterable[RangeSeries], known: dict[tuple[tuple[str, str], ...], dict[str, str]] | None = None
) -> list[DcgmSeries]:
    """The series of a range query's answer (:meth:`PrometheusClient.query_range_series`) with their finite values,
    each sample as (epoch seconds, value), for :func:`collector.dcgm.rows_from_series`. ``known``: the label sets
    already seen (in this chunk's other answers): a GPU's series of every metric then share one labels object, which
    the mapping reads once. Each series' ``metric`` dict is taken over as its labels (``__name__`` removed from it).
    """
    known = {} if known is None else known
    out: list[DcgmSeries] = []
    for item in result:
        labels = item.metric
        labels.pop("__name__", None)
        labels = known.setdefault(tuple(labels.items()), labels)
        finite = [sample for sample in item.values if sample[1] - sample[1] == 0.0]  # NaN and infinities give NaN
        out.append(DcgmSeries(metric, labels, finite))
    return out


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
        raise SourceRejected(WHAT, url, MALFORMED_SERIES.format(type(exc).__name__), NOT_PROMETHEUS_FIX) from None
