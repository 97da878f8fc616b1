"""Serving the app: Streamlit's server in this process, bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from dashboards import context
from gpuledger.settings import Settings
from warehouse.lake import Lake

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
WARM_THREAD = "gpuledger-warm"
RUNTIME_WAIT_S = 30.0


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
    }


def warm(warehouse: Path, settings: Settings) -> None:
    """Read the default window into the cache while the server starts, so the first visitor's Overview does not
    wait for it (a visitor arriving earlier waits on the same computation: Streamlit locks each cache entry)."""
    from streamlit import runtime

    deadline = time.monotonic() + RUNTIME_WAIT_S
    while not runtime.exists() and time.monotonic() < deadline:  # caches made before it would not be the pages'
        time.sleep(0.02)
    from dashboards import data
    from gpuledger import viewing

    try:
        root, key = str(warehouse.resolve()), settings.model_dump_json()
        version = Lake(warehouse).version()
        hist = data.history(root, version, key, settings)
        window = viewing.window_of(settings, None, None, hist.newest_minute)
        data.fleet_view(root, version, window.start.isoformat(), window.end.isoformat(), key, settings)
    except Exception:  # the page reports it: an empty or missing warehouse shows its help page
        log.debug("warming the dashboard cache failed", exc_info=True)


def serve(warehouse: Path, settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the dashboard for ``warehouse`` until interrupted (blocks)."""
    from streamlit import config as st_config
    from streamlit.web import bootstrap

    context.configure(warehouse, settings)
    # Streamlit warns that the warming thread has no script context: expected, and noise to the user.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: WARM_THREAD not in record.getMessage()
    )
    threading.Thread(target=warm, args=(warehouse, settings), name=WARM_THREAD, daemon=True).start()
    options = flag_options(host, port)
    st_config._main_script_path = str(APP)
    bootstrap.load_config_options(flag_options=options)
    bootstrap.run(str(APP), False, [], options)
