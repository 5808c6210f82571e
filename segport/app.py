"""The one composition root: ``build(settings) -> App``. Nothing is opened at import time.

The HTTP app, the CLI, the worker and the tests all build an :class:`App` and talk to its services.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segport.engine.base import ProfileEngine
from segport.results.base import ResultStore
from segport.services.data import DataService, repair
from segport.services.exports import ExportService
from segport.services.runner import ExportRunner
from segport.settings import Settings
from segport.store.db import Database
from segport.store.meta import MetaStore
from segport.store.queue import JobQueue
from segport.wake import LocalWorkers, UnlinkedWorkers, Wake, WorkerLink


@dataclass
class App:
    settings: Settings
    db: Database
    meta: MetaStore
    queue: JobQueue
    engine: ProfileEngine
    results: ResultStore
    exports: ExportService
    runner: ExportRunner
    data: DataService
    wake: Wake = field(default_factory=Wake)

    def close(self) -> None:
        self.engine.close()
        self.db.close()


def build(
    settings: Settings | None = None, *, with_engine: bool = True, api_process: bool = False, migrate: bool = True
) -> App:
    """Open (and migrate) the data dir named by ``settings`` and wire every part together.

    With ``api_process`` (`segport api`, the API processes of `segport serve`) the App gets the engine an
    API process may use: a remote engine in the engine process at ``engine_url``, or none (engine endpoints
    answer 503) - unless the engine is a shared server every process may open (see ``_api_engine``).
    ``migrate=False``: the caller has brought the schema up to date (`segport serve`, before forking)."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_metadata_url(), settings.resolved_pool_size())
    if migrate:
        db.migrate()
    meta = MetaStore(db)
    queue = JobQueue(db, max_attempts=settings.max_attempts)
    wake = Wake()
    engine: ProfileEngine
    results = _results(settings)
    if api_process:
        engine, link = _api_engine(settings)
        runner = ExportRunner(settings, meta, queue, engine, results)
    else:
        engine = _engine(settings) if with_engine else _NoEngine()
        runner = ExportRunner(settings, meta, queue, engine, results)
        link = LocalWorkers(wake, runner.stop_running)
    exports = ExportService(settings, meta, queue, results, link)
    data = DataService(meta, engine)
    if with_engine and not api_process:  # the engine's owners (not API processes, even on a shared engine)
        repair(meta, engine)  # close any gap a kill left between catalogue and columns
    return App(settings, db, meta, queue, engine, results, exports, runner, data, wake)


# Engines that are servers of their own: any process may open them, API processes included. An embedded
# engine (DuckDB: one writer per file; ClickHouse in process through chdb: one process per folder) is owned by
# the engine process; API processes reach it remotely.
SHARED_ENGINES: frozenset[str] = frozenset({"clickhouse"})


def shared_engine(settings: Settings) -> bool:
    """Whether API processes open the engine themselves: a ClickHouse server (http/https), not chdb."""
    if settings.engine not in SHARED_ENGINES:
        return False
    return settings.clickhouse_url.startswith(("http://", "https://"))


def _api_engine(settings: Settings) -> tuple[ProfileEngine, WorkerLink]:
    from segport.engine.client import EngineClient, RemoteEngine, RemoteWorkers

    if shared_engine(settings):
        # workers of a shared engine still run elsewhere (`segport worker`): reach them there if told where
        link = RemoteWorkers(EngineClient(settings.engine_url)) if settings.engine_url else UnlinkedWorkers()
        return _engine(settings), link
    client = EngineClient(settings.engine_url)
    return RemoteEngine(client), RemoteWorkers(client)


def _engine(settings: Settings) -> ProfileEngine:
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


def _results(settings: Settings) -> ResultStore:
    if settings.results == "local":
        from segport.results.local import LocalResultStore

        return LocalResultStore(settings.data_dir / "results")
    if settings.results == "s3":
        from segport.results.s3 import S3ResultStore

        # only the FIFOs an export streams through live on local disk
        return S3ResultStore(settings, settings.data_dir / "results" / ".staging")
    raise ValueError(f"unknown result store {settings.results!r}")


class _NoEngine:
    """Stands in for the engine in commands that only touch metadata (tokens, projects)."""

    def __getattr__(self, name: str) -> object:
        def refuse(*_args: object, **_kwargs: object) -> None:
            if name == "close":
                return None
            raise RuntimeError(f"this command did not open the profile engine (needed for {name})")

        return refuse
