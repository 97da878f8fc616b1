"""DuckDB over the lake: one view per table, built from the visible parts (journals honoured)."""

from __future__ import annotations

import duckdb

from warehouse.errors import QueryFailed
from warehouse.lake import Lake
from warehouse.schema import TABLES


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per warehouse table; the lake itself is never written."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    for name, table in TABLES.items():
        files = [str(p) for p in lake.parts(table)]
        if files:
            listing = ", ".join(_quote(f) for f in files)
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listing}], "
                "hive_partitioning = false, union_by_name = true)"
            )
        else:
            con.register(f"_{name}_empty", table.schema.empty_table())
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_empty")
    return con


def run_query(lake: Lake, sql: str) -> duckdb.DuckDBPyRelation | None:
    """Run one SQL statement against the views; SQL errors become QueryFailed."""
    con = connect(lake)
    try:
        return con.sql(sql)
    except duckdb.Error as exc:
        raise QueryFailed(str(exc)) from None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
