"""The DuckDB profile engine: a DuckDB file in the data dir (imports, snapshots, COPY exports)."""
