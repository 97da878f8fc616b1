"""MIG fit and packing: which workloads could run on a MIG slice of their GPU, and how many GPUs that would free.

The profile catalog (``catalog``), the knobs of the estimate (``assumptions``), each workload's compute and memory
demand (``demand``), the profile it fits (``fit``), the packing of the fitting workloads onto GPUs (``pack``) and the
window's result with the GPUs and dollars freed (``savings``). Definitions: each module's docstring.
"""

from analysis.mig.assumptions import (
    COMPUTE_MARGIN,
    DEFAULT_ASSUMPTIONS,
    MEMORY_MARGIN,
    MIN_HISTORY,
    InvalidMigAssumption,
    MigAssumptions,
)
from analysis.mig.catalog import (
    CATALOG_JSON,
    MigCatalog,
    MigGpu,
    MigProfile,
    NotMigCapable,
    UnknownGpuModel,
    UnknownMigProfile,
    load_catalog,
)
from analysis.mig.demand import combine_demand_parts, demand, demand_from_parts, demand_parts
from analysis.mig.fit import Fit, Measured, fit, fit_profile
from analysis.mig.pack import GpuLayout, PackItem, Placement, arrange, pack
from analysis.mig.savings import (
    REPORT_COLUMNS,
    WORKLOAD_COLUMNS,
    MigFit,
    MissingGpuPrice,
    fit_and_pack,
    mig_fit,
)

__all__ = [
    "CATALOG_JSON",
    "COMPUTE_MARGIN",
    "DEFAULT_ASSUMPTIONS",
    "MEMORY_MARGIN",
    "MIN_HISTORY",
    "REPORT_COLUMNS",
    "WORKLOAD_COLUMNS",
    "Fit",
    "GpuLayout",
    "InvalidMigAssumption",
    "Measured",
    "MigAssumptions",
    "MigCatalog",
    "MigFit",
    "MigGpu",
    "MigProfile",
    "MissingGpuPrice",
    "NotMigCapable",
    "PackItem",
    "Placement",
    "UnknownGpuModel",
    "UnknownMigProfile",
    "arrange",
    "combine_demand_parts",
    "demand",
    "demand_from_parts",
    "demand_parts",
    "fit",
    "fit_and_pack",
    "fit_profile",
    "load_catalog",
    "mig_fit",
    "pack",
]
