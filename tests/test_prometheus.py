"""The Prometheus scraper against a real Prometheus (backfilled with promtool) and tiny local HTTP servers.

The chunk planning and credentials are pure and tested without a server (the kube-state-metrics mapping in
tests/test_kube_state.py); everything about the wire (chunking, the watermark, retries, a server killed mid-scrape,
error lines) runs against real servers, through the warehouse store `gpuledger scrape` wires in.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from collector.dcgm import rows_from_points
from collector.errors import CollectorError, SourceRejected, SourceUnreachable
from collector.prometheus.client import MAX_POINTS_PER_SERIES, PrometheusClient
from collector.prometheus.credentials import credentials_from_env
from collector.prometheus.scraper import DCGM_METRICS, PARTS, PrometheusScraper, dcgm_parts
from collector.prometheus.spans import merge_spans, plan_chunks, subtract_spans
from gpuledger.jobs import scrape_store
from tests import prometheus_server
from tests.prometheus_server import (
    A100,
    EMPTY_MATRIX,
    H100,
    NODE_A,
    NODE_B,
    NODE_CPU,
    PROVIDER_IDS,
    UUID_A0,
    UUID_B0,
    Answer,
    CountingSession,
    History,
    PrometheusServer,
    StubServer,
    free_port,
)
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES, NODES

history = prometheus_server.history
tsdb_template = prometheus_server.tsdb_template
start_prometheus = prometheus_server.start_prometheus
prometheus = prometheus_server.prometheus
clean_env = prometheus_server.clean_env

CLUSTER = "c1"
SECRET = "s3cr3t-Tok3n-do-not-print"
T0 = dt.datetime(2024, 11, 2, 23, 58, tzinfo=dt.UTC)


KUBE_QUERIES = 10
QUERIES_PER_CHUNK = len(DCGM_METRICS) + KUBE_QUERIES
"""For a chunk of one part (at most 2 x PART_MIN_STEPS steps): one range query per DCGM field, then kube_node_labels,
kube_pod_owner, the running pods' GPU requests, kube_node_info, kube_replicaset_owner, kube_job_owner, the GPU pods'
CPU and memory requests, and the node agents' gpuledger_node_info, gpuledger_pod_owner and gpuledger_pod_requests."""


def queries_of(span: tuple[int, int], step_s: int = 60) -> int:
    """A chunk's queries: the kube-state-metrics and agent ones once, the DCGM ones once per part."""
    parts = dcgm_parts(span, step_s)
    assert sum(b - a for a, b in parts) == span[1] - span[0] and len(parts) <= PARTS  # the parts cover the chunk
    return KUBE_QUERIES + len(DCGM_METRICS) * len(parts)


def no_sleep(_seconds: float) -> None:
    return None


CLIENT_OPTIONS = {"session", "headers", "env", "sleep", "timeout_s", "tries", "backoff_s", "max_body_mib"}


def client(url: str, **kwargs: object) -> PrometheusClient:
    options: dict[str, object] = {"env": {}, "sleep": no_sleep}
    options.update(kwargs)
    return PrometheusClient(url, **options)  # type: ignore[arg-type]


def scraper(url: str, lake: Lake, **kwargs: object) -> PrometheusScraper:
    """A scraper of ``url`` into ``lake``, wired as `gpuledger scrape` wires it; ``kwargs`` go to the client or the
    scraper by name."""
    http = {name: kwargs.pop(name) for name in CLIENT_OPTIONS & kwargs.keys()}
    return PrometheusScraper(
        client(url, **http),
        cluster=CLUSTER,
        store=scrape_store(lake),
        read_state=lake.read_state,
        **kwargs,  # type: ignore[arg-type]
    )


def at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


# ------------------------------------------------------------------------------------------------- expectations


def expected_samples(history: History) -> pl.DataFrame:
    table = rows_from_points(history.dcgm_points(), cluster=CLUSTER, source="prometheus").samples
    return _sorted_samples(pl.from_arrow(table))  # type: ignore[arg-type]


def expected_allocations(history: History) -> pl.DataFrame:
    rows = [
        {
            "ts": at(t),
            "cluster": CLUSTER,
            "node": h.node,
            "gpu_uuid": h.gpu_uuid,
            "mig_instance_id": h.mig_instance_id,
            "namespace": h.namespace,
            "pod": h.pod,
            "container": h.container,
            "workload": h.workload,
            "source": "prometheus",
            "owner_kind": h.owner_kind,
            "owner_name": h.owner_name,
            "owner_chain": h.owner_chain,
            "cpu_request": h.cpu_request,
            "memory_request_bytes": h.memory_request_bytes,
        }
        for h in history.holdings
        for t in history.times
        if t >= h.since
    ]
    frame = pl.from_arrow(pa.Table.from_pylist(rows, schema=GPU_ALLOCATIONS.schema))
    assert isinstance(frame, pl.DataFrame)
    return _sorted_allocations(frame)


def _sorted_samples(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("gpu_uuid", "mig_instance_id", "ts", nulls_last=True)


def _sorted_allocations(frame: pl.DataFrame) -> pl.DataFrame:
    columns = [c for c in GPU_ALLOCATIONS.columns if c not in ("pid", "process_fb_used_bytes", "process_util_pct")]
    return frame.select(columns).sort("gpu_uuid", "mig_instance_id", "ts", "pod", nulls_last=True)


def stored(lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return (
        _sorted_samples(lake.scan(GPU_SAMPLES).collect()),
        _sorted_allocations(lake.scan(GPU_ALLOCATIONS).collect()),
        lake.scan(NODES).collect().sort("node", "date"),
    )


def assert_matches_history(lake: Lake, history: History) -> None:
    samples, allocations, nodes = stored(lake)
    assert_frame_equal(samples, expected_samples(history))
    assert_frame_equal(allocations, expected_allocations(history))
    dates = sorted({at(t).date() for t in history.times})
    assert nodes.height == 3 * len(dates)
    assert nodes.select("node", "date").rows() == [(n, d) for n in sorted((NODE_A, NODE_B, NODE_CPU)) for d in dates]


# ------------------------------------------------------------------------------------------------- spans and plans


def test_spans_and_chunks() -> None:
    assert merge_spans([(60, 120), (0, 60), (300, 360), (330, 420)]) == [(0, 120), (300, 420)]
    assert subtract_spans((0, 600), [(120, 240), (480, 900)]) == [(0, 120), (240, 480)]
    assert subtract_spans((0, 600), [(0, 600)]) == []
    assert plan_chunks([(0, 600), (900, 960)], step_s=60, max_steps=4) == [(0, 240), (240, 480), (480, 600), (900, 960)]


def test_plan_keeps_every_query_within_prometheus_limit(lake: Lake) -> None:
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    big = scraper("http://prometheus:9090", lake, clock=lambda: now, chunk_s=10**9)
    chunks = big.plan(now - dt.timedelta(days=10), now)  # 14,400 steps of 60 s
    steps = [(b - a) // 60 for a, b in chunks]
    assert steps == [MAX_POINTS_PER_SERIES, 14_400 - 2 - MAX_POINTS_PER_SERIES]  # the last 120 s are not settled
    default = scraper("http://prometheus:9090", lake, clock=lambda: now)
    assert all((b - a) // 60 <= 360 for a, b in default.plan(now - dt.timedelta(days=10), now))


def test_credentials_come_from_env_or_files_and_never_show(tmp_path: Path, lake: Lake) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    bearer = credentials_from_env({"GPULEDGER_PROMETHEUS_TOKEN_FILE": str(token_file)})
    assert bearer.headers == {"Authorization": f"Bearer {SECRET}"}
    password_file = tmp_path / "password"
    password_file.write_text(SECRET)
    basic = credentials_from_env(
        {"GPULEDGER_PROMETHEUS_USER": "bob", "GPULEDGER_PROMETHEUS_PASSWORD_FILE": str(password_file)}
    )
    assert basic.auth == ("bob", SECRET)
    for creds in (bearer, basic):
        assert SECRET not in repr(creds)
    probe = scraper("http://u:pw@prometheus:9090/prom/", lake, env={"GPULEDGER_PROMETHEUS_TOKEN": SECRET})
    assert SECRET not in repr(probe) and "pw" not in repr(probe)
    assert SECRET not in repr(probe.client) and "pw" not in repr(probe.client)
    assert probe.client.url == "http://prometheus:9090/prom"
    with pytest.raises(CollectorError, match="keep one way"):
        credentials_from_env({"GPULEDGER_PROMETHEUS_TOKEN": SECRET, "GPULEDGER_PROMETHEUS_USER": "bob"})
    with pytest.raises(CollectorError, match="GPULEDGER_PROMETHEUS_PASSWORD is not set"):
        credentials_from_env({"GPULEDGER_PROMETHEUS_USER": "bob"})
    with pytest.raises(CollectorError) as missing:
        credentials_from_env({"GPULEDGER_PROMETHEUS_TOKEN_FILE": str(tmp_path / "nope")})
    assert str(missing.value) == (
        f"GPULEDGER_PROMETHEUS_TOKEN_FILE names {tmp_path / 'nope'}, which cannot be read (No such file or "
        "directory): fix the path or mount the secret there"
    )


# ------------------------------------------------------------------------------------------------- a real Prometheus


def test_scrape_stores_exactly_the_history(lake: Lake, prometheus: PrometheusServer, history: History) -> None:
    progress: list[tuple[int, int]] = []
    result = scraper(prometheus.url, lake).scrape(
        history.start_dt, history.end_dt, progress=lambda *p: progress.append(p)
    )
    assert_matches_history(lake, history)
    samples, allocations, nodes = stored(lake)
    assert (result.samples, result.allocations, result.nodes) == (samples.height, allocations.height, nodes.height)
    span = (history.start, history.end + 60)
    assert result.chunks == 1 and result.queries == queries_of(span) and progress == [(0, 1), (1, 1)]
    assert queries_of(span) == KUBE_QUERIES + PARTS * len(DCGM_METRICS)  # 4 h at 60 s: DCGM asked in 3 parts
    assert result.watermark == history.end_dt
    # units and labels, spot-checked against the OpenMetrics history itself
    first = samples.filter(pl.col("gpu_uuid") == UUID_A0).row(0, named=True)
    assert (first["node"], first["gpu_model"], first["util_pct"], first["sm_active"]) == (NODE_A, H100, 0.0, 0.0)
    assert first["fb_used_bytes"] == 1000 * 2**20 and first["fb_total_bytes"] == 81559 * 2**20
    assert first["energy_j"] == 1_000_000.0
    mig = samples.filter(pl.col("mig_instance_id") == 14).row(0, named=True)
    assert (mig["node"], mig["mig_profile"], mig["gpu_uuid"], mig["fb_total_bytes"]) == (
        NODE_B,
        "1g.5gb",
        UUID_B0,
        4864 * 2**20,
    )
    # CPU and memory requests summed over the pod's containers (init containers not counted); none: null
    requests = allocations.group_by("pod").agg(pl.col("cpu_request", "memory_request_bytes").unique())
    assert sorted(requests.rows()) == [
        ("batch-eval-28931460-q7x2z", [1.0], [2 * 2**30]),
        ("infer-5f7c9d8b4-kx2qz", [2.5], [8_000_000_000]),
        ("llama-ft-worker-0", [None], [None]),
        ("notebook-0", [4.0], [None]),
        ("trainer-7d9f8b6c5d-x2k4q", [4.25], [16 * 2**30 + 256 * 2**20]),
    ]
    by_node = {r["node"]: r for r in nodes.iter_rows(named=True)}
    assert {n: r["capacity_type"] for n, r in by_node.items()} == {
        NODE_A: "spot",
        NODE_B: "on-demand",
        NODE_CPU: "spot",
    }
    assert (by_node[NODE_B]["gpu_model"], by_node[NODE_B]["gpu_count"], by_node[NODE_B]["mig_strategy"]) == (
        A100,
        2,
        "mixed",
    )
    assert (by_node[NODE_A]["instance_type"], by_node[NODE_A]["zone"], by_node[NODE_A]["region"]) == (
        "p5.48xlarge",
        "us-east-1a",
        "us-east-1",
    )
    assert by_node[NODE_CPU]["gpu_model"] is None
    assert set(nodes.select("node", "provider_id").rows()) == set(PROVIDER_IDS.items())  # what a bill names


def test_a_second_scrape_fetches_nothing_and_an_earlier_window_only_the_gap(
    lake: Lake, prometheus: PrometheusServer, history: History
) -> None:
    later = history.start_dt + dt.timedelta(hours=1)
    session = CountingSession()
    scrape = scraper(prometheus.url, lake, session=session)
    assert scrape.scrape(later, history.end_dt).chunks == 1
    before = [t.height for t in stored(lake)]
    again = scrape.scrape(later, history.end_dt)
    assert (again.chunks, again.queries, again.points, again.samples) == (0, 0, 0, 0)
    assert [t.height for t in stored(lake)] == before
    sent = len(session.sent)
    wider = scrape.scrape(history.start_dt, history.end_dt)
    assert wider.chunks == 1 and wider.queries == QUERIES_PER_CHUNK
    assert {(q["start"], q["end"]) for q in session.sent[sent:]} == {
        (str(history.start), str(int(later.timestamp()) - 60))
    }
    assert_matches_history(lake, history)
    state = lake.read_state(scrape.state_name)
    assert state is not None and state["done"] == [[history.start, history.end + 60]] and state["url"] == prometheus.url


def test_a_window_of_more_than_11000_steps_is_split(lake: Lake, prometheus: PrometheusServer, history: History) -> None:
    session = CountingSession()
    fine = scraper(prometheus.url, lake, session=session, step_s=1, chunk_s=86_400)
    result = fine.scrape(history.start_dt, history.end_dt)  # 4 h at 1 s: 14,400+ steps
    assert result.chunks == 2 and result.queries == 2 * (KUBE_QUERIES + PARTS * len(DCGM_METRICS)) == len(session.sent)
    points_per_query = [(int(q["end"]) - int(q["start"])) // int(q["step"]) + 1 for q in session.sent]
    assert max(points_per_query) == MAX_POINTS_PER_SERIES
    assert sum(points_per_query) == QUERIES_PER_CHUNK * (history.end - history.start + 60)
    assert_matches_history(lake, history)  # every sample once, at its own timestamp


@pytest.mark.parametrize("kill_at", ["between chunks", "inside a chunk"])
def test_a_server_killed_mid_scrape_loses_nothing(
    lake: Lake, start_prometheus: Callable[[], PrometheusServer], history: History, kill_at: str
) -> None:
    server = start_prometheus()

    def kill_between(done: int, _total: int) -> None:
        if done == 1 and kill_at == "between chunks":
            server.kill()

    def kill_inside(sent: int) -> None:
        if sent == QUERIES_PER_CHUNK + 5 and kill_at == "inside a chunk":  # the 5th query of the 2nd chunk
            server.kill()

    sleeps: list[float] = []
    chunked = scraper(
        server.url, lake, session=CountingSession(kill_inside), max_points_per_series=60, sleep=sleeps.append
    )
    with pytest.raises(SourceUnreachable) as lost:
        chunked.scrape(history.start_dt, history.end_dt, progress=kill_between)
    assert str(lost.value).startswith(
        f"Prometheus at {server.url} cannot be reached (connection refused, after 5 tries)"
    )
    backoff = [0.5, 1.0, 2.0, 4.0]  # each query under way (two at once) retried alike, then the error
    assert len(sleeps) in (4, 8) and sorted(sleeps) == sorted(backoff * (len(sleeps) // 4))
    assert chunked.done_spans() == [(history.start, history.start + 3600)]
    assert lake.scan(GPU_SAMPLES).collect().get_column("ts").max() == at(history.start + 3600 - 60)

    server.start()  # the same data directory and port
    resumed = scraper(server.url, lake, max_points_per_series=60).scrape(history.start_dt, history.end_dt)
    assert resumed.chunks == 3 and resumed.queries == 3 * QUERIES_PER_CHUNK
    assert_matches_history(lake, history)


# ------------------------------------------------------------------------------------------------- errors, one line


def test_a_refused_connection_is_retried_then_one_line(lake: Lake) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sleeps: list[float] = []
    with pytest.raises(SourceUnreachable) as refused:
        # one query under way at a time: one query's backoff (two at once each retry alike: see the kill test)
        scraper(url, lake, sleep=sleeps.append, in_flight=1).scrape(T0, T0 + dt.timedelta(hours=1))
    assert str(refused.value) == (
        f"Prometheus at {url} cannot be reached (connection refused, after 5 tries): check the --prometheus URL and "
        "that Prometheus is running (e.g. `kubectl -n monitoring port-forward svc/prometheus-operated 9090`)"
    )
    assert sleeps == [0.5, 1.0, 2.0, 4.0]


def test_a_wrong_url_is_one_line(lake: Lake) -> None:
    fix = "pass Prometheus' base URL (the one whose /api/v1/query_range answers), e.g. http://prometheus:9090"
    page = Answer(404, "<html><body>Not Found</body></html>", "text/html")
    with StubServer([page]) as stub, pytest.raises(SourceRejected) as not_prometheus:
        scraper(stub.url + "/graph", lake).scrape(T0, T0 + dt.timedelta(hours=1))
    assert str(not_prometheus.value) == (
        f"Prometheus at {stub.url}/graph refused the request (HTTP 404 for /api/v1/query_range): {fix}"
    )
    with StubServer([Answer(200, "<html>Grafana</html>", "text/html")]) as stub, pytest.raises(SourceRejected) as html:
        scraper(stub.url, lake).scrape(T0, T0 + dt.timedelta(hours=1))
    assert (
        str(html.value)
        == f"Prometheus at {stub.url} refused the request (HTTP 200 OK, not a Prometheus API answer): {fix}"
    )
    with pytest.raises(SourceUnreachable) as unknown:
        scraper("http://prometheus.invalid:9090", lake, tries=1).scrape(T0, T0 + dt.timedelta(hours=1))
    assert str(unknown.value).startswith(
        "Prometheus at http://prometheus.invalid:9090 cannot be reached (host name not found, after 1 tries): "
    )
    with pytest.raises(SourceUnreachable) as schemeless:
        client("prometheus:9090")
    assert str(schemeless.value) == f"Prometheus at prometheus:9090 cannot be reached (not an http(s) URL): {fix}"


def test_an_auth_failure_is_one_line_without_the_secret(
    lake: Lake,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    clean_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GPULEDGER_PROMETHEUS_TOKEN", SECRET)
    with StubServer([Answer(401, '{"error":"unauthorized"}')]) as stub, pytest.raises(SourceRejected) as denied:
        scraper(stub.url, lake, env=None).scrape(T0, T0 + dt.timedelta(hours=1))  # credentials from os.environ
    assert stub.requests[0]["authorization"] == f"Bearer {SECRET}"  # it was sent
    assert str(denied.value) == (
        f"Prometheus at {stub.url} refused the request (HTTP 401 Unauthorized): the bearer token from "
        "GPULEDGER_PROMETHEUS_TOKEN was not accepted: renew it or check what it may read"
    )
    monkeypatch.delenv("GPULEDGER_PROMETHEUS_TOKEN")
    password = tmp_path / "password"
    password.write_text(SECRET)
    env = {"GPULEDGER_PROMETHEUS_USER": "bob", "GPULEDGER_PROMETHEUS_PASSWORD_FILE": str(password)}
    with StubServer([Answer(403, "forbidden", "text/plain")]) as stub, pytest.raises(SourceRejected) as forbidden:
        scraper(stub.url.replace("//", f"//alice:{SECRET}@"), lake, env=env).scrape(T0, T0 + dt.timedelta(hours=1))
    assert str(forbidden.value) == (
        f"Prometheus at {stub.url} refused the request (HTTP 403 Forbidden): the user and password from "
        "GPULEDGER_PROMETHEUS_USER/GPULEDGER_PROMETHEUS_PASSWORD was not accepted: renew it or check what it may read"
    )
    with StubServer([Answer(401, "")]) as stub, pytest.raises(SourceRejected) as anonymous:
        scraper(stub.url, lake, env=None, sleep=time.sleep).scrape(T0, T0 + dt.timedelta(hours=1))
    assert str(anonymous.value).endswith(
        "(HTTP 401 Unauthorized): it needs credentials: set GPULEDGER_PROMETHEUS_TOKEN (or "
        "GPULEDGER_PROMETHEUS_TOKEN_FILE) for a bearer token, or GPULEDGER_PROMETHEUS_USER with "
        "GPULEDGER_PROMETHEUS_PASSWORD (or GPULEDGER_PROMETHEUS_PASSWORD_FILE) for basic auth"
    )
    for message in (str(denied.value), str(forbidden.value), str(anonymous.value)):
        assert SECRET not in message and "\n" not in message
    assert caplog.records and SECRET not in caplog.text  # urllib3's debug lines included


def test_server_errors_and_timeouts_are_retried_with_backoff(lake: Lake) -> None:
    sleeps: list[float] = []
    # The chunk's answers are empty, so the scrape then asks whether the server holds DCGM series at all; this one
    # says it does (DCGM_FI_DEV_GPU_UTIL), so the empty chunk is a gap, stored as done.
    has_dcgm = json.dumps({"status": "success", "data": ["DCGM_FI_DEV_GPU_UTIL"]})
    flaky = [Answer(503, "unavailable", "text/plain"), Answer(502, "")]
    flaky += [Answer(200, EMPTY_MATRIX)] * QUERIES_PER_CHUNK + [Answer(200, has_dcgm)]
    with StubServer(flaky) as stub:
        # one query under way at a time, so the stub's two failures fall on the same query
        result = scraper(stub.url, lake, sleep=sleeps.append, in_flight=1).scrape(T0, T0 + dt.timedelta(minutes=10))
    assert (result.chunks, result.queries, result.points) == (1, QUERIES_PER_CHUNK + 2 + 1, 0)  # two retried
    assert sleeps == [0.5, 1.0]
    with StubServer([Answer(200, EMPTY_MATRIX, delay_s=1.0)]) as stub, pytest.raises(SourceUnreachable) as slow:
        scraper(stub.url, lake, timeout_s=0.2, tries=2, backoff_s=0.05).scrape(T0, T0 + dt.timedelta(hours=1))
    assert str(slow.value).startswith(
        f"Prometheus at {stub.url} cannot be reached (no answer within 0.2 s, after 2 tries)"
    )
    with StubServer([Answer(500, "")]) as stub, pytest.raises(SourceUnreachable) as broken:
        scraper(stub.url, lake, tries=3).scrape(T0, T0 + dt.timedelta(hours=1))
    assert str(broken.value) == (
        f"Prometheus at {stub.url} cannot be reached (HTTP 500 Internal Server Error, after 3 tries): check "
        "Prometheus' health and logs, then re-run: finished chunks are kept"
    )


def test_a_query_error_is_one_line(lake: Lake) -> None:
    body = json.dumps(
        {"status": "error", "errorType": "execution", "error": "query processing would load too many\nsamples"}
    )
    with StubServer([Answer(422, body)]) as stub, pytest.raises(SourceRejected) as failed:
        scraper(stub.url, lake).scrape(T0, T0 + dt.timedelta(hours=1))
    message = str(failed.value)
    assert message.startswith(f"Prometheus at {stub.url} refused the request (HTTP 422 ")
    assert ": query processing would load too many samples): the server could not evaluate" in message


def test_the_scrape_command_then_a_report(
    cli: Callable[..., object], prometheus: PrometheusServer, history: History, tmp_path: Path
) -> None:
    """As a user runs it: `gpuledger scrape` twice (the second adds nothing), then `gpuledger report`."""
    wh = tmp_path / "wh"
    args = [
        "scrape",
        "--prometheus",
        prometheus.url,
        "--warehouse",
        str(wh),
        "--start",
        history.start_dt.isoformat(),
        "--end",
        history.end_dt.isoformat(),
    ]
    first = cli(*args)
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    samples = len({(p.labels["UUID"], p.labels.get("GPU_I_ID"), p.ts) for p in history.dcgm_points()})
    assert f"{samples:,} samples" in first.stderr  # type: ignore[attr-defined]
    second = cli(*args)
    assert "in 0 chunks (0 queries): 0 samples" in second.stderr  # type: ignore[attr-defined]
    report = json.loads(cli("report", "--warehouse", str(wh), "--format", "json").stdout)  # type: ignore[attr-defined]
    # Physical GPUs: a GPU cut into MIG instances counts once.
    assert report["fleet"]["gpus"] == len({p.labels["UUID"] for p in history.dcgm_points()})
    assert sum(report["states"].values()) == pytest.approx(report["fleet"]["gpu_hours"], abs=1e-3)


def test_the_scrape_command_with_a_refused_connection(cli: Callable[..., object], tmp_path: Path) -> None:
    port = free_port()
    result = cli(
        "scrape", "--prometheus", f"http://127.0.0.1:{port}", "--warehouse", str(tmp_path / "wh"), "--start", "-1h"
    )
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert result.stderr == (  # type: ignore[attr-defined]
        f"Error: Prometheus at http://127.0.0.1:{port} cannot be reached (connection refused, after 5 tries): check "
        "the --prometheus URL and that Prometheus is running (e.g. `kubectl -n monitoring port-forward "
        "svc/prometheus-operated 9090`)\n"
    )
