"""A prometheus_client collector over the latest snapshot, and the rendering of a scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exposition import families
from exposition.snapshot import CostSnapshot, ServerHealth

State = Callable[[], tuple[CostSnapshot | None, ServerHealth]]


class SnapshotCollector(Collector):
    """Yields ``families.build`` of what ``state`` returns at scrape time (the latest snapshot and health)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        snapshot, health = self.state()
        yield from families.build(snapshot, health)


def registry_of(state: State) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(state))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format of one scrape (no I/O)."""
    return generate_latest(registry)
