"""Choosing and opening a collector source from the command line's options and the settings."""

from __future__ import annotations

import atexit
from collections.abc import Callable

from collector.nvml import NvmlSampler
from collector.rows import Rows
from gpuledger.settings import Settings


def open_reader(settings: Settings, *, node: str, dcgm_url: str | None) -> Callable[[], Rows]:
    """A function returning one reading of the chosen source (NVML on this node unless a dcgm-exporter URL is given)."""
    if dcgm_url:
        from collector.dcgm import DcgmExporterReader

        return DcgmExporterReader(dcgm_url, cluster=settings.cluster).read
    sampler = NvmlSampler(cluster=settings.cluster, node=node, energy_every_s=settings.energy_every_s)
    sampler.open()
    atexit.register(sampler.close)
    return sampler.sample
