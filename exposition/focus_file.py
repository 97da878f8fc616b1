"""The FOCUS rows (``analysis.focus``) as a file: CSV or Parquet by the file's extension, written atomically.

``render`` builds the bytes with no I/O; ``write`` puts them under a temporary name beside the target, fsyncs,
renames it into place and fsyncs the folder, so a reader (a FinOps platform picking the file up) sees the old file
or the new one, never a part, and a failed write leaves the old file as it was.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import polars as pl

from warehouse.files import fsync_dir

FORMATS = {".csv": "csv", ".parquet": "parquet"}
CSV_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""FOCUS DateTimeFormat: ISO 8601 in UTC with a ``Z``."""


class FocusFileError(Exception):
    """A FOCUS file that cannot be written: the message names the path and the fix."""


class UnknownFormat(FocusFileError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"--out {path}: unknown file type {path.suffix or '(no extension)'!r}; name the file .csv or .parquet"
        )


class CannotWrite(FocusFileError):
    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"cannot write --out {path} ({why}): pass a file in a folder you can write")


def format_of(path: Path) -> str:
    """``csv`` or ``parquet`` from the extension (any case); another one raises ``UnknownFormat``."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UnknownFormat(path)
    return fmt


def check_target(path: Path) -> str:
    """The format of ``path``, after checking it can be written there (before any work is done)."""
    fmt = format_of(path)
    if path.is_dir():
        raise CannotWrite(path, "it is a folder")
    if not path.parent.is_dir():
        raise CannotWrite(path, f"the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise CannotWrite(path, f"the folder {path.parent} is not writable")
    return fmt


def render(rows: pl.DataFrame, fmt: str) -> bytes:
    """The rows as CSV (UTF-8, header, times as ``2026-11-01T00:00:00Z``, null as empty) or Parquet (zstd)."""
    buffer = io.BytesIO()
    if fmt == "csv":
        rows.write_csv(buffer, datetime_format=CSV_TIME_FORMAT)
    else:
        rows.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


def write(rows: pl.DataFrame, path: Path) -> int:
    """Write ``rows`` to ``path`` atomically in the format its extension names; returns the bytes written."""
    data = render(rows, check_target(path))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CannotWrite(path, exc.strerror or str(exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return len(data)
