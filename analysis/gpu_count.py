"""How many GPUs a node has: the one rule the GPU-hour price divides by and silent GPUs are counted against.

Definition (README, Definitions, "GPU-hour price"; pinned by ``tests/test_node_gpu_count.py``): a node's GPU count
is the first known of

1. the **instance type**'s GPU count from the catalog: the shipped AWS and GCP instance types, and the user's
   additions (``instance_type_gpu_count``), which beat the shipped count;
2. GPU Feature Discovery's ``nvidia.com/gpu.count`` node label (in the ``nodes.labels`` JSON, as Kubernetes spells
   it or as kube-state-metrics sanitizes it, ``nvidia_com_gpu_count``);
3. the **GPUs seen**: the ``nodes.gpu_count`` a collector recorded (what its exporter showed).

An exporter can show fewer GPUs than a node has (a crashed DCGM host engine, a GPU that fell off the bus, a
``--devices`` filter), so what was seen is the last resort: dividing a p5en.48xlarge's price by the 2 GPUs it showed
charges each of them four times over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

INSTANCE_TYPE: Final = "instance type"
GFD_LABEL: Final = "GFD label"
SEEN: Final = "GPUs seen"
BASES: Final = (INSTANCE_TYPE, GFD_LABEL, SEEN)
"""Where a count came from, in the order the rule tries them."""
GFD_COUNT_LABELS: Final = ("nvidia.com/gpu.count", "nvidia_com_gpu_count")
"""GPU Feature Discovery's count label, as the node carries it and as kube-state-metrics exports it."""


@dataclass(frozen=True)
class NodeGpuCount:
    """A node's GPU count and which rule gave it (``None`` and ``None`` when nothing is known)."""

    count: int | None
    basis: str | None

    def divisor(self, instance_type: str | None = None) -> str:
        """What a GPU-hour price divides by, e.g. ``node price / 8 GPUs (instance type p5en.48xlarge)``."""
        if self.count is None:
            return "GPU count unknown"
        what = f"{self.basis} {instance_type}" if self.basis == INSTANCE_TYPE and instance_type else self.basis
        return f"node price / {self.count} GPU{'s' if self.count != 1 else ''} ({what})"


def gfd_count(labels: Mapping[str, str]) -> int | None:
    """GPU Feature Discovery's ``nvidia.com/gpu.count`` from a node's labels; None when absent or not a count."""
    for key in GFD_COUNT_LABELS:
        value = labels.get(key)
        if value is None:
            continue
        try:
            count = int(str(value).strip())
        except ValueError:
            continue
        if count > 0:
            return count
    return None


def node_gpu_count(catalog_count: int | None, labels: Mapping[str, str], seen: int | None) -> NodeGpuCount:
    """The node's GPU count by the rule above: ``catalog_count`` (its instance type's, None when the catalog does
    not know the type), then the GFD label in ``labels``, then ``seen``; counts of 0 or less are unknown."""
    if catalog_count is not None and catalog_count > 0:
        return NodeGpuCount(catalog_count, INSTANCE_TYPE)
    labelled = gfd_count(labels)
    if labelled is not None:
        return NodeGpuCount(labelled, GFD_LABEL)
    if seen is not None and seen > 0:
        return NodeGpuCount(seen, SEEN)
    return NodeGpuCount(None, None)
