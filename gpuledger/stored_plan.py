"""The report's default window's recommendations and plan, stored with the warehouse for the dashboard.

Ranking a month of a thousand GPUs takes tens of seconds of CPU, which a dashboard visitor should not wait for and
a two-core server should not spend while it draws pages. ``gpuledger warehouse rollup`` (and ``gpuledger simulate``)
compute the listing (``analysis.recommend.listing``) of the default window once, as ``gpuledger recommend`` would,
and keep it in the warehouse state ``dashboard-recommendations`` with what it was computed from: the settings (a
digest), the window and the warehouse version (``Lake.version``). The dashboard uses it only when all three are the
ones it reads; any new data, another window or other settings, and it computes its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from analysis.recommend.listing import listing
from analysis.window import Window
from gpuledger import recommending, reporting, viewing
from gpuledger.settings import Settings
from warehouse.lake import Lake

log = logging.getLogger(__name__)
STATE = "dashboard-recommendations"


@dataclass(frozen=True)
class Stored:
    window: Window
    items: int


def settings_digest(settings: Settings) -> str:
    """The settings as a digest: the same settings give the same key, and no setting's value is written out."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]


def store(lake: Lake, settings: Settings, now: dt.datetime) -> Stored | None:
    """Compute and store the default window's listing (a no-op when the stored one is for this very data, window
    and settings); None (and nothing stored) when the warehouse changed while it was computed, as the copy would
    match no version."""
    version = lake.version()
    window = viewing.window_of(settings, None, None, reporting.newest_minute(lake))  # the dashboard's first window
    current = load(lake, settings, window, version)
    if current is not None:
        return Stored(window=window, items=len(current.get("items", [])))
    found = recommending.recommendations(
        lake, settings, start=window.start.isoformat(), end=window.end.isoformat(), now=now, refresh=False
    )
    document = listing(found)
    if lake.version() != version:
        log.info("the warehouse changed while the recommendations were ranked: none stored for the dashboard")
        return None
    lake.write_state(
        STATE,
        {
            "key": _key(settings, window, version),
            "computed_at": now.isoformat(),
            "listing": document,
        },
    )
    return Stored(window=window, items=len(document["items"]))


def load(lake: Lake, settings: Settings, window: Window, version: str) -> dict[str, Any] | None:
    """The stored listing when it was computed for exactly ``window``, ``version`` and ``settings``, else None."""
    state = lake.read_state(STATE)
    if not state or state.get("key") != _key(settings, window, version):
        return None
    document = state.get("listing")
    return document if isinstance(document, dict) else None


def _key(settings: Settings, window: Window, version: str) -> dict[str, str]:
    return {
        "settings": settings_digest(settings),
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "version": version,
    }
