"""Errors the warehouse detects, each with its one-line message (and the fix) built here."""

from __future__ import annotations

from pathlib import Path


class WarehouseError(Exception):
    """Base of every expected warehouse failure; the CLI turns it into one line and exit code 2."""


class WarehouseMissing(WarehouseError):
    def __init__(self, root: Path) -> None:
        super().__init__(
            f"warehouse {root} does not exist: create it with `gpuledger simulate --warehouse {root}` "
            "or `gpuledger collect --warehouse " + f"{root}`, or pass the right --warehouse"
        )
        self.root = root


class NotAWarehouse(WarehouseError):
    def __init__(self, root: Path, marker: str) -> None:
        super().__init__(
            f"{root} is not a gpuledger warehouse (it holds files but no {marker}): pass the warehouse's directory "
            f"to --warehouse, or make one with `gpuledger simulate --warehouse DIR` or `gpuledger collect`"
        )
        self.root = root


class WarehouseUnreadable(WarehouseError):
    def __init__(self, root: Path, reason: str) -> None:
        super().__init__(f"warehouse {root} cannot be used: {reason}; check the path and its permissions")
        self.root = root


class SchemaViolation(WarehouseError):
    """A batch that breaks the table contract; nothing of the batch was written."""

    def __init__(self, table: str, column: str, problem: str) -> None:
        super().__init__(f"{table}.{column}: {problem}; nothing of this batch was written")
        self.table = table
        self.column = column


class CorruptPart(WarehouseError):
    def __init__(self, path: Path, reason: str) -> None:
        root = _warehouse_root(path)
        super().__init__(
            f"corrupt Parquet part {path} ({reason}): move it aside with "
            f"`gpuledger warehouse check --warehouse {root} --quarantine`"
        )
        self.path = path


class PartitionFailed(WarehouseError):
    """A rollup partition that failed in another process (a distributed engine's worker), with that failure's
    message: the original error cannot always be pickled back."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class QueryFailed(WarehouseError):
    def __init__(self, reason: str) -> None:
        first_line = reason.strip().splitlines()[0] if reason.strip() else "unknown error"
        super().__init__(f"query failed: {first_line}")


class DocumentUnreadable(WarehouseError):
    """A journal, retired-parts or state document that is torn or names a path it may not: never applied."""

    def __init__(self, path: Path, kind: str, reason: str) -> None:
        super().__init__(f"{kind} {path} is torn or invalid ({reason}): it is treated as never written")
        self.path = path
        self.reason = reason


class WarehouseBusy(WarehouseError):
    def __init__(self, root: Path) -> None:
        super().__init__(f"warehouse {root} is being written by another gpuledger process; retry when it is done")


def _warehouse_root(path: Path) -> Path:
    """The warehouse directory that holds a part: the parent of its table folder."""
    for parent in path.parents:
        if (parent / ".gpuledger-warehouse").exists():
            return parent
    return path.parent


class QueryRefused(WarehouseError):
    """SQL that `gpuledger query` will not run: not a read, or a read of something other than the warehouse."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"query refused: {reason}; `gpuledger query` is read-only: use SELECT (or EXPLAIN, DESCRIBE, SHOW, "
            "SUMMARIZE) over the warehouse's views, with no file, network or extension access"
        )
