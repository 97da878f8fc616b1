"""DuckDB over the lake, read-only: one view per table over the visible parts (journals honoured), nothing else.

Every DuckDB connection gpuledger opens comes from ``connect``. Each table's parts are registered as an Arrow
dataset (``warehouse.reading``: page CRCs checked), a view named after the table selects from it, and then the
connection is sealed: no file system or network access (so no ``read_csv``, ``glob``, ``COPY``, ``ATTACH``,
``INSTALL``), no extension autoloading, no spilling to a temp directory, no Python variables as tables, and its
configuration locked so no statement can undo any of it. ``run_query`` additionally accepts only statements that
read (``read_only_statements``) and refuses the rest before anything runs.
"""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa

from warehouse.errors import QueryFailed, QueryRefused
from warehouse.lake import Lake
from warehouse.maintenance import first_corrupt
from warehouse.reading import dataset
from warehouse.schema import TABLES

SEALED: dict[str, str | bool] = {
    "temp_directory": "",
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,
    "lock_configuration": True,
}
"""Set after the views exist, in this order (``lock_configuration`` last: from then on no setting can change)."""

_MISSING_TABLE = re.compile(r"Table with name (.+?) does not exist")
_ARROW_READ = "reading the Arrow source failed"
_SPACE = r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)"
_EXPLAIN = re.compile(rf"^{_SPACE}*explain{_SPACE}+(?:analy[sz]e{_SPACE}+)?(?:\([^)]*\){_SPACE}*)?(.*)$", re.I | re.S)


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that can read the warehouse's tables and nothing else."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    for name, table in TABLES.items():
        con.from_arrow(dataset(table, lake.parts(table))).create_view(name)
    for setting, value in SEALED.items():
        con.execute(f"SET {setting} = {_literal(value)}")
    return con


def run_query(lake: Lake, sql: str) -> pa.Table:
    """The result of the last statement of read-only ``sql`` over the views.

    Every statement is checked before the first runs. QueryRefused: a statement that is not a read, no statement
    at all, or a read of anything but the views (a file, a URL). CorruptPart: a damaged part made the read fail.
    QueryFailed: SQL that DuckDB rejects."""
    con = connect(lake)
    try:
        statements = read_only_statements(con, sql)
        for statement in statements[:-1]:
            con.execute(statement.query)
            con.complete()
        return con.sql(statements[-1].query).to_arrow_table()
    except duckdb.PermissionException as exc:
        raise QueryRefused(_first_line(str(exc))) from None
    except duckdb.CatalogException as exc:
        path = _MISSING_TABLE.search(str(exc))
        if path is not None and re.search(r"[/\\.:]", path.group(1)):
            raise QueryRefused(f"{path.group(1)} is not a warehouse table (files cannot be read)") from None
        raise QueryFailed(str(exc)) from None
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        found = first_corrupt(lake) if isinstance(exc, duckdb.IOException) or _ARROW_READ in str(exc) else None
        if found is not None:
            raise found from exc
        raise QueryFailed(str(exc)) from None
    except duckdb.Error as exc:
        raise QueryFailed(str(exc)) from None


def read_only_statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    """The statements of ``sql``, when every one only reads: a SELECT (with VALUES, FROM-first, DESCRIBE, SHOW and
    SUMMARIZE, which DuckDB parses as SELECTs) or an EXPLAIN [ANALYZE] of one. Anything else is QueryRefused."""
    statements = con.extract_statements(sql)
    if not statements:
        raise QueryRefused("no SQL statement was given")
    for number, statement in enumerate(statements, 1):
        if not _reads_only(con, statement):
            what = _keywords(statement.query)
            if len(statements) > 1:
                what = f"statement {number} of {len(statements)} ({what})"
            raise QueryRefused(f"{what} is not a read, nothing was run")
    return statements


def _reads_only(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement) -> bool:
    if statement.type == duckdb.StatementType.SELECT:
        return True
    if statement.type != duckdb.StatementType.EXPLAIN:
        return False
    explained = _EXPLAIN.match(statement.query)
    if explained is None:
        return False
    inner = con.extract_statements(explained.group(1))
    return len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT


def _keywords(query: str) -> str:
    """The statement's leading keyword, upper-cased (``COPY``), with what an EXPLAIN explains (``EXPLAIN COPY``)."""
    words = re.sub(rf"{_SPACE}+", " ", query, flags=re.S).strip().split(" ")
    lead = [w.upper() for w in words[:3] if re.fullmatch(r"[A-Za-z_]+", w)]
    if lead[:1] == ["EXPLAIN"]:
        return " ".join(lead[:3] if lead[1:2] == ["ANALYZE"] else lead[:2])
    return lead[0] if lead else "this statement"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "refused"


def _literal(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "'" + value.replace("'", "''") + "'"
