"""Errors the price catalog detects, each with its one-line message built here."""

from __future__ import annotations

from pathlib import Path

from analysis.errors import AnalysisError
from warehouse.schema import CAPACITY_TYPES


class PricingError(AnalysisError):
    """Base of every price-catalog error."""


class InvalidPriceOverride(PricingError):
    """A configured price that is not a positive, finite number of USD per hour, or a malformed override entry."""

    def __init__(self, what: str, value: object) -> None:
        super().__init__(
            f"invalid price override for {what}: {value!r} is not a positive number of USD per hour; "
            "fix it in the price settings"
        )


class InvalidGpuCount(PricingError):
    """A configured GPU count per node (``instance_type_gpu_count``) that is not a whole number of at least 1."""

    def __init__(self, what: str, value: object) -> None:
        super().__init__(
            f"invalid GPU count for {what}: {value!r} is not a whole number of GPUs (1 or more); "
            "fix it in instance_type_gpu_count"
        )


class UnknownCapacityType(PricingError):
    def __init__(self, value: object, where: str) -> None:
        super().__init__(f"unknown capacity type {value!r} in {where}: use one of {', '.join(CAPACITY_TYPES)}")


class CustomPricingCsvError(PricingError):
    """A custom pricing CSV that cannot be read, or a row in it that is not valid."""

    def __init__(self, path: Path | str, line: int | None, column: str | None, detail: str) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"custom pricing CSV {where}: {detail}")
