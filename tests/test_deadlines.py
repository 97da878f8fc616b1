"""Every outbound request ends by its deadline, bodies have a size limit, and `collect`/`scrape` exit honestly.

The servers are real (tests/http_servers.py); the time bounds here only keep a regression from hanging the suite.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from click.testing import Result

from collector.dcgm import DcgmExporterReader
from collector.errors import AnswerTooLarge, SourceRejected, SourceUnreachable
from collector.metrics import LiveMetrics, serve
from collector.prometheus.client import PrometheusClient
from gpuledger import jobs
from gpuledger.settings import Settings
from tests.http_servers import ExporterServer, finishes_within, silent_listener
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

REPO = Path(__file__).resolve().parent.parent
GUARD_S = 60
EXPORTER_FIX = "check the URL and that dcgm-exporter is running (default port 9400)"
PROMETHEUS_FIX = (
    "check the --prometheus URL and that Prometheus is running "
    "(e.g. `kubectl -n monitoring port-forward svc/prometheus-operated 9090`)"
)


@pytest.fixture
def page(fixtures: Path) -> bytes:
    return (fixtures / "dcgm-exporter" / "h100x8_eks_pod_labels.prom").read_bytes()


def gpuledger(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command in its own process; the timeout is the hang guard."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "gpuledger.cli", *args],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )


# ------------------------------------------------------------------------------------------------- dcgm-exporter


def test_a_trickling_exporter_ends_at_the_deadline() -> None:
    with ExporterServer(trickle_s=0.2) as server:
        url = f"{server.url}/trickle"
        with pytest.raises(SourceUnreachable) as info:
            finishes_within(GUARD_S, DcgmExporterReader(url, cluster="c1", timeout_s=1).read)
    assert str(info.value) == (
        f"dcgm-exporter at {url} cannot be reached (the answer did not finish within 1 s): {EXPORTER_FIX}"
    )


def test_headers_sent_a_byte_at_a_time_end_at_the_deadline() -> None:
    with ExporterServer(trickle_s=0.2) as server:
        url = f"{server.url}/slow-headers"
        with pytest.raises(SourceUnreachable) as info:
            finishes_within(GUARD_S, DcgmExporterReader(url, cluster="c1", timeout_s=1).read)
    assert str(info.value) == f"dcgm-exporter at {url} cannot be reached (no answer within 1 s): {EXPORTER_FIX}"


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("/huge", r"40\.0 MiB \(by its Content-Length\)"),
        ("/huge-unsized", r"1\.\d MiB and more \(reading stopped there\)"),
    ],
)
def test_an_exporter_page_over_the_limit_is_refused(path: str, size: str) -> None:
    with ExporterServer() as server:
        url = server.url + path
        with pytest.raises(AnswerTooLarge) as info:
            finishes_within(GUARD_S, DcgmExporterReader(url, cluster="c1", max_body_mib=1).read)
    fix = (
        ", over the 1 MiB limit: raise the exporter_max_body_mib setting (GPULEDGER_EXPORTER_MAX_BODY_MIB) if it "
        "really serves that much, or check the URL"
    )
    pattern = re.escape(f"dcgm-exporter at {url} answered ") + size + re.escape(fix)
    assert re.fullmatch(pattern, str(info.value)), str(info.value)


def test_the_default_limit_takes_a_real_page(page: bytes) -> None:
    with ExporterServer(page) as server:
        rows = DcgmExporterReader(f"{server.url}/metrics", cluster="c1").read()
    assert rows.samples.num_rows == 8


def test_an_empty_page_is_an_error_not_an_empty_sample() -> None:
    with ExporterServer() as server:
        url = f"{server.url}/empty"
        with pytest.raises(SourceRejected) as info:
            DcgmExporterReader(url, cluster="c1").read()
    assert str(info.value) == (
        f"dcgm-exporter at {url} refused the request (the answer held no GPU samples): "
        "check dcgm-exporter's logs and that DCGM can see the GPUs"
    )


def test_collect_once_from_a_trickling_exporter_exits_2(tmp_path: Path) -> None:
    with ExporterServer(trickle_s=0.2) as server:
        url = f"{server.url}/trickle"
        done = gpuledger(
            "collect",
            "--warehouse",
            str(tmp_path / "wh"),
            "--dcgm-exporter",
            url,
            "--once",
            env={"GPULEDGER_EXPORTER_TIMEOUT_S": "1", "GPULEDGER_SPOOL_DIR": str(tmp_path / "spool")},
            cwd=tmp_path,
        )
    assert (done.returncode, done.stderr) == (
        2,
        f"Error: dcgm-exporter at {url} cannot be reached (the answer did not finish within 1 s): {EXPORTER_FIX}\n",
    )
    assert not (tmp_path / "wh").exists() and not (tmp_path / "spool").exists()


def test_collect_with_an_ftp_url_names_the_scheme(cli: Callable[..., Result], tmp_path: Path) -> None:
    result = cli("collect", "--warehouse", str(tmp_path / "wh"), "--dcgm-exporter", "ftp://n1:9400/metrics", "--once")
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: dcgm-exporter URL ftp://n1:9400/metrics has the scheme ftp://, which is not supported: use an "
        "http:// or https:// URL (or HOST:PORT), e.g. http://NODE:9400/metrics\n",
    )


@pytest.mark.parametrize("scheme", ["http", "ftp"])
def test_credentials_in_an_exporter_url_are_never_echoed(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv("GPULEDGER_SPOOL_DIR", str(tmp_path / "spool"))
    with silent_listener() as url:
        port = url.rsplit(":", 1)[1]
    # the listener is closed now: nothing answers on that port
    given = f"{scheme}://admin:s3cret-token@127.0.0.1:{port}/metrics?key=s3cret-token"
    result = cli("collect", "--warehouse", str(tmp_path / "wh"), "--dcgm-exporter", given, "--once")
    assert result.exit_code == 2
    assert "s3cret" not in result.output + result.stderr
    assert f"127.0.0.1:{port}/metrics" in result.stderr


def test_collect_once_with_an_empty_page_exits_2(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPULEDGER_SPOOL_DIR", str(tmp_path / "spool"))
    with ExporterServer() as server:
        url = f"{server.url}/empty"
        result = cli("collect", "--warehouse", str(tmp_path / "wh"), "--dcgm-exporter", url, "--once")
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: dcgm-exporter at {url} refused the request (the answer held no GPU samples): check "
        "dcgm-exporter's logs and that DCGM can see the GPUs\n",
    )


# ------------------------------------------------------------------------------------------------- exit codes


def test_collect_once_into_a_file_exits_2_and_keeps_the_batch(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: bytes
) -> None:
    spool = tmp_path / "spool"
    monkeypatch.setenv("GPULEDGER_SPOOL_DIR", str(spool))
    wh = tmp_path / "wh"
    wh.write_text("not a warehouse")
    with ExporterServer(page) as server:
        result = cli("collect", "--warehouse", str(wh), "--dcgm-exporter", f"{server.url}/metrics", "--once")
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: the sample was not stored (warehouse {wh} cannot be used: it is not a directory; check the path "
        f"and its permissions); it is kept in the spool {spool} for the next `gpuledger collect` to store: make "
        f"warehouse {wh} a writable directory or pass another --warehouse\n",
    )
    wh.unlink()
    with ExporterServer(page) as server:
        again = cli("collect", "--warehouse", str(wh), "--dcgm-exporter", f"{server.url}/metrics", "--once")
    assert again.exit_code == 0, again.output
    assert "1 replayed" in again.stderr
    assert Lake(wh).scan(GPU_SAMPLES).collect().height == 16  # the spooled sample and the new one


def test_a_never_answering_prometheus_ends_and_leaves_no_warehouse(tmp_path: Path) -> None:
    wh = tmp_path / "new" / "wh"
    with silent_listener() as url:
        done = gpuledger(
            "scrape",
            "--prometheus",
            url,
            "--warehouse",
            str(wh),
            "--start",
            "-1h",
            env={"GPULEDGER_PROMETHEUS_TIMEOUT_S": "0.5"},
            cwd=tmp_path,
        )
    assert (done.returncode, done.stderr) == (
        2,
        f"Error: Prometheus at {url} cannot be reached (no answer within 0.5 s, after 1 tries (a query may take "
        f"1 s with its retries)): {PROMETHEUS_FIX}\n",
    )
    assert not (tmp_path / "new").exists()


def test_a_failed_scrape_keeps_a_warehouse_that_was_there(cli: Callable[..., Result], tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    wh.mkdir()
    (wh / "keep.txt").write_text("mine")
    result = cli("scrape", "--prometheus", "ftp://prometheus:9090", "--warehouse", str(wh), "--start", "-1h")
    assert result.exit_code == 2
    assert (wh / "keep.txt").read_text() == "mine"


def test_prometheus_retries_stop_at_twice_the_timeout() -> None:
    """Five tries were allowed, and a real (not injected) wait between them: the query still ends at 2 x 0.4 s."""
    with silent_listener() as url:
        client = PrometheusClient(url, timeout_s=0.4, tries=5, backoff_s=0.1)
        start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
        with pytest.raises(SourceUnreachable) as info:
            span = (int(start.timestamp()), int(start.timestamp()) + 600)
            finishes_within(GUARD_S, client.query_range, "DCGM_FI_DEV_GPU_UTIL", span, 60)
    assert "(no answer within 0.4 s, after 2 tries (a query may take 0.8 s with its retries))" in str(info.value)


def test_a_prometheus_answer_over_the_limit_is_refused() -> None:
    with ExporterServer() as server:
        client = PrometheusClient(server.url + "/huge", max_body_mib=1, sleep=lambda _: None)
        with pytest.raises(AnswerTooLarge) as info:
            finishes_within(GUARD_S, client._get, "", {})
    assert str(info.value) == (
        f"Prometheus at {server.url}/huge answered 40.0 MiB (by its Content-Length), over the 1 MiB limit: raise "
        "the prometheus_max_body_mib setting (GPULEDGER_PROMETHEUS_MAX_BODY_MIB) if it really serves that much, "
        "or check the URL"
    )


# ------------------------------------------------------------------------------------------------- /metrics


def test_metrics_serve_on_loopback_by_default_and_say_so_once_bound(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"spool_dir": tmp_path / "spool"})
    bound: list[tuple[str, int]] = []

    def read() -> object:
        if bound:  # reached only after the server said it is serving: it answers now
            assert requests.get(f"http://127.0.0.1:{bound[0][1]}/metrics", timeout=5).status_code == 200
        from collector.rows import Rows

        return Rows.empty()

    jobs.run_agent(
        tmp_path / "wh",
        read,  # type: ignore[arg-type]
        settings,
        interval_s=0.05,
        once=True,
        metrics_port=0,
        on_serving=lambda addr, port: bound.append((addr, port)),
    )
    assert len(bound) == 1 and bound[0][0] == "127.0.0.1"


def test_a_busy_metrics_port_is_one_line(cli: Callable[..., Result], tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = cli(
            "collect",
            "--warehouse",
            str(tmp_path / "wh"),
            "--dcgm-exporter",
            "http://127.0.0.1:9/metrics",
            "--metrics-port",
            str(port),
            "--duration",
            "0.1",
        )
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: cannot serve /metrics on 127.0.0.1:{port} (address already in use): pass another --metrics-port "
        "(or --metrics-addr), or stop what holds that port\n",
    )


def test_serve_defaults_to_loopback() -> None:
    server = serve(LiveMetrics(), 0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
