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

from dashboards import context
from dashboards.errors import NotStarted, PortUnavailable
from dashboards.source import Source
from warehouse.lake import Lake

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"
WARM_THREAD = "gpuledger-warm"
READY_THREAD = "gpuledger-ready"
RUNTIME_WAIT_S = 30.0
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


def warm(warehouse: Path, source: Source) -> None:
    """Read the default window into the cache while the server starts, so the first visitor's Overview does not
    wait for it (a visitor arriving earlier waits on the same computation: Streamlit locks each cache entry); then,
    once a page has been drawn (or after ``FIRST_RENDER_WAIT_S``), the slower reads of the other pages (the
    recommendations and their plan first, then the MIG fit, spot and percentiles, and the samples per node), so that
    opening those pages finds them ready instead of computing them."""
    from streamlit import runtime

    deadline = time.monotonic() + RUNTIME_WAIT_S
    while not runtime.exists() and time.monotonic() < deadline:  # caches made before it would not be the pages'
        time.sleep(0.02)
    from dashboards import data

    try:
        root, key = str(warehouse.resolve()), source.key
        version = Lake(warehouse).version()
        hist = data.history(root, version, key, source)
        window = source.window_of(None, None, hist.newest_minute)
        bounds = (window.start.isoformat(), window.end.isoformat())
        data.fleet_view(root, version, *bounds, key, source)
        context.wait_rendered(FIRST_RENDER_WAIT_S)  # the first visitor's page first, then the slower reads
        data.recommendations(root, version, *bounds, key, source)  # the slowest: seconds, where the others take one
        data.full_inputs(root, version, *bounds, key, source)
        data.sample_sources(root, version, *bounds, source)
    except Exception:  # the page reports it: an empty or missing warehouse shows its help page
        log.debug("warming the dashboard cache failed", exc_info=True)


def serve(
    warehouse: Path,
    source: Source,
    *,
    host: str,
    port: int,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the dashboard for ``warehouse`` until interrupted (blocks); ``on_ready`` is called once the server
    answers. A warehouse or an address that cannot be served raises a :class:`DashboardError` before it starts."""
    from streamlit import config as st_config
    from streamlit.web import bootstrap

    check_warehouse(warehouse)
    check_port(host, port)
    context.configure(warehouse, source)
    # Streamlit warns that the warming thread has no script context: expected, and noise to the user.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: WARM_THREAD not in record.getMessage()
    )
    threading.Thread(target=warm, args=(warehouse, source), name=WARM_THREAD, daemon=True).start()
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
