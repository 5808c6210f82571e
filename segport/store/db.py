"""Opening the metadata database: engine, SQLite pragmas, write transactions, migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from segport.store.writelock import WriteLock

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_POOL_SIZE = 40 + 2 * 2 + 3  # Settings.resolved_pool_size() with the default settings
POOL_TIMEOUT_S = 30.0
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class Database:
    """An engine plus a session factory; ``write()`` takes the database's write lock up front."""

    def __init__(self, url: str, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.pool_size = pool_size
        # One bound for both backends (Settings.resolved_pool_size: every thread that may hold a connection at
        # once), with no overflow: a process never opens more than this, and a thread that finds them all taken
        # waits POOL_TIMEOUT_S, then gets MetadataBusy (503), instead of the pool growing without limit.
        kwargs: dict[str, Any] = {
            "poolclass": QueuePool,
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": POOL_TIMEOUT_S,
        }
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _sqlite_pragmas(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in growing steps (up
        # to 100 ms) before it retries: under load, writers of this process then wait seconds for a lock
        # that is free most of the time (measured with bench/load.py). So they queue on a lock of ours first.
        # Processes sharing the file (`segport serve`'s API and engine processes) queue on a file lock too.
        self._write_lock: Any = WriteLock(_sqlite_path(url)) if self.is_sqlite else contextlib.nullcontext()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    @contextmanager
    def connect(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A Core connection for reads on the hot path (no ORM session: a fraction of its CPU per query).

        On SQLite each statement is its own transaction unless ``snapshot`` (one ``BEGIN`` for all of them):
        a one-statement read then costs one call into SQLite instead of three (``BEGIN``, the query,
        ``ROLLBACK``), and every call releases the GIL, which under load takes a while to come back.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite and not snapshot:
                conn.info["segport_no_begin"] = True
            try:
                yield conn
            finally:
                conn.info.pop("segport_no_begin", None)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction that commits on success; on SQLite it is ``BEGIN IMMEDIATE`` (no lost updates)."""
        with self._write_lock, self.engine.connect() as conn:
            if self.is_sqlite:
                conn.info["segport_immediate"] = True
            with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                yield session

    @contextmanager
    def write_core(self) -> Iterator[Connection]:
        """Like :meth:`write`, a Core connection instead of a session (the hot path: a fraction of the CPU)."""
        with self._write_lock, self.engine.connect() as conn:
            if self.is_sqlite:
                conn.info["segport_immediate"] = True
            with conn.begin():
                yield conn

    def lock(self, session: Session, key: str) -> None:
        """In a :meth:`write` transaction: writers locking the same ``key`` take turns until they commit.

        SQLite runs one writer at a time, so this is a no-op there. PostgreSQL runs writers side by side at
        READ COMMITTED: code that reads, decides and writes must lock the rows it read (``with_for_update``),
        or, when it decides on an absence (no identical job yet), a key (a transaction-scoped advisory lock).
        """
        if not self.is_sqlite:
            session.execute(_LOCK, {"key": key})

    def migrate(self) -> None:
        """Bring the schema to the newest revision; processes starting together migrate one at a time."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.info["segport_immediate"] = True
            with conn.begin():
                if not self.is_sqlite:
                    conn.execute(_LOCK, {"key": "segport:migrate"})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._write_lock, WriteLock):
            self._write_lock.close()


def _sqlite_path(url: str) -> Path | None:
    """``<file>.lock`` next to the SQLite file of ``url``; None for an in-memory database."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return None
    return Path(path + ".lock")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        if conn.info.get("segport_no_begin"):
            return  # autocommit: each statement reads its own snapshot (Database.connect)
        immediate = conn.info.pop("segport_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
