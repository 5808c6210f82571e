"""The backends a role opens, chosen by name in the settings: the profile engine and the result store.

Only roles open backends (import-linter holds the rest of segport to the Protocols in ``engine/base.py`` and
``results/base.py``).
"""

from __future__ import annotations

from segport.engine.base import ProfileEngine
from segport.results.base import ResultStore
from segport.settings import Settings

# Engines that are servers of their own: any process may open them, API processes included. An embedded
# engine (DuckDB: one writer per file; ClickHouse in process through chdb: one process per folder) is owned by
# the engine process; API processes reach it remotely.
SHARED_ENGINES: frozenset[str] = frozenset({"clickhouse"})


def shared_engine(settings: Settings) -> bool:
    """Whether API processes open the engine themselves: a ClickHouse server (http/https), not chdb."""
    if settings.engine not in SHARED_ENGINES:
        return False
    return settings.clickhouse_url.startswith(("http://", "https://"))


def open_engine(settings: Settings) -> ProfileEngine:
    """The profile engine ``settings.engine`` names, on the data dir (or the server) the settings give."""
    if settings.engine == "duckdb":
        from segport.engine.duckdb.engine import DuckDBEngine

        return DuckDBEngine(
            settings.data_dir / "profiles.duckdb",
            memory_limit=settings.duckdb_memory_limit,
            import_memory_limit=settings.duckdb_import_memory_limit,
            threads=settings.duckdb_threads,
        )
    if settings.engine == "clickhouse":
        from segport.engine.clickhouse.engine import ClickHouseEngine

        return ClickHouseEngine(
            settings.clickhouse_url or f"chdb://{(settings.data_dir / 'clickhouse').resolve()}",
            scratch=settings.data_dir / "tmp",
            keep_s=settings.clickhouse_keep_s,
            import_memory_limit=settings.duckdb_import_memory_limit,
        )
    raise ValueError(f"unknown engine {settings.engine!r}")


def open_results(settings: Settings) -> ResultStore:
    """The result store ``settings.results`` names."""
    if settings.results == "local":
        from segport.results.local import LocalResultStore

        return LocalResultStore(settings.data_dir / "results")
    if settings.results == "s3":
        from segport.results.s3 import S3ResultStore

        # only the FIFOs an export streams through live on local disk
        return S3ResultStore(settings, settings.data_dir / "results" / ".staging")
    raise ValueError(f"unknown result store {settings.results!r}")
