"""Units and calendar constants, defined once for every part (the collector imports them too)."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30
HOURS_PER_MONTH = 730.0
"""A month as cloud prices count it (AWS, GCP: 730 hours), for monthly projections."""
MINUTES_PER_DAY = 1440.0
