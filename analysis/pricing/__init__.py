"""The one price catalog: what a GPU-hour costs on each node, and where that number came from.

Capacity types (``capacity``), the errors (``errors``), the OpenCost custom pricing CSV (``custom_csv``), configured
overrides (``overrides``), the shipped price data (``shipped``), the catalog that resolves a node's price through
them in order (``catalog``, whose docstring holds the definitions) and prices as frames (``frames``).
"""

from analysis.pricing.bill import BILL_MATCH_COLUMNS, bill_rates, match_bill, resource_key
from analysis.pricing.capacity import INTERRUPTION_BUCKETS, ON_DEMAND, SPOT
from analysis.pricing.catalog import GpuHourPrice, PriceCatalog
from analysis.pricing.custom_csv import CSV_COLUMNS, CustomPrice, load_custom_pricing_csv
from analysis.pricing.errors import (
    CustomPricingCsvError,
    InvalidGpuCount,
    InvalidPriceOverride,
    PricingError,
    UnknownCapacityType,
)
from analysis.pricing.frames import (
    GPU_COUNT_COLUMNS,
    GPU_HOUR_PRICE_COLUMNS,
    NODE_PRICE_COLUMNS,
    catalog_frame,
    model_prices,
    price_nodes,
    prices_table,
)
from analysis.pricing.overrides import NO_OVERRIDES, PriceOverrides
from analysis.pricing.shipped import CatalogEntry, opencost_default_gpu_usd_per_gpu_hour

__all__ = [
    "BILL_MATCH_COLUMNS",
    "CSV_COLUMNS",
    "GPU_COUNT_COLUMNS",
    "GPU_HOUR_PRICE_COLUMNS",
    "INTERRUPTION_BUCKETS",
    "NODE_PRICE_COLUMNS",
    "NO_OVERRIDES",
    "ON_DEMAND",
    "SPOT",
    "CatalogEntry",
    "CustomPrice",
    "CustomPricingCsvError",
    "GpuHourPrice",
    "InvalidGpuCount",
    "InvalidPriceOverride",
    "PriceCatalog",
    "PriceOverrides",
    "PricingError",
    "UnknownCapacityType",
    "bill_rates",
    "catalog_frame",
    "load_custom_pricing_csv",
    "match_bill",
    "model_prices",
    "opencost_default_gpu_usd_per_gpu_hour",
    "price_nodes",
    "prices_table",
    "resource_key",
]
