"""Which warehouse and settings the app serves: set by ``gpuledger dashboard`` before Streamlit starts (same
process), else read from the settings (``gpuledger.toml``, ``GPULEDGER_WAREHOUSE``) as ``streamlit run`` finds them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpuledger.settings import Settings, load_settings


@dataclass(frozen=True)
class Served:
    warehouse: Path | None
    settings: Settings


_served: Served | None = None


def configure(warehouse: Path | None, settings: Settings) -> None:
    global _served
    _served = Served(warehouse.resolve() if warehouse else None, settings)


def reset() -> None:
    global _served
    _served = None


def served() -> Served:
    if _served is not None:
        return _served
    settings = load_settings(None)
    return Served(settings.warehouse, settings)
