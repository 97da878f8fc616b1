"""Which warehouse the app serves and what reads it (``source.Source``): set by ``gpuledger dashboard`` before
Streamlit starts, in the same process. Unset, the app shows how to start it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from dashboards.source import Source


@dataclass(frozen=True)
class Served:
    warehouse: Path | None
    source: Source


_served: Served | None = None


def configure(warehouse: Path | None, source: Source) -> None:
    global _served
    _served = Served(warehouse.resolve() if warehouse else None, source)


def reset() -> None:
    global _served
    _served = None


def served() -> Served | None:
    return _served


_rendered = threading.Event()


def rendered() -> None:
    """A page has been drawn once (the app calls it after each run): the server's background reads may start."""
    _rendered.set()


def wait_rendered(timeout_s: float) -> bool:
    """Wait until a page has been drawn, so background reads do not slow the first visitor's page."""
    return _rendered.wait(timeout_s)
