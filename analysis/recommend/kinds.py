"""The registry of recommendation kinds: one module per kind, each declaring its ``NAME``, ``TITLE`` and builder
``recommendations(ctx)``, listed once in ``KIND_MODULES`` in build order.

The order matters twice: MIG, time-slicing and a cheaper model are alternatives for one workload, so each claims its
workloads for the later ones (``Context.claimed``), and ranking breaks ties in this order. The kinds, their titles
and how many there are come from this tuple (after datasette's ``register_facet_classes``).
"""

from __future__ import annotations

from typing import Protocol

from analysis.recommend import autoscaling, gpu_count, gpu_model, idle_reclaim, mig_slices, spot_pools, time_slicing
from analysis.recommend.context import Context
from analysis.recommend.model import Recommendation


class Kind(Protocol):
    """What a kind module declares."""

    NAME: str
    TITLE: str

    def recommendations(self, ctx: Context) -> list[Recommendation]: ...


KIND_MODULES: tuple[Kind, ...] = (gpu_count, mig_slices, time_slicing, gpu_model, spot_pools, autoscaling, idle_reclaim)
KINDS = tuple(kind.NAME for kind in KIND_MODULES)
TITLES = {kind.NAME: kind.TITLE for kind in KIND_MODULES}
