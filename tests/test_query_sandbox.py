"""`gpuledger query` is read-only: it reads the warehouse's views and nothing else, and writes nothing anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import allocation_rows, sample_rows
from tests.test_cli import error_line
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES
from warehouse.views import connect

READ_ONLY = (
    "`gpuledger query` is read-only: use SELECT (or EXPLAIN, DESCRIBE, SHOW, SUMMARIZE) over the warehouse's views, "
    "with no file, network or extension access"
)
NO_FILES = "file system operations are disabled by configuration"
PARTITION = "gpu_samples/date=2026-11-02/cluster=c1"


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small warehouse at tmp_path/wh, with the working directory an empty tmp_path/cwd beside it."""
    lake = Lake(tmp_path / "wh", create=True)
    append(lake, GPU_SAMPLES, sample_rows())
    append(lake, GPU_ALLOCATIONS, allocation_rows())
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return lake.root


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return out


def refused(reason: str) -> str:
    return f"Error: query refused: {reason}; {READ_ONLY}"


ATTACKS = [
    ("COPY (SELECT 1) TO '../x.csv'", refused("COPY is not a read, nothing was run")),
    (
        f"COPY (SELECT * FROM gpu_samples) TO '../wh/{PARTITION}/part-x.parquet'",
        refused("COPY is not a read, nothing was run"),
    ),
    ("ATTACH '../evil.duckdb'", refused("ATTACH is not a read, nothing was run")),
    ("INSTALL httpfs", refused("INSTALL is not a read, nothing was run")),
    ("LOAD httpfs", refused("LOAD is not a read, nothing was run")),
    ("CREATE TABLE t AS SELECT 1", refused("CREATE is not a read, nothing was run")),
    ("SET enable_external_access = true", refused("SET is not a read, nothing was run")),
    ("RESET lock_configuration", refused("RESET is not a read, nothing was run")),
    ("PRAGMA enable_profiling", refused("PRAGMA is not a read, nothing was run")),
    ("CALL pragma_version()", refused("CALL is not a read, nothing was run")),
    ("CHECKPOINT", refused("CHECKPOINT is not a read, nothing was run")),
    ("EXPORT DATABASE '../export'", refused("EXPORT is not a read, nothing was run")),
    ("IMPORT DATABASE '../export'", refused("IMPORT is not a read, nothing was run")),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '../x.csv'", refused("EXPLAIN ANALYZE COPY is not a read, nothing was run")),
    (
        "SELECT count(*) FROM gpu_samples; COPY gpu_samples TO '../x.parquet'",
        refused("statement 2 of 2 (COPY) is not a read, nothing was run"),
    ),
    (
        "SELECT 1; /* then */ ATTACH '../evil.duckdb' AS evil; CREATE TABLE evil.t AS SELECT 1",
        refused("statement 2 of 3 (ATTACH) is not a read, nothing was run"),
    ),
    (
        "SELECT * FROM read_csv('/etc/passwd')",
        refused(f'Permission Error: Cannot access file "/etc/passwd" - {NO_FILES}'),
    ),
    (
        "SELECT * FROM read_text('/etc/passwd')",
        refused(f'Permission Error: Cannot access file "/etc/passwd" - {NO_FILES}'),
    ),
    ("SELECT * FROM glob('/etc/*')", refused(f'Permission Error: Cannot access file "/etc/*" - {NO_FILES}')),
    (
        "SELECT * FROM read_parquet('/etc/x.parquet')",
        refused(f'Permission Error: Cannot access file "/etc/x.parquet" - {NO_FILES}'),
    ),
    (
        "SELECT * FROM 'https://example.com/x.parquet'",
        refused(f'Permission Error: Cannot access file "https://example.com/x.parquet" - {NO_FILES}'),
    ),
    ("SELECT * FROM '/etc/passwd'", refused("/etc/passwd is not a warehouse table (files cannot be read)")),
    ("", refused("no SQL statement was given")),
    ("  -- only a comment\n  /* and another */ ", refused("no SQL statement was given")),
]


@pytest.mark.parametrize(("sql", "message"), ATTACKS, ids=[a[0][:40] or "empty" for a in ATTACKS])
def test_a_statement_that_is_not_a_read_of_the_views_is_refused_and_writes_nothing(
    cli, warehouse: Path, tmp_path: Path, sql: str, message: str
) -> None:
    before = tree(tmp_path)
    result = cli("query", "--warehouse", str(warehouse), sql)
    assert result.exit_code == 2
    assert error_line(result) == message
    assert tree(tmp_path) == before


def test_reads_still_work_and_the_refused_copy_left_the_partition_readable(cli, warehouse: Path) -> None:
    cli("query", "--warehouse", str(warehouse), f"COPY gpu_samples TO '../wh/{PARTITION}/part-x.parquet'")
    counted = cli("query", "--warehouse", str(warehouse), "SELECT count(*) AS n FROM gpu_samples", "--format", "csv")
    assert counted.exit_code == 0, counted.output
    assert counted.stdout == "n\n10\n"
    assert cli("warehouse", "check", "--warehouse", str(warehouse)).exit_code == 0


@pytest.mark.parametrize(
    ("sql", "first_line"),
    [
        ("DESCRIBE gpu_samples", "column_name,column_type,null,key,default,extra"),
        ("SHOW TABLES", "name"),
        (
            "SUMMARIZE SELECT util_pct FROM gpu_samples",
            "column_name,column_type,min,max,approx_unique,avg,std,q25,q50,q75,count,null_percentage",
        ),
        ("EXPLAIN SELECT count(*) FROM gpu_samples", "explain_key,explain_value"),
        ("/* a comment first */ -- and a line\nVALUES (1)", "col0"),
        ("SELECT 1 AS a; SELECT count(*) AS n FROM gpu_allocations", "n"),
    ],
)
def test_the_reads_that_are_allowed(cli, warehouse: Path, tmp_path: Path, sql: str, first_line: str) -> None:
    before = tree(tmp_path)
    result = cli("query", "--warehouse", str(warehouse), sql, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == first_line
    assert tree(tmp_path) == before


def test_show_tables_lists_exactly_the_warehouse_tables(cli, warehouse: Path) -> None:
    result = cli("query", "--warehouse", str(warehouse), "SHOW TABLES", "--format", "csv")
    assert result.stdout.split() == [
        "name",
        "bill_lines",
        "gpu_allocations",
        "gpu_minutes",
        "gpu_samples",
        "nodes",
        "prices",
    ]


def test_every_connection_is_sealed_even_without_the_statement_check(warehouse: Path, tmp_path: Path) -> None:
    """``connect`` is the one way into DuckDB: its settings hold for any caller, not only for `gpuledger query`."""
    con = connect(Lake(warehouse))
    before = tree(tmp_path)
    with pytest.raises(duckdb.Error, match="lock"):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.PermissionException):
        con.execute("COPY (SELECT 1) TO '../x.csv'")
    with pytest.raises(duckdb.PermissionException):
        con.execute("ATTACH '../evil.duckdb'")
    with pytest.raises(duckdb.Error):
        con.execute("INSTALL httpfs")
    with pytest.raises(duckdb.PermissionException):
        con.sql("SELECT * FROM read_text('/etc/passwd')").fetchall()
    assert tree(tmp_path) == before
    settings = dict(con.sql("SELECT name, value FROM duckdb_settings()").fetchall())
    assert settings["temp_directory"] == ""
    assert settings["autoload_known_extensions"] == "false"
    assert settings["python_enable_replacements"] == "false"
    assert con.sql("SELECT count(*) FROM gpu_samples").fetchall() == [(10,)]


def test_a_damaged_page_fails_the_query_instead_of_decoding_wrong_numbers(cli, warehouse: Path) -> None:
    """Parts carry a CRC per page; DuckDB's own Parquet reader ignores it, the Arrow datasets behind the views check
    it. A flipped bit that still decodes (a different sum, no error) must stop the query and name the part."""
    [part] = Lake(warehouse).parts(GPU_SAMPLES)
    original = part.read_bytes()
    expected = pq.read_table(part)["util_pct"].to_pylist()
    chunk = next(
        c
        for c in (pq.ParquetFile(part).metadata.row_group(0).column(i) for i in range(18))
        if c.path_in_schema == "util_pct"
    )
    for offset in range(chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        part.write_bytes(bytes(damaged))
        try:
            decoded = pq.read_table(part, page_checksum_verification=False)["util_pct"].to_pylist()
        except (OSError, pa.ArrowException):
            continue
        if decoded != expected:
            break
    else:
        pytest.fail("no single-bit flip decodes silently: the premise of this test")
    result = cli("query", "--warehouse", str(warehouse), "SELECT sum(util_pct) FROM gpu_samples")
    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith(f"Error: corrupt Parquet part {part} (")
    assert "CRC" in line
    assert line.endswith(f"move it aside with `gpuledger warehouse check --warehouse {warehouse} --quarantine`")
