"""Errors analysis detects, each with its one-line message built here."""

from __future__ import annotations


class AnalysisError(Exception):
    """Base of every expected analysis failure; the CLI prints it as one line and exits 2."""


class InvalidWindow(AnalysisError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"invalid time window: {detail}; use ISO-8601 (2026-11-01, 2026-11-01T12:00Z) or relative (-7d, -12h, now)"
        )


class EmptyWarehouse(AnalysisError):
    def __init__(self, root: str) -> None:
        super().__init__(
            f"warehouse {root} holds no GPU samples yet: fill it with `gpuledger simulate --warehouse {root}` "
            "or `gpuledger collect`"
        )


class EmptyWindow(AnalysisError):
    def __init__(self, start: str, end: str, first: str | None, last: str | None) -> None:
        held = f"the warehouse holds samples from {first} to {last}" if first else "the warehouse holds no samples"
        super().__init__(f"no GPU samples between {start} and {end}: {held}; pick a window inside it")
