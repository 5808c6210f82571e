"""The one composition root: ``build(settings) -> App``. Nothing is opened at import time.

The HTTP app, the CLI, the worker and the tests all build an :class:`App` and talk to its services.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from segport.engine.base import ProfileEngine
from segport.results.base import ResultStore
from segport.services.data import DataService
from segport.services.exports import ExportService
from segport.settings import Settings
from segport.store.db import Database
from segport.store.meta import MetaStore
from segport.store.queue import JobQueue


@dataclass
class App:
    settings: Settings
    db: Database
    meta: MetaStore
    queue: JobQueue
    engine: ProfileEngine
    results: ResultStore
    exports: ExportService
    data: DataService
    wake: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.engine.close()
        self.db.close()


def build(settings: Settings | None = None, *, with_engine: bool = True) -> App:
    """Open (and migrate) the data dir named by ``settings`` and wire every part together."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_metadata_url())
    db.migrate()
    meta = MetaStore(db)
    queue = JobQueue(db, max_attempts=settings.max_attempts)
    engine = _engine(settings) if with_engine else _NoEngine()
    results = _results(settings)
    wake = threading.Event()
    exports = ExportService(settings, meta, queue, engine, results, wake)
    data = DataService(meta, engine)
    return App(settings, db, meta, queue, engine, results, exports, data, wake)


def _engine(settings: Settings) -> ProfileEngine:
    if settings.engine == "duckdb":
        from segport.engine.duckdb_engine import DuckDBEngine

        return DuckDBEngine(
            settings.data_dir / "profiles.duckdb",
            memory_limit=settings.duckdb_memory_limit,
            import_memory_limit=settings.duckdb_import_memory_limit,
            threads=settings.duckdb_threads,
        )
    if settings.engine == "clickhouse":
        from segport.engine.clickhouse_engine import ClickHouseEngine

        return ClickHouseEngine(
            settings.clickhouse_url or f"chdb://{(settings.data_dir / 'clickhouse').resolve()}",
            scratch=settings.data_dir / "tmp",
            keep_s=settings.clickhouse_keep_s,
            import_memory_limit=settings.duckdb_import_memory_limit,
        )
    raise ValueError(f"unknown engine {settings.engine!r}")


def _results(settings: Settings) -> ResultStore:
    if settings.results == "local":
        from segport.results.local import LocalResultStore

        return LocalResultStore(settings.data_dir / "results")
    raise ValueError(f"unknown result store {settings.results!r}")


class _NoEngine:
    """Stands in for the engine in commands that only touch metadata (tokens, projects)."""

    def __getattr__(self, name: str) -> object:
        def refuse(*_args: object, **_kwargs: object) -> None:
            if name == "close":
                return None
            raise RuntimeError(f"this command did not open the profile engine (needed for {name})")

        return refuse
