"""The scraper's fast paths give what the plain ones give: range answers decoded straight to numbers (msgspec, with
the plain decoding behind it), whole series mapped at once (``rows_from_series``, as arrays where a GPU's series
allow it), and queries pipelined ahead, one or two under way at once."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import threading

import pyarrow as pa
import pytest

from collector.dcgm import METRICS, DcgmPoint, DcgmSeries, rows_from_points, rows_from_series
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


def random_series(seed: int) -> list[DcgmSeries]:
    """GPUs whose series take every mapping path: a device's own series alone (arrays), one pod's series alone
    (arrays, with its allocation), an exporter's own pod, a DRA MIG claim of this or another profile, and every
    mix that must be read sample by sample (device and pod series together, a second node name, a metric twice,
    repeated or unordered times, values out of range)."""
    r = random.Random(seed)
    names = [*sorted(METRICS), "DCGM_FI_DEV_XID_ERRORS"]
    out: list[DcgmSeries] = []
    for g in range(r.randint(1, 5)):
        base = {"UUID": f"GPU-{seed}-{g}", "gpu": str(g), "modelName": "NVIDIA H100", "Hostname": r.choice(["n1", ""])}
        mode = r.random()
        if mode < 0.25:
            kinds = [{**base, "pod": f"job-{g}-abcde", "namespace": "ns", "container": r.choice(["c", ""])}]
        elif mode < 0.35:
            kinds = [{**base, "pod": "nvidia-dcgm-exporter-wqqqn", "namespace": "gpu-operator", "container": "x"}]
        elif mode < 0.45:
            claimed = r.choice(["1g.10gb", "2g.20gb"])
            mig = {"GPU_I_PROFILE": "1g.10gb", "GPU_I_ID": "3", "dra_claim_name": "cl", "dra_mig_profile": claimed}
            kinds = [{**base, "exported_pod": f"p-{g}", "exported_namespace": "a", **mig}]
        else:
            kinds = [dict(base)]
            if r.random() < 0.3:
                kinds.append({**base, "GPU_I_PROFILE": "1g.10gb", "GPU_I_ID": str(r.randint(1, 7))})
            if r.random() < 0.3:
                kinds.append({**base, "pod": f"train-{g}-abc12-xyz34", "namespace": "ml", "container": "c"})
            if r.random() < 0.1:
                kinds.append({**base, "Hostname": "other"})
        for labels in kinds:
            for name in r.sample(names, r.randint(1, len(names))):
                start = 1_790_000_000 + 60 * r.randint(0, 3)
                times = [start + 60 * i for i in range(r.randint(0, 8))]
                if r.random() < 0.1 and times:
                    times = [*times, times[-1]] if r.random() < 0.5 else times[::-1]
                values = [r.choice([0.0, 1.5, 55.0, 1e30, -1.0, math.nan, 300.0]) for _ in times]
                out.append(DcgmSeries(name, labels, list(zip(times, values, strict=True))))
            if r.random() < 0.2:
                out.append(DcgmSeries(r.choice(names), labels, [(1_790_000_000, 3.0)]))
    if r.random() < 0.5:
        r.shuffle(out)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_series_mapped_as_arrays_are_the_points_mapped_one_by_one(seed: int) -> None:
    series = random_series(seed)
    stamp = Timestamps()
    points = [DcgmPoint(s.name, s.labels, stamp(t), v) for s in series for t, v in s.samples]
    by_points = rows_from_points(points, cluster="c", source="prometheus")
    by_series = rows_from_series(series, cluster="c", source="prometheus", when=Timestamps())
    for table in ("samples", "allocations"):
        want: pa.Table = getattr(by_points, table)
        got: pa.Table = getattr(by_series, table)
        assert got.schema == want.schema, table
        assert got.to_pylist() == want.to_pylist() or same_with_nan(got.to_pylist(), want.to_pylist()), table


def same_with_nan(got: list[dict], want: list[dict]) -> bool:
    """Row lists equal where a NaN equals a NaN (no column should hold one: a mismatch here is a real one)."""

    def same(a: object, b: object) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    return len(got) == len(want) and all(same(g[k], w[k]) for g, w in zip(got, want, strict=True) for k in w)


def test_a_per_process_size_no_int64_holds_is_dropped_not_a_crash() -> None:
    labels = {"UUID": "GPU-1", "Hostname": "n1"}
    pod = {**labels, "pod": "job-abcde", "namespace": "ns"}
    series = [
        DcgmSeries("DCGM_FI_DEV_FB_USED", labels, [(1_790_000_000, 10.0)]),
        DcgmSeries("DCGM_FI_DEV_FB_USED", pod, [(1_790_000_000, 1e30)]),
    ]
    rows = rows_from_series(series, cluster="c", source="prometheus", when=Timestamps())
    assert rows.allocations.column("process_fb_used_bytes").to_pylist() == [None]
    assert rows.samples.column("fb_used_bytes").to_pylist() == [10 * 1024 * 1024]


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


def test_two_in_flight_keep_order_and_send_at_most_one_more_after_a_failure() -> None:
    called: list[int] = []
    gate = threading.Event()

    def call(i: int) -> int:
        called.append(i)
        if i == 3:
            gate.wait(5)  # the failure of 4 lands while 3 is still under way
            return 30
        if i == 4:
            gate.set()
            raise SourceRejected("Prometheus", "http://p", "no", "fix")
        return i * 10

    answers = pipelined([lambda i=i: call(i) for i in range(20)], ahead=2, in_flight=2)
    assert [next(answers) for _ in range(4)] == [0, 10, 20, 30]  # in order, whichever finished first
    with pytest.raises(SourceRejected):
        next(answers)
    assert max(called) <= 5  # 4 failed: at most the one call beside it was sent after
    assert not [t for t in threading.enumerate() if t.name == "gpuledger-prometheus-queries"]


def test_two_in_flight_run_at_once() -> None:
    both = threading.Barrier(2, timeout=5)

    def call(i: int) -> int:
        both.wait()  # only returns when the other call is under way too
        return i

    assert list(pipelined([lambda i=i: call(i) for i in range(4)], in_flight=2)) == [0, 1, 2, 3]


def test_timestamps_stay_exact() -> None:
    ts = dt.datetime(2026, 3, 10, 3, 41, 29, 184000, tzinfo=dt.UTC)
    rows = rows_from_series(
        [DcgmSeries("DCGM_FI_DEV_GPU_TEMP", {"UUID": "GPU-1"}, [(ts.timestamp(), 40.0)])],
        cluster="c",
        source="prometheus",
        when=Timestamps(),
    )
    assert rows.samples.column("ts").to_pylist() == [ts]
