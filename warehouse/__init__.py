"""The warehouse: table contract, transactional Parquet lake, idempotent ingest, rollups, DuckDB views."""
