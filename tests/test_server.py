"""`gpuledger server` as a real process on a simulated warehouse: health, readiness, /metrics, the dashboard child,
a clean SIGTERM, and metrics that keep being served while the scrape or a refresh fails."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_server import free_port
from tests.server_process import ServerProcess, clean_env, sim_template, value, warehouse  # noqa: F401  (fixtures)

FAST = {"GPULEDGER_METRICS_EVERY_S": "0.5", "GPULEDGER_ROLLUP_EVERY_S": "0.5"}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()


def launch(started: list[ServerProcess], cwd: Path, *args: str, **env: str) -> ServerProcess:
    server = ServerProcess(list(args), cwd, free_port(), clean_env(**env))
    started.append(server)
    return server


def test_serves_health_readiness_metrics_and_the_dashboard_then_stops_on_sigterm(
    start: list[ServerProcess],
    warehouse: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    dashboard_port = free_port()
    server = launch(start, tmp_path, "--warehouse", str(warehouse), "--dashboard-port", str(dashboard_port))
    assert server.wait_for("/healthz").text == "ok\n"
    assert server.wait_for("/readyz").text == "ready\n"
    metrics = server.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    for name in (
        "gpuledger_gpu_hours",
        "gpuledger_cost_usd",
        "gpuledger_idle_waste_gpu_hours",
        "gpuledger_idle_waste_usd",
        "gpuledger_plan_monthly_savings_usd",
        "gpuledger_node_last_sample_timestamp_seconds",
        "gpuledger_newest_minute_timestamp_seconds",
        "gpuledger_info",
    ):
        assert families[name].samples, name
    assert server.get("/nowhere").status_code == 404
    dashboard = f"http://127.0.0.1:{dashboard_port}/_stcore/health"
    wait_ok(server, dashboard)
    children = psutil.Process(server.process.pid).children(recursive=True)
    assert children, "the dashboard runs as a child process"
    assert server.terminate() == 0, server.output()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.pid for p in alive]
    with pytest.raises(requests.ConnectionError):
        requests.get(dashboard, timeout=2)
    assert "server stopped" in server.output()


def wait_ok(server: ServerProcess, url: str) -> None:
    """Poll ``url`` (the dashboard child's health) until it answers 200, while the server runs."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.output()
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200: {server.output()[-3000:]}")


def test_a_dashboard_that_dies_is_started_again(start: list[ServerProcess], warehouse: Path, tmp_path: Path) -> None:  # noqa: F811
    dashboard_port = free_port()
    server = launch(start, tmp_path, "--warehouse", str(warehouse), "--dashboard-port", str(dashboard_port))
    url = f"http://127.0.0.1:{dashboard_port}/_stcore/health"
    wait_ok(server, url)
    (first,) = psutil.Process(server.process.pid).children()
    first.kill()
    first.wait(timeout=10)
    wait_ok(server, url)
    (second,) = psutil.Process(server.process.pid).children()
    assert second.pid != first.pid
    assert server.terminate() == 0
    assert "the dashboard exited with -9: starting it again" in server.output()


def test_a_killed_server_takes_its_dashboard_with_it(
    start: list[ServerProcess],
    warehouse: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """SIGKILL gives the server no chance to stop its child: the child ends itself (gpuledger.parent)."""
    dashboard_port = free_port()
    server = launch(start, tmp_path, "--warehouse", str(warehouse), "--dashboard-port", str(dashboard_port))
    wait_ok(server, f"http://127.0.0.1:{dashboard_port}/_stcore/health")
    (child,) = psutil.Process(server.process.pid).children()
    server.kill()
    child.wait(timeout=30)  # psutil.TimeoutExpired if it outlives the server
    assert not child.is_running()


def test_a_failing_scrape_stops_neither_metrics_nor_health(
    start: list[ServerProcess],
    warehouse: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    server = launch(
        start,
        tmp_path,
        "--warehouse",
        str(warehouse),
        "--no-dashboard",
        "--prometheus",
        f"http://127.0.0.1:{closed}",
        **FAST,
    )
    server.wait_for("/readyz")
    failures: list[float] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(set(failures)) < 2:
        got = value(server.samples(), "gpuledger_scrape_failures_total", cluster="default")
        if got is not None and got > 0 and (not failures or got > failures[-1]):
            failures.append(got)
        time.sleep(0.2)
    assert len(failures) >= 2 and failures[-1] > failures[0], server.output()[-3000:]
    samples = server.samples()
    assert value(samples, "gpuledger_scrape_last_success_timestamp_seconds", cluster="default") is None
    assert any(name == "gpuledger_gpu_hours" for name, _labels in samples)
    assert server.get("/healthz").status_code == 200
    assert server.terminate() == 0, server.output()


def test_a_failing_refresh_keeps_the_last_metrics_and_counts_it(
    start: list[ServerProcess],
    warehouse: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = launch(start, tmp_path, "--warehouse", str(warehouse), "--no-dashboard", **FAST)
    server.wait_for("/readyz")
    before = server.samples()
    hours = {k: v for k, v in before.items() if k[0] == "gpuledger_gpu_hours"}
    assert hours
    warehouse.rename(tmp_path / "moved-away")  # every read of the warehouse now fails
    deadline = time.monotonic() + 90
    failures = 0.0
    while time.monotonic() < deadline and failures < 2:
        failures = value(server.samples(), "gpuledger_metrics_refresh_failures_total") or 0.0
        time.sleep(0.2)
    assert failures >= 2, server.output()[-3000:]
    after = server.samples()
    assert {k: v for k, v in after.items() if k[0] == "gpuledger_gpu_hours"} == hours
    assert server.get("/readyz").status_code == 200
    assert "the cost metrics could not be refreshed (the last ones stay served)" in server.output()
    assert server.terminate() == 0


def test_a_busy_port_is_one_line_and_exit_2(cli, warehouse: Path) -> None:  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = cli("server", "--warehouse", str(warehouse), "--no-dashboard", "--port", str(port))
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: cannot serve /healthz, /readyz and /metrics on 127.0.0.1:{port} (Address already in use): "
        "pass another --port or --addr\n"
    )


def test_a_missing_warehouse_is_one_line_and_exit_2(cli, tmp_path: Path) -> None:
    result = cli("server", "--warehouse", str(tmp_path / "nothing-here"), "--no-dashboard", "--port", str(free_port()))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("schedule", [True, False])
def test_the_scheduler_runs_when_a_channel_is_configured(
    start: list[ServerProcess],
    warehouse: Path,  # noqa: F811
    tmp_path: Path,
    schedule: bool,
) -> None:
    hook = tmp_path / "slack-webhook-url"
    hook.write_text(f"http://127.0.0.1:{free_port()}/hook\n")
    (tmp_path / "gpuledger.toml").write_text(f'[slack]\nwebhook_url_file = "{hook}"\n')
    flags = [] if schedule else ["--no-schedule"]
    server = launch(start, tmp_path, "--warehouse", str(warehouse), "--no-dashboard", *flags)
    server.wait_for("/readyz")
    assert server.terminate() == 0, server.output()
    output = server.output()
    assert ("scheduler started: alerts" in output and "scheduler stopped" in output) is schedule, output
    assert str(hook.read_text().strip()) not in output  # the webhook URL is a secret: never logged


def test_readyz_is_503_until_the_first_refresh_is_done() -> None:
    import datetime as dt
    import threading

    from exposition.snapshot import CostSnapshot
    from gpuledger.serving import MetricsState, endpoint

    metrics = MetricsState("c1", following=True)
    http = endpoint("127.0.0.1", 0, metrics)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_address[1]}"
    try:
        not_ready = requests.get(url + "/readyz", timeout=5)
        assert (not_ready.status_code, not_ready.text) == (503, "not ready: the first metrics refresh is not done\n")
        assert requests.get(url + "/healthz", timeout=5).status_code == 200
        before = requests.get(url + "/metrics", timeout=5).text
        assert "gpuledger_gpu_hours" not in before and 'gpuledger_scrape_failures_total{cluster="c1"} 0.0' in before
        at = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
        metrics.refreshed(CostSnapshot(computed_at=at))
        assert requests.get(url + "/readyz", timeout=5).status_code == 200
        after = {
            s.name: s.value
            for f in text_string_to_metric_families(requests.get(url + "/metrics", timeout=5).text)
            for s in f.samples
        }
        assert after["gpuledger_metrics_refresh_timestamp_seconds"] == at.timestamp()
    finally:
        http.shutdown()
        http.server_close()


def test_follow_steps_make_the_scrape_families() -> None:
    import datetime as dt

    from collector.prometheus.follow import FollowStep
    from gpuledger.serving import MetricsState

    t0 = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    metrics = MetricsState("c1", following=True)
    metrics.scrape_step(FollowStep(t0, True, 10, 5, t0 - dt.timedelta(minutes=1), None, 60.0))
    metrics.scrape_step(FollowStep(t0 + dt.timedelta(minutes=1), False, 0, 0, None, "connection refused", 5.0))
    scrape = metrics.state()[1].scrape
    assert scrape is not None
    assert (scrape.last_success, scrape.failures, scrape.watermark) == (t0, 1, t0 - dt.timedelta(minutes=1))
