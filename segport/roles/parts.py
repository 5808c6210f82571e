"""The backends a role opens, chosen by name in the settings: the profile engine and the result store.

Only roles open backends (import-linter holds the rest of segport to the Protocols in ``engine/base.py`` and
``results/base.py``).
"""

from __future__ import annotations

import os
from typing import cast

from segport.engine.admission import Admission, AdmittedEngine, Budget, MiB
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
    """The profile engine ``settings.engine`` names, on the data dir (or the server) the settings give, its
    every piece of work admitted into the process's memory budget (segport/engine/admission.py)."""
    budget = Budget.of(settings.engine_memory(), max_running_jobs=settings.max_running_jobs)
    engine: ProfileEngine
    if settings.engine == "duckdb":
        from segport.engine.duckdb.engine import DuckDBEngine

        engine = DuckDBEngine(
            settings.data_dir / "profiles.duckdb",
            memory_limit=settings.duckdb_memory_limit or f"{budget.engine_bytes // MiB}MiB",
            threads=settings.duckdb_threads or budget.threads(os.cpu_count() or 1),
            temp_directory=settings.data_dir / "tmp" / "duckdb",
            export_bytes=budget.export_bytes,
        )
    elif settings.engine == "clickhouse":
        from segport.engine.clickhouse.engine import ClickHouseEngine

        engine = ClickHouseEngine(
            settings.clickhouse_url or f"chdb://{(settings.data_dir / 'clickhouse').resolve()}",
            scratch=settings.data_dir / "tmp",
            keep_s=settings.clickhouse_keep_s,
            import_memory_limit=f"{budget.import_bytes // MiB}MiB",
            query_memory_bytes=budget.engine_bytes,
            spill_bytes=budget.export_bytes // 2,
        )
    else:
        raise ValueError(f"unknown engine {settings.engine!r}")
    admission = Admission(
        budget,
        max_waiting_reads=settings.engine_queue_max,
        read_wait_s=settings.engine_queue_wait_s,
        retry_after_s=settings.retry_after_s,
    )
    return cast(ProfileEngine, AdmittedEngine(engine, admission))


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
