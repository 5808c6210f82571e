"""What a process is made of: the :class:`App` a role builds, and the metadata stores every role opens.

Each kind of process has a module of its own in segport/roles/ that composes exactly the parts it has:
``roles/api.py`` (an API process: the engine is the engine process's, through its client),
``roles/engine.py`` (the engine process: the engine itself, and the export runner its workers use) and
``roles/inline.py`` (both in one process: the tests, the bench and the CLI's own commands). Nothing is opened at
import time, and nothing here imports an engine or result-store backend: the roles open those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from segport.datadir import prepare_data_dir
from segport.engine.base import ProfileAccess, ProfileEngine
from segport.results.base import ResultStore
from segport.services.data import DataService
from segport.services.exports import ExportService
from segport.services.queries import QueryService
from segport.services.runner import ExportRunner
from segport.settings import Settings
from segport.store.db import Database
from segport.store.meta import MetaStore
from segport.store.queue import JobQueue
from segport.wake import Wake, WorkerLink


@dataclass
class Stores:
    """The metadata database, its store and the job queue: what every process opens (and all that the commands
    on projects, tokens and jobs need)."""

    settings: Settings
    db: Database
    meta: MetaStore
    queue: JobQueue

    def close(self) -> None:
        self.db.close()


def open_stores(settings: Settings, *, migrate: bool = True) -> Stores:
    """Open the metadata store of ``settings``' data dir; with ``migrate``, bring its schema up to date first
    (`segport serve` does that once, before it starts the processes that then pass ``migrate=False``). The data dir
    is created private, or refused when others may write it (segport/datadir.py)."""
    prepare_data_dir(settings.data_dir)  # private (0700, umask 077), or refused (UnsafeDataDir)
    db = Database(settings.resolved_metadata_url(), settings.resolved_pool_size())
    if migrate:
        db.migrate()
    return Stores(settings, db, MetaStore(db), JobQueue(db, max_attempts=settings.max_attempts))


@dataclass
class App:
    """The parts of a process that serves the API or owns the engine, and the services over them (which the
    HTTP handlers, the console and the CLI call). ``engine`` is what this process may ask of the profiles."""

    settings: Settings
    db: Database
    meta: MetaStore
    queue: JobQueue
    engine: ProfileAccess
    results: ResultStore
    exports: ExportService
    data: DataService
    queries: QueryService

    @classmethod
    def assemble(
        cls, stores: Stores, engine: ProfileAccess, results: ResultStore, link: WorkerLink, **own: Any
    ) -> Self:
        """The services over these parts, wired alike in every role; ``link`` is how a submit or a cancel
        reaches the export workers, ``own`` a subclass's own parts."""
        settings, meta = stores.settings, stores.meta
        exports = ExportService(settings, meta, stores.queue, results, link)
        data = DataService(meta, engine)
        queries = QueryService(meta, engine, data, exports)
        return cls(settings, stores.db, meta, stores.queue, engine, results, exports, data, queries, **own)

    def close(self) -> None:
        self.engine.close()
        self.db.close()


@dataclass
class EngineApp(App):
    """A process that owns the profile engine: it runs exports (its workers take jobs through ``runner`` and
    wait on ``wake``)."""

    engine: ProfileEngine
    runner: ExportRunner
    wake: Wake
