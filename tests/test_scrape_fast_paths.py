"""The scraper's fast paths give what the plain ones give: range answers decoded straight to numbers (msgspec, with
the plain decoding behind it), whole series mapped at once (``rows_from_series``), and queries pipelined one ahead."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading

import pyarrow as pa
import pytest

from collector.dcgm import DcgmSeries, rows_from_points, rows_from_series
from collector.errors import SourceRejected
from collector.prometheus.client import PrometheusClient, pipelined
from collector.prometheus.series import Timestamps, dcgm_series
from tests.prometheus_server import Answer, StubServer, make_history

SPAN = (1_790_000_040, 1_790_000_220)
VALUES = ["1", "0.30000000000000004", "1e3", "-0.0", "12.5", "-1e-400"]


def matrix(values: list[str]) -> str:
    series = {
        "metric": {"__name__": "DCGM_FI_DEV_GPU_UTIL", "UUID": "GPU-1", "gpu": "0", "Hostname": "n1"},
        "values": [[SPAN[0] + 60 * i, v] for i, v in enumerate(values)],
    }
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [series]}})


def numbers(values: list[str]) -> list[tuple[float, float]]:
    return [(float(SPAN[0] + 60 * i), float(v)) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    "values",
    [VALUES, [*VALUES, "+Inf", "-Inf", "NaN"], [*VALUES, "-0"]],
    ids=["numbers (msgspec)", "+Inf, which msgspec does not read (plain decoding)", "-0 (plain decoding)"],
)
def test_range_series_are_the_plain_answers_numbers(values: list[str]) -> None:
    with StubServer([Answer(200, matrix(values))]) as stub:
        client = PrometheusClient(stub.url, env={})
        series = client.query_range_series("q", SPAN, 60)
        plain = client.query_range("q", SPAN, 60)
    assert len(series) == 1 and series[0].metric == plain[0]["metric"]
    got, want = series[0].values, numbers(values)
    assert len(got) == len(want)
    for (t, v), (t_want, v_want) in zip(got, want, strict=True):
        assert t == t_want and (v == v_want or (math.isnan(v) and math.isnan(v_want)))
        assert math.copysign(1.0, v) == math.copysign(1.0, v_want)  # "-0" and "-0.0" stay -0.0


def test_dcgm_series_keep_finite_values_and_share_one_labels_object() -> None:
    with StubServer([Answer(200, matrix([*VALUES, "+Inf", "NaN"]))]) as stub:
        client = PrometheusClient(stub.url, env={})
        known: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        util = dcgm_series("DCGM_FI_DEV_GPU_UTIL", client.query_range_series("a", SPAN, 60), known)
        temp = dcgm_series("DCGM_FI_DEV_GPU_TEMP", client.query_range_series("b", SPAN, 60), known)
    assert [s.samples for s in util] == [numbers(VALUES)]
    assert util[0].labels == {"UUID": "GPU-1", "gpu": "0", "Hostname": "n1"}
    assert temp[0].labels is util[0].labels  # read once by the mapping


def test_malformed_range_series_are_rejected_in_one_line() -> None:
    bad = json.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "x"]]}]}}
    )
    with StubServer([Answer(200, bad)]) as stub, pytest.raises(SourceRejected) as rejected:
        PrometheusClient(stub.url, env={}).query_range_series("q", SPAN, 60)
    assert str(rejected.value) == (
        f"Prometheus at {stub.url} refused the request (a range query answered with malformed series (ValueError)): "
        "pass Prometheus' base URL (the one whose /api/v1/query_range answers), e.g. http://prometheus:9090"
    )


def as_series(points: list) -> list[DcgmSeries]:
    """The points regrouped as whole series (consecutive points of one name and one labels object), in order."""
    out: list[DcgmSeries] = []
    for p in points:
        if out and out[-1].name == p.name and out[-1].labels is p.labels:
            out[-1].samples.append((p.ts.timestamp(), p.value))
        else:
            out.append(DcgmSeries(p.name, p.labels, [(p.ts.timestamp(), p.value)]))
    return out


def test_rows_from_series_are_rows_from_points() -> None:
    """The test cluster's history (pods by dcgm-exporter labels, an exporter's own pod, MIG instances, per-process
    series) mapped point by point and series by series."""
    points = make_history(1_790_000_000).dcgm_points()
    points.append(points[0]._replace(value=float("inf")))  # dropped and logged alike
    by_points = rows_from_points(points, cluster="c", source="prometheus")
    by_series = rows_from_series(as_series(points), cluster="c", source="prometheus", when=Timestamps())
    for table in ("samples", "allocations"):
        want: pa.Table = getattr(by_points, table)
        got: pa.Table = getattr(by_series, table)
        assert got.schema == want.schema and got.to_pylist() == want.to_pylist(), table
    assert by_series.samples.num_rows > 0 and by_series.allocations.num_rows > 0


def test_pipelined_keeps_order_and_stops_at_the_first_failure() -> None:
    called: list[int] = []

    def call(i: int) -> int:
        called.append(i)
        if i == 2:
            raise SourceRejected("Prometheus", "http://p", "no", "fix")
        return i * 10

    answers = pipelined([lambda i=i: call(i) for i in range(5)])
    assert [next(answers), next(answers)] == [0, 10]
    with pytest.raises(SourceRejected):
        next(answers)
    assert called == [0, 1, 2]  # nothing is sent after a failure


def test_closing_pipelined_early_stops_the_worker() -> None:
    called: list[int] = []
    answers = pipelined([lambda i=i: called.append(i) or i for i in range(50)])
    assert next(answers) == 0
    answers.close()
    assert len(called) <= 3  # the one read, at most one waiting and one in flight
    assert not [t for t in threading.enumerate() if t.name == "gpuledger-prometheus-queries"]


def test_timestamps_stay_exact() -> None:
    ts = dt.datetime(2026, 3, 10, 3, 41, 29, 184000, tzinfo=dt.UTC)
    rows = rows_from_series(
        [DcgmSeries("DCGM_FI_DEV_GPU_TEMP", {"UUID": "GPU-1"}, [(ts.timestamp(), 40.0)])],
        cluster="c",
        source="prometheus",
        when=Timestamps(),
    )
    assert rows.samples.column("ts").to_pylist() == [ts]
