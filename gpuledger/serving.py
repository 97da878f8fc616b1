"""``gpuledger server``: one process tree over one warehouse.

Threads: the follow scrape (``jobs.follow``, when a Prometheus is given), the rollup refresh (every
``rollup_every_s``, under the writer lock), the scheduler (``scheduling.runner``, when a channel is configured), the
cost metrics refresh (every ``metrics_every_s``, read-only: ``exposing.snapshot``), and the HTTP endpoint
(``/healthz``, ``/readyz``, ``/metrics``). The dashboard is a child process (``gpuledger dashboard`` on
127.0.0.1), started again when it dies. SIGTERM sets one stop event: each loop finishes what it is doing (a write
in flight is completed), the dashboard is terminated, and ``run`` returns.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from alerts.schedule import Runner
from collector.prometheus.follow import FollowStep
from exposition.collector import registry_of, render
from exposition.snapshot import CostSnapshot, ScrapeHealth, ServerHealth
from gpuledger import __version__, exposing, jobs
from gpuledger.parent import child_env
from gpuledger.settings import Settings
from warehouse.lake import Lake

log = logging.getLogger(__name__)
DASHBOARD_HOST = "127.0.0.1"
"""The dashboard binds loopback only: it is reached through an authenticating proxy in the same pod."""
DASHBOARD_STOP_S = 10.0
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
FOLLOW_RETRY_S = 10.0


class ServingError(Exception):
    """A server that cannot start (a port it cannot bind); the message says what to change."""


@dataclass(frozen=True)
class ServerOptions:
    warehouse: Path
    prometheus: str | None = None
    addr: str = "127.0.0.1"
    port: int = 8080
    dashboard_port: int | None = 8501
    """None: no dashboard."""
    schedule: bool = True
    follow_start: dt.datetime | None = None
    """Where the follow scrape starts when the warehouse has no watermark yet (default: an hour ago)."""
    step_s: int = 60
    config: Path | None = None
    """The settings file the dashboard child is to load too."""


def wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MetricsState:
    """The latest cost snapshot and the server's health figures, shared by the loops and the HTTP threads."""

    def __init__(self, cluster: str, *, following: bool) -> None:
        self._lock = threading.Lock()
        self._snapshot: CostSnapshot | None = None
        self._health = ServerHealth(__version__, scrape=ScrapeHealth(cluster) if following else None)

    def state(self) -> tuple[CostSnapshot | None, ServerHealth]:
        with self._lock:
            return self._snapshot, self._health

    @property
    def ready(self) -> bool:
        return self.state()[1].refreshed_at is not None

    def refreshed(self, snapshot: CostSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._health = replace(self._health, refreshed_at=snapshot.computed_at)

    def refresh_failed(self) -> None:
        with self._lock:
            self._health = replace(self._health, refresh_failures=self._health.refresh_failures + 1)

    def scrape_step(self, step: FollowStep) -> None:
        """A follow step: success time, failures, watermark."""
        with self._lock:
            scrape = self._health.scrape
            if scrape is None:
                return
            done = {"last_success": step.at} if step.ok else {"failures": scrape.failures + 1}
            scrape = replace(scrape, **done)
            if step.watermark is not None:
                scrape = replace(scrape, watermark=step.watermark)
            self._health = replace(self._health, scrape=scrape)


def endpoint(addr: str, port: int, metrics: MetricsState) -> ThreadingHTTPServer:
    """``/healthz`` (200 while the process runs), ``/readyz`` (200 once the first metrics refresh is done) and
    ``/metrics`` on ``addr:port``, bound now (ServingError when it cannot be)."""
    registry = registry_of(metrics.state)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._answer(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                ready = metrics.ready
                body = b"ready\n" if ready else b"not ready: the first metrics refresh is not done\n"
                self._answer(200 if ready else 503, body, "text/plain; charset=utf-8")
            elif path == "/metrics":
                self._answer(200, render(registry), CONTENT_TYPE_LATEST)
            else:
                self._answer(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    try:
        server = ThreadingHTTPServer((addr, port), Handler)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ServingError(
            f"cannot serve /healthz, /readyz and /metrics on {addr}:{port} ({reason}): pass another --port or --addr"
        ) from None
    server.daemon_threads = True
    return server


def dashboard_command(options: ServerOptions, port: int) -> list[str]:
    config = ["--config", str(options.config)] if options.config is not None else []
    return [
        sys.executable,
        "-m",
        "gpuledger.cli",
        *config,
        "dashboard",
        "--host",
        DASHBOARD_HOST,
        "--port",
        str(port),
        "--warehouse",
        str(options.warehouse),
    ]


class Server:
    """The process tree of ``gpuledger server``; ``run`` blocks until ``stop`` (or SIGTERM/SIGINT)."""

    def __init__(self, options: ServerOptions, settings: Settings, *, clock: Callable[[], dt.datetime] = wall):
        self.options = options
        self.settings = settings
        self.clock = clock
        self.stopping = threading.Event()
        self.metrics = MetricsState(settings.cluster, following=options.prometheus is not None)
        self.dashboard: subprocess.Popen[bytes] | None = None
        self._dashboard_lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self.runner: Runner | None = None

    def open(self) -> None:
        """Everything that can fail before the loops start: the warehouse, the ports, the scheduler's channels."""
        from dashboards.server import check_port

        Lake(self.options.warehouse, create=self.options.prometheus is not None)  # a warehouse, or one to fill
        if self.options.dashboard_port is not None:
            check_port(DASHBOARD_HOST, self.options.dashboard_port)
        if self.options.schedule and (self.settings.slack is not None or self.settings.email is not None):
            from gpuledger import scheduling

            self.runner = scheduling.runner(Lake(self.options.warehouse), self.settings)
        self._http = endpoint(self.options.addr, self.options.port, self.metrics)

    @property
    def address(self) -> tuple[str, int]:
        assert self._http is not None
        return str(self._http.server_address[0]), int(self._http.server_address[1])

    def stop(self) -> None:
        self.stopping.set()

    def run(self, *, install_signals: bool = True, on_serving: Callable[[str, int], None] | None = None) -> None:
        if self._http is None:
            self.open()
        assert self._http is not None
        previous = {}
        if install_signals:
            previous = {sig: signal.signal(sig, lambda *_: self.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
        http = threading.Thread(target=self._http.serve_forever, name="gpuledger-http", daemon=True)
        writers = [threading.Thread(target=self._rollup_loop, name="gpuledger-rollup")]
        if self.options.prometheus is not None:
            writers.append(threading.Thread(target=self._follow_loop, name="gpuledger-follow"))
        metrics = threading.Thread(target=self._metrics_loop, name="gpuledger-metrics", daemon=True)
        others = []
        if self.options.dashboard_port is not None:
            others.append(threading.Thread(target=self._dashboard_loop, name="gpuledger-dashboard"))
        if self.runner is not None:
            others.append(threading.Thread(target=self._schedule, name="gpuledger-schedule"))
        try:
            http.start()
            if on_serving is not None:
                on_serving(*self.address)
            for thread in [metrics, *writers, *others]:
                thread.start()
            self.stopping.wait()
            log.info("stopping: finishing the writes in flight")
            if self.runner is not None:
                self.runner.stop.set()
            for thread in [*writers, *others]:
                if thread.is_alive():
                    thread.join()
            metrics.join(timeout=5.0)  # read-only: nothing is lost if it is cut short
        finally:
            self.stopping.set()
            self._stop_dashboard()
            self._http.shutdown()
            self._http.server_close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("server stopped")

    def _metrics_loop(self) -> None:
        every = self.settings.metrics_every_s
        while not self.stopping.is_set():
            try:
                self.metrics.refreshed(exposing.snapshot(Lake(self.options.warehouse), self.settings, now=self.clock()))
            except Exception as exc:
                self.metrics.refresh_failed()
                log.error("the cost metrics could not be refreshed (the last ones stay served): %s", _one_line(exc))
                log.debug("metrics refresh failed", exc_info=True)
            self.stopping.wait(every)

    def _rollup_loop(self) -> None:
        lake = Lake(self.options.warehouse, create=True)
        while not self.stopping.is_set():
            try:
                with lake.writing():
                    result = jobs.refresh(lake, self.settings)
                if result.computed:
                    log.info("rollup: %d partitions computed", result.computed)
            except Exception as exc:
                log.error(
                    "the rollup could not be refreshed (tried again in %g s): %s",
                    self.settings.rollup_every_s,
                    _one_line(exc),
                )
                log.debug("rollup refresh failed", exc_info=True)
            self.stopping.wait(self.settings.rollup_every_s)

    def _follow_loop(self) -> None:
        assert self.options.prometheus is not None
        start = self.options.follow_start or self.clock() - dt.timedelta(hours=1)
        while not self.stopping.is_set():
            try:
                jobs.follow(
                    Lake(self.options.warehouse, create=True),
                    self.settings,
                    url=self.options.prometheus,
                    start=start,
                    step_s=self.options.step_s,
                    stop=self.stopping,
                    on_step=self.metrics.scrape_step,
                )
            except Exception as exc:
                log.error("the follow scrape stopped (started again in %g s): %s", FOLLOW_RETRY_S, _one_line(exc))
                log.debug("follow failed", exc_info=True)
                self.stopping.wait(FOLLOW_RETRY_S)

    def _schedule(self) -> None:
        assert self.runner is not None
        self.runner.run_forever(install_signals=False)

    def _dashboard_loop(self) -> None:
        port = self.options.dashboard_port
        assert port is not None
        restarts = 0
        while not self.stopping.is_set():
            with self._dashboard_lock:
                if self.stopping.is_set():
                    return
                self.dashboard = subprocess.Popen(
                    dashboard_command(self.options, port), stdin=subprocess.DEVNULL, env=child_env(os.environ)
                )
                child = self.dashboard
            started = self.clock()
            while not self.stopping.wait(1.0):
                if child.poll() is not None:
                    break
            if self.stopping.is_set():
                return
            if (self.clock() - started).total_seconds() > RESTART_BACKOFF_S[-1] * 2:
                restarts = 0  # it ran a good while: start it again at once
            delay = RESTART_BACKOFF_S[min(restarts, len(RESTART_BACKOFF_S) - 1)]
            restarts += 1
            log.warning("the dashboard exited with %s: starting it again in %g s", child.returncode, delay)
            self.stopping.wait(delay)

    def _stop_dashboard(self) -> None:
        with self._dashboard_lock:
            child = self.dashboard
            if child is None or child.poll() is not None:
                return
            child.terminate()
            try:
                child.wait(timeout=DASHBOARD_STOP_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
