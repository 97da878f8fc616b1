"""Serving the app: Streamlit's server in this process, bound to 127.0.0.1 unless told otherwise.

It checks what it can before Streamlit starts (the warehouse is one, the address can be listened on), and says it
serves only once its health endpoint answers."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.window import Window
from dashboards import context
from dashboards.errors import NotStarted, PortUnavailable
from dashboards.source import History, Source
from warehouse.lake import Lake

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"
WARM_THREAD = "gpuledger-warm"
READY_THREAD = "gpuledger-ready"
READY_WAIT_S = 120.0
FIRST_RENDER_WAIT_S = 20.0
HEALTH_PATH = "/_stcore/health"


def flag_options(host: str, port: int) -> dict[str, Any]:
    """Streamlit's config for a read-only dashboard: no file watcher, no usage stats, no browser launched."""
    return {
        "server.address": host,
        "server.port": port,
        "server.headless": True,
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        "browser.gatherUsageStats": False,
        "browser.serverAddress": host,
        "browser.serverPort": port,
        "client.toolbarMode": "viewer",
        "global.developmentMode": False,
        "logger.hideWelcomeMessage": True,  # `gpuledger` says where it serves, once it does (see wait_ready)
    }


def check_warehouse(root: Path) -> None:
    """Refuse a path that is missing, unreadable, or a directory of other files (``Lake`` says which); an empty
    directory is a warehouse still to be filled (the app says how)."""
    Lake(root)


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` as Streamlit will (``SO_REUSEADDR``), then let it go: a port taken now is an error
    before anything starts, rather than Streamlit's exit after it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            if os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise PortUnavailable(host, port, exc) from None


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def health_url(host: str, port: int) -> str:
    """Where this machine reaches the server's health endpoint (a wildcard address through loopback)."""
    reach = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return url_of(reach, port) + HEALTH_PATH


def wait_ready(url: str, ready: threading.Event, on_ready: Callable[[], None], timeout_s: float = READY_WAIT_S) -> None:
    """Poll the health endpoint until it answers 200, then set ``ready`` and call ``on_ready``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a proxy must not answer for us
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    ready.set()
                    on_ready()
                    return
        except OSError:
            pass
        time.sleep(0.05)
    log.warning("the dashboard has not answered %s in %.0f s", url, timeout_s)


def default_window(warehouse: Path, source: Source) -> tuple[str, History, Window]:
    """The warehouse's version, its history (cached, as the app reads it) and the window the app opens on."""
    from dashboards import data

    version = Lake(warehouse).version()
    hist = data.history(str(warehouse.resolve()), version, source.key, source)
    return version, hist, source.window_of(None, None, hist.newest_minute)


def warm_default(warehouse: Path, source: Source) -> None:
    """Read the default window (its history, fleet view, report, GPU heatmap, and the full report with MIG fit, spot
    and percentiles) into the cache before the server starts, and draw its Overview chart once, so that once the
    server answers, its first visitor's pages come from memory (the reads are ``st.cache_resource`` entries, which
    exist without Streamlit's runtime) and pay no first-use cost (importing pandas for Altair, loading Vega-Lite's
    schema: about 0.7 s). A warehouse that cannot be read is left to the page, which shows its help."""
    from analysis import timeline
    from analysis.filters import Filters
    from dashboards import charts, data

    try:
        version, hist, window = default_window(warehouse, source)
        view = data.fleet_view(*data.cache_key(warehouse.resolve(), version, window, source), source)
        page = data.page(warehouse.resolve(), version, source, hist, view, Filters())
        charts.states_over_time(timeline.state_timeline(page.buckets), view.every).to_dict()
        page.heatmap(None, page.buckets)
        page.full_report()  # MIG fit, spot and percentiles: a second or so, wanted by two pages
    except Exception:  # the page reports it: an empty or missing warehouse shows its help page
        log.debug("reading the default window before serving failed", exc_info=True)


def warm_rest(warehouse: Path, source: Source) -> None:
    """Once a page has been drawn (or after ``FIRST_RENDER_WAIT_S``), read the Data health and Recommendations
    pages' inputs for the default window (the samples per node, then the recommendations: stored by ``gpuledger
    warehouse rollup``, ranked only when none is stored for this data) in a low-priority worker process
    (``background``, ``worker``), so that opening those pages finds them ready without the reads slowing the pages
    drawn meanwhile. A visitor arriving earlier waits on the same computation (Streamlit locks each cache entry)."""
    from dashboards import background, data, worker

    context.wait_rendered(FIRST_RENDER_WAIT_S)
    try:
        version, _hist, window = default_window(warehouse, source)
        key = data.cache_key(warehouse.resolve(), version, window, source)
        with worker.started() as child:
            slow = background.InBackground(source, child)
            data.sample_sources(*key[:4], slow)
            data.recommendations(*key, slow)
    except Exception as exc:  # each page reads what it needs when opened, and reports what fails then
        log.warning("reading the pages' inputs in the background failed (each page reads its own): %s", exc)
        log.debug("background read", exc_info=True)


def _without(text: str) -> Callable[[logging.LogRecord], bool]:
    return lambda record: text not in record.getMessage()


def serve(
    warehouse: Path,
    source: Source,
    *,
    host: str,
    port: int,
    on_ready: Callable[[], None] | None = None,
    on_reading: Callable[[], None] | None = None,
) -> None:
    """Serve the dashboard for ``warehouse`` until interrupted (blocks); ``on_reading`` is called before the default
    window is read (seconds on a large fleet), ``on_ready`` once the server answers. A warehouse or an address that
    cannot be served raises a :class:`DashboardError` before it starts."""
    from streamlit import config as st_config
    from streamlit.web import bootstrap

    check_warehouse(warehouse)
    check_port(host, port)
    context.configure(warehouse, source)
    # Streamlit warns that the reads made before it starts, and the warming thread's, have no runtime or script
    # context: expected, and noise to the user.
    for name, expected in (
        ("streamlit.runtime.scriptrunner_utils.script_run_context", "missing ScriptRunContext"),
        ("streamlit.runtime.caching.cache_data_api", "No runtime found"),
    ):
        logging.getLogger(name).addFilter(_without(expected))
    if on_reading is not None:
        on_reading()
    warm_default(warehouse, source)
    threading.Thread(target=warm_rest, args=(warehouse, source), name=WARM_THREAD, daemon=True).start()
    ready = threading.Event()
    threading.Thread(
        target=wait_ready,
        args=(health_url(host, port), ready, on_ready or (lambda: None)),
        name=READY_THREAD,
        daemon=True,
    ).start()
    options = flag_options(host, port)
    st_config._main_script_path = str(APP)
    bootstrap.load_config_options(flag_options=options)
    try:
        bootstrap.run(str(APP), False, [], options)
    except SystemExit as exc:  # Streamlit exits when it cannot bind (a port taken since check_port) or start
        if exc.code not in (None, 0) and not ready.is_set():
            raise NotStarted(host, port, exc.code) from None
        raise
