"""Tables as a person reads them: a human column name with its unit, numbers formatted as ``fmt`` writes them, and
an empty cell written as what it means (``Column.empty``), never "None"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
import streamlit as st

from dashboards import fmt

Kind = Literal["text", "usd", "hours", "pct", "share", "gib", "count", "number", "bool", "link", "time"]


@dataclass(frozen=True)
class Column:
    label: str
    kind: Kind = "text"
    help: str | None = None
    empty: str = fmt.EMPTY
    """Shown in an empty cell; say why it is empty here or in ``help``."""
    link_text: str | None = None
    """For a ``link`` column: the text shown for the URL (a regex over it, as ``LinkColumn.display_text``)."""


def shown(frame: pl.DataFrame, columns: Mapping[str, Column]) -> pl.DataFrame:
    """``frame``'s listed columns in order, lists joined, and every column with empty cells (null or "") made text,
    each empty cell written as its column's ``empty``."""
    out = []
    for name, col in columns.items():
        if name not in frame.columns:
            continue
        values = frame.get_column(name)
        if isinstance(values.dtype, pl.List):
            values = values.list.eval(pl.element().cast(pl.String)).list.join(", ")
            values = values.replace("", None)
        if values.dtype == pl.String:
            values = values.replace("", None)  # an empty text is as empty as a missing one
        if values.null_count() == 0:
            out.append(values)
        elif col.kind in ("text", "link"):
            out.append(values.cast(pl.String).fill_null(col.empty))
        elif col.kind == "time":
            out.append(values.map_elements(fmt.when, return_dtype=pl.String, skip_nulls=True).fill_null(col.empty))
        elif col.kind == "bool":
            out.append(values.map_elements(lambda v: "yes" if v else "no", return_dtype=pl.String).fill_null(col.empty))
        else:
            write = fmt.TEXT[col.kind]
            out.append(values.map_elements(write, return_dtype=pl.String, skip_nulls=True).fill_null(col.empty))
    return pl.DataFrame(out)


def config(frame: pl.DataFrame, columns: Mapping[str, Column]) -> dict[str, Any]:
    """The ``column_config`` of ``shown(frame, columns)``: a number column keeps its ``fmt`` format."""
    out: dict[str, Any] = {}
    for name in frame.columns:
        col = columns[name]
        numeric = frame.schema[name].is_numeric()
        if col.kind == "link":
            out[name] = st.column_config.LinkColumn(col.label, help=col.help, display_text=col.link_text)
        elif col.kind == "time" and frame.schema[name].is_temporal():
            out[name] = st.column_config.DatetimeColumn(col.label, help=col.help, format=fmt.TIME_COLUMN)
        elif col.kind == "bool" and frame.schema[name] == pl.Boolean:
            out[name] = st.column_config.CheckboxColumn(col.label, help=col.help)
        elif col.kind in fmt.COLUMN_FORMATS and numeric:
            out[name] = st.column_config.NumberColumn(col.label, help=col.help, format=fmt.COLUMN_FORMATS[col.kind])
        else:
            out[name] = st.column_config.TextColumn(col.label, help=col.help)
    return out


def table(frame: pl.DataFrame, columns: Mapping[str, Column], **kwargs: Any) -> None:
    """Draw ``frame`` with ``columns`` (raw name -> how to show it); other columns are left out."""
    data = shown(frame, columns)
    st.dataframe(data, hide_index=True, column_config=config(data, columns), **kwargs)
