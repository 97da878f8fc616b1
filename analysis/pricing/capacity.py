"""Capacity types a node is priced by, and the spot interruption-risk buckets."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

ON_DEMAND = "on-demand"
SPOT = "spot"

INTERRUPTION_BUCKETS: Mapping[int, str] = MappingProxyType({0: "<5%", 1: "5-10%", 2: "10-15%", 3: "15-20%", 4: ">20%"})
"""AWS Spot Advisor interruption-frequency buckets: share of instances interrupted in the trailing month."""
