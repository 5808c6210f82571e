"""Opening the metadata database: engine, SQLite pragmas, write transactions, migrations, and outages.

A PostgreSQL store that cannot be reached (stopped, restarting, the connection cut) turns into
:class:`~segport.errors.MetadataUnavailable` (503, ``Retry-After``) at this boundary, for every block of
:meth:`Database.read`, :meth:`~Database.connect` and :meth:`~Database.write`. An outage is logged once when it
starts and once when it ends, not per request; the pool reconnects by itself (``pool_pre_ping``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from segport.errors import MetadataUnavailable
from segport.store.writelock import WriteLock

log = logging.getLogger("segport.store")

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_POOL_SIZE = 40 + 2 * 2 + 3  # Settings.resolved_pool_size() with the default settings
POOL_TIMEOUT_S = 30.0
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
# SQLSTATEs of a server that is not there for us: class 08 (connection exception), admin/crash shutdown,
# "the database system is starting up / shutting down". A failure of the statement itself (a deadlock, a
# statement timeout, a constraint) is not an outage.
_OUTAGE_STATES = ("57P01", "57P02", "57P03")


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
        self.outage = Outage()

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Run a block against the store: a lost or refused PostgreSQL connection in it is
        :class:`MetadataUnavailable`; a block that succeeds ends an outage."""
        started = time.monotonic()
        try:
            yield
        except SQLAlchemyError as exc:
            reason = None if self.is_sqlite else outage_reason(exc)
            if reason is None:
                raise
            raise self.outage.begin(reason) from None
        self.outage.end(started)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.reachable(), self.sessions() as session:
            yield session

    @contextmanager
    def connect(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A Core connection for reads on the hot path (no ORM session: a fraction of its CPU per query).

        On SQLite each statement is its own transaction unless ``snapshot`` (one ``BEGIN`` for all of them):
        a one-statement read then costs one call into SQLite instead of three (``BEGIN``, the query,
        ``ROLLBACK``), and every call releases the GIL, which under load takes a while to come back.
        """
        with self.reachable(), self.engine.connect() as conn:
            if self.is_sqlite and not snapshot:
                conn.info["segport_no_begin"] = True
            try:
                yield conn
            finally:
                if not conn.invalidated:  # an invalidated one is thrown away (and its info unreadable)
                    conn.info.pop("segport_no_begin", None)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction that commits on success; on SQLite it is ``BEGIN IMMEDIATE`` (no lost updates)."""
        with self.reachable(), self._write_lock, self.engine.connect() as conn:
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
        with self.reachable(), self.engine.connect() as conn:
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


class Outage:
    """Whether this process's metadata store is down now, so that an outage is logged once, not per request.

    An outage begins with the first failure to reach the store. It ends with a block that succeeds although it
    began at least ``settle_s`` after the latest failure: while PostgreSQL shuts down, a block already under way
    on a connection not yet cut may still succeed, and that is no recovery (the log would flap)."""

    def __init__(self, settle_s: float = 1.0) -> None:
        self._lock = threading.Lock()
        self.settle_s = settle_s
        self.since: float | None = None  # time.monotonic() of the first failure of the outage; None: reachable
        self.last_failure = 0.0
        self.count = 0  # outages seen by this process

    def begin(self, reason: str) -> MetadataUnavailable:
        """A failure to reach the store: log it if it starts an outage; the error the caller raises."""
        now = time.monotonic()
        with self._lock:
            self.last_failure = now
            first = self.since is None
            if first:
                self.since = now
                self.count += 1
        if first:
            log.error("metadata store unavailable (%s); requests get 503 METADATA_UNAVAILABLE until it is back", reason)
        return MetadataUnavailable()

    def end(self, started: float) -> None:
        """A block that began at ``started`` (time.monotonic()) succeeded."""
        if self.since is None:  # the usual case: no lock taken
            return
        with self._lock:
            if self.since is None or started - self.last_failure < self.settle_s:
                return
            since, self.since = self.since, None
        log.warning("metadata store reachable again after %.1f s", time.monotonic() - since)


def outage_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the PostgreSQL server cannot be reached (its first line), or None when it is another
    failure (a deadlock, a timeout, a constraint): those stay what they are. An error raised while handling a
    lost connection (SQLAlchemy's PendingRollbackError when the block ends) counts as that loss."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        reason = _own_outage_reason(seen)
        if reason is not None:
            return reason
        seen = seen.__cause__ or seen.__context__
    return None


def _own_outage_reason(exc: BaseException) -> str | None:
    if isinstance(exc, DisconnectionError):
        return str(exc).splitlines()[0] if str(exc) else "connection lost"
    if not isinstance(exc, DBAPIError):
        return None
    state = getattr(exc.orig, "sqlstate", None)
    lost = exc.connection_invalidated or (
        isinstance(exc, OperationalError | InterfaceError)
        and (state is None or state.startswith("08") or state in _OUTAGE_STATES)
    )
    if not lost:
        return None
    text_ = str(exc.orig).strip().splitlines()
    return text_[0] if text_ else type(exc.orig).__name__


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
