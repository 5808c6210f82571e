"""Data sources and the event spool in the metadata store.

A collect request is accepted only for a project's collection key and one of its data sources that is not
revoked (:class:`DataSources`). An accepted batch is committed to the spool (:class:`EventSpool`) before the
API answers 200; the engine role loads pending batches into its event store and marks them loaded. A spool row
outlives its load by :data:`DEDUP_WINDOW` so a retried request that arrives late is still recognised.
"""

from __future__ import annotations

import gzip
import json
import logging
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cramjam
from pydantic_core import to_json
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from segport.domain.events import decode_json_list, json_event_rows, json_is_clean, normalize_events
from segport.domain.text import display_name_problem
from segport.errors import DataSourceNotFound, InvalidParameter, ProjectNotFound, SegportError
from segport.store.db import Database
from segport.store.models import DataSourceRow, EventBatchRow, Project, utcnow

log = logging.getLogger("segport.spool")
# A retried batch (same key) is stored once while its spool row exists: pending, and for this long after the
# engine loaded it (the engine prunes with ``prune(utcnow() - DEDUP_WINDOW)``).
DEDUP_WINDOW = timedelta(hours=24)
GZIP_LEVEL = 1  # the payload is read once, by the loader: speed over size

_PROJECTS, _SOURCES, _BATCHES = Project.__table__, DataSourceRow.__table__, EventBatchRow.__table__
_RESOLVE = (
    select(_PROJECTS.c.id, _SOURCES.c.id.label("source"), _SOURCES.c.revoked_at)
    .select_from(
        _PROJECTS.outerjoin(
            _SOURCES, (_SOURCES.c.project_id == _PROJECTS.c.id) & (_SOURCES.c.id == bindparam("datasource_id"))
        )
    )
    .where(_PROJECTS.c.collect_key == bindparam("project_key"))
)
_INSERT = insert(_BATCHES)
# The spool's WAL (SQLite) is checkpointed by the group commit's writer thread once it holds this many pages
# (~40 MB): only when the engine process, whose commits checkpoint at SQLite's default 1,000, is not running
# (EventSpool._append_many_sqlite).
WAL_PAGES = 10_000
# The group commit's insert on SQLite, with the driver's own statement (EventSpool._append_many_sqlite).
_SQLITE_INSERT = (
    "INSERT INTO event_batches (project_id, datasource_id, dedup_key, received_at, n_events, payload, loaded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (project_id, dedup_key) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class DataSource:
    id: str
    project_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a collection key and a dataSourceId name: the project, or why a request for them is refused."""

    project_id: str | None
    problem: str | None  # "key" (unknown collection key), "source" (unknown here) or "revoked"


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch to commit to the spool: its payload already encoded (:func:`encode_payload` or
    :func:`encode_wire_payload`)."""

    project_id: str
    datasource_id: str
    dedup_key: str
    n_events: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    id: int
    project_id: str
    events: list[dict[str, Any]]
    datasource_id: str = ""
    received_at: datetime | None = None
    # the events as tuples (t, type, event, user_id, user_key, device_id, attrs, std) when the loader asked for
    # them (``pending(rows=True)``) and the batch is a JSON text in the common shape; ``events`` is then empty
    rows: list[tuple[Any, ...]] | None = None


def _database(meta: Any) -> Database:
    """A :class:`Database` from itself or from a store that holds one (``MetaStore(db).db``)."""
    return meta if isinstance(meta, Database) else meta.db


def new_collect_key() -> str:
    """16 lowercase hex digits, the shape of GrowingIO's project keys."""
    return secrets.token_hex(8)


def new_datasource_id() -> str:
    """16 lowercase hex digits, the shape of GrowingIO's dataSourceIds."""
    return secrets.token_hex(8)


class DataSources:
    def __init__(self, meta: Any) -> None:
        self.db = _database(meta)

    def add(self, project_id: str, name: str = "") -> tuple[str, str]:
        """A new data source of ``project_id``: ``(collection key, dataSourceId)``. The project's collection
        key is made on its first data source and stays the same after."""
        if name:
            problem = display_name_problem(name)
            if problem:
                raise InvalidParameter(f"data source name {name[:40]!r} is refused: {problem}")
        with self.db.write() as s:
            project = s.get(Project, project_id)
            if project is None:
                raise ProjectNotFound(f"project {project_id!r} not found")
            if project.collect_key is None:
                project.collect_key = new_collect_key()
            source = DataSourceRow(id=new_datasource_id(), project_id=project_id, name=name, created_at=utcnow())
            s.add(source)
            return project.collect_key, source.id

    def collect_key(self, project_id: str) -> str | None:
        with self.db.read() as s:
            project = s.get(Project, project_id)
        if project is None:
            raise ProjectNotFound(f"project {project_id!r} not found")
        return project.collect_key

    def list(self, project_id: str) -> list[DataSource]:
        with self.db.read() as s:
            if s.get(Project, project_id) is None:
                raise ProjectNotFound(f"project {project_id!r} not found")
            rows = s.scalars(
                select(DataSourceRow)
                .where(DataSourceRow.project_id == project_id)
                .order_by(DataSourceRow.created_at, DataSourceRow.id)
            ).all()
        return [DataSource(r.id, r.project_id, r.name, r.created_at, r.revoked_at) for r in rows]

    def get(self, datasource_id: str) -> DataSource:
        with self.db.read() as s:
            r = s.get(DataSourceRow, datasource_id)
        if r is None:
            raise DataSourceNotFound(f"data source {datasource_id!r} not found")
        return DataSource(r.id, r.project_id, r.name, r.created_at, r.revoked_at)

    def revoke(self, datasource_id: str) -> DataSource:
        """Refuse the data source's requests from now on (revoking twice keeps the first time)."""
        with self.db.write() as s:
            r = s.get(DataSourceRow, datasource_id)
            if r is None:
                raise DataSourceNotFound(f"data source {datasource_id!r} not found")
            if r.revoked_at is None:
                r.revoked_at = utcnow()
            return DataSource(r.id, r.project_id, r.name, r.created_at, r.revoked_at)

    def check(self, project_key: str, datasource_id: str) -> Resolution:
        with self.db.connect() as conn:
            row = conn.execute(_RESOLVE, {"project_key": project_key, "datasource_id": datasource_id}).first()
        if row is None:
            return Resolution(None, "key")
        if row.source is None:
            return Resolution(None, "source")
        if row.revoked_at is not None:
            return Resolution(None, "revoked")
        return Resolution(row.id, None)

    def resolve(self, project_key: str, datasource_id: str) -> str | None:
        """The project of a collection key, if ``datasource_id`` is one of its data sources and not revoked."""
        return self.check(project_key, datasource_id).project_id


def encode_payload(events: Sequence[dict[str, Any]]) -> bytes:
    """gzip of the events' UTF-8 JSON (compact)."""
    return gzip.compress(to_json(events), GZIP_LEVEL)


_WIRE = b"\x00W"  # a payload that is the request's own JSON text (gzip's starts with 0x1f 0x8b)


def encode_wire_payload(project_key: str, text: bytes) -> bytes:
    """A JSON batch as the SDK sent it (its text once gzip, snappy and XOR are undone), snappy-compressed, with
    the collection key it came to: the collect path checks it and the loader normalizes it again
    (:func:`segport.domain.events.normalize_events` gives the same events for the same text), which spares the
    request the re-encoding of the normalized events."""
    key = project_key.encode()
    if len(key) > 255:
        raise ValueError("a collection key longer than 255 bytes")
    return _WIRE + bytes([len(key)]) + key + bytes(cramjam.snappy.compress_raw(text))


def decode_payload(payload: bytes) -> list[dict[str, Any]]:
    """The normalized events of a spool payload (either form)."""
    if payload[:2] == _WIRE:
        n = payload[2]
        project_key = payload[3 : 3 + n].decode()
        text = bytes(cramjam.snappy.decompress_raw(payload[3 + n :]))
        raw = decode_json_list(text, "events")
        return normalize_events(raw, project_key, clean=json_is_clean(text)).events
    events: list[dict[str, Any]] = json.loads(gzip.decompress(payload))
    return events


def decode_rows(payload: bytes) -> list[tuple[Any, ...]] | None:
    """The events of a spool payload as :func:`segport.domain.events.json_event_rows` gives them (a JSON text in
    the common shape), or None: :func:`decode_payload` then."""
    if payload[:2] != _WIRE:
        return None
    n = payload[2]
    text = bytes(cramjam.snappy.decompress_raw(payload[3 + n :]))
    if not json_is_clean(text):
        return None
    return json_event_rows(text, payload[3 : 3 + n].decode())


class EventSpool:
    def __init__(self, meta: Any, *, wal_pages: int = WAL_PAGES) -> None:
        self.db = _database(meta)
        self.wal_pages = wal_pages
        self._local = threading.local()
        self._received: Any = None

    def append(
        self,
        project_id: str,
        datasource_id: str,
        dedup_key: str,
        events: Sequence[dict[str, Any]],
        *,
        payload: bytes | None = None,
        n_events: int | None = None,
    ) -> bool:
        """Commit one batch; False (and nothing written) if a batch with this key is already in the spool.

        ``payload`` is the batch already encoded by :func:`encode_payload` (the caller may do that outside
        the write lock)."""
        row = {
            "project_id": project_id,
            "datasource_id": datasource_id,
            "dedup_key": dedup_key,
            "received_at": utcnow(),
            "n_events": len(events) if n_events is None else n_events,
            "payload": payload if payload is not None else encode_payload(events),
            "loaded_at": None,
        }
        try:
            with self.db.write_core() as conn:
                conn.execute(_INSERT, row)
        except IntegrityError:
            if self.contains(project_id, dedup_key):
                return False
            raise
        return True

    def append_many(self, batches: Sequence[NewBatch]) -> list[bool] | None:
        """Commit several batches in one transaction (one commit for all: group commit); for each, False if
        its key is already in the spool or earlier in ``batches`` (nothing written for it). None, and nothing
        written at all, if another writer committed one of the keys meanwhile (PostgreSQL): the caller then
        appends them one by one."""
        if not batches:
            return []
        now = utcnow()
        if self.db.is_sqlite:
            with self.db.reachable(), self.db._write_lock:  # noqa: SLF001 - the same lock as Database.write_core
                return self._append_many_sqlite(batches, now, self.wal_pages)
        try:
            with self.db.reachable(), self.db.write_core() as conn:
                seen: set[tuple[str, str]] = set()
                for project_id in {b.project_id for b in batches}:
                    keys = [b.dedup_key for b in batches if b.project_id == project_id]
                    found = conn.execute(
                        select(_BATCHES.c.dedup_key).where(
                            _BATCHES.c.project_id == project_id, _BATCHES.c.dedup_key.in_(keys)
                        )
                    ).scalars()
                    seen.update((project_id, k) for k in found)
                fresh: list[bool] = []
                rows: list[dict[str, Any]] = []
                for b in batches:
                    new = (b.project_id, b.dedup_key) not in seen
                    fresh.append(new)
                    if new:
                        seen.add((b.project_id, b.dedup_key))
                        rows.append(
                            {
                                "project_id": b.project_id,
                                "datasource_id": b.datasource_id,
                                "dedup_key": b.dedup_key,
                                "received_at": now,
                                "n_events": b.n_events,
                                "payload": b.payload,
                                "loaded_at": None,
                            }
                        )
                if rows:
                    conn.execute(_INSERT, rows)
        except IntegrityError:
            return None
        return fresh

    def try_append_many(self, batches: Sequence[NewBatch]) -> list[bool] | None:
        """:meth:`append_many` now, on the calling thread, if that cannot wait for another writer: on SQLite
        with the write lock free at this moment (no other thread or process writing). None, and nothing
        written, if the lock is held or the store is PostgreSQL (a round trip): the caller then hands the
        batches to a thread that may wait (:class:`segport.services.collect.SpoolWriter`)."""
        if not batches:
            return []
        lock = self.db._write_lock  # noqa: SLF001 - the same lock as Database.write_core
        if not self.db.is_sqlite or not lock.acquire_nowait():
            return None
        try:
            with self.db.reachable():
                return self._append_many_sqlite(batches, utcnow(), 0)
        finally:
            lock.release()

    def _append_many_sqlite(self, batches: Sequence[NewBatch], now: datetime, autocheckpoint: int) -> list[bool]:
        """:meth:`append_many` on SQLite, with the driver alone (the group commit's hot path: SQLAlchemy's
        statement, transaction and pool machinery took most of the writer's time): one ``BEGIN IMMEDIATE``
        under the database's write lock (held by the caller), so no other writer runs meanwhile and ``ON
        CONFLICT DO NOTHING`` tells a key already there (or earlier in the group) by its row count. Each
        calling thread keeps one connection of the pool for it (the group commit's writer thread and the
        event loop's thread of an API process).

        The WAL: SQLite's default copies it into the database once it holds 1,000 pages, on the thread whose
        commit crossed the mark, ~6 µs a page (~5 pages a batch): the event loop of an API process, held up
        ~8 ms every ~200 batches. So the loop's commits (:meth:`try_append_many`) never checkpoint. The engine
        process's commits do, at SQLite's default: the loader marks each round's batches loaded, every round.
        The writer thread's commits checkpoint once the WAL holds :attr:`wal_pages` pages, which it reaches
        only while no engine runs (the loop hands the writer a group every ``LoopCommitter.handover_every``
        batches, so the WAL stays bounded then too). docs/events.md, "Nothing lost, nothing doubled": "Who
        commits, and the WAL"."""
        driver = self._driver(autocheckpoint)
        if self._received is None:
            self._received = _BATCHES.c.received_at.type.bind_processor(self.db.engine.dialect) or (lambda v: v)
        received = self._received(now)
        driver.execute("BEGIN IMMEDIATE")
        try:
            fresh = [
                driver.execute(
                    _SQLITE_INSERT, (b.project_id, b.datasource_id, b.dedup_key, received, b.n_events, b.payload)
                ).rowcount
                == 1
                for b in batches
            ]
            driver.commit()
        except BaseException:
            driver.rollback()
            raise
        return fresh

    def _driver(self, autocheckpoint: int) -> Any:
        """The calling thread's own SQLite connection for the group commit (kept: one per committing thread),
        set to checkpoint the WAL once it holds ``autocheckpoint`` pages (0: never) as it commits."""
        local = self._local
        raw = getattr(local, "raw", None)
        if raw is None:
            raw = local.raw = self.db.engine.raw_connection()
            local.autocheckpoint = None
        if local.autocheckpoint != autocheckpoint:
            raw.driver_connection.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
            local.autocheckpoint = autocheckpoint
        return raw.driver_connection

    def contains(self, project_id: str, dedup_key: str) -> bool:
        with self.db.connect() as conn:
            found = conn.execute(
                select(_BATCHES.c.id).where(_BATCHES.c.project_id == project_id, _BATCHES.c.dedup_key == dedup_key)
            ).first()
        return found is not None

    def pending(self, limit: int = 100, *, rows: bool = False) -> list[SpoolBatch]:
        """Batches not loaded yet, oldest first (with ``rows``, those it can be given as tuples: ``SpoolBatch.rows``)."""
        query = (
            select(
                _BATCHES.c.id,
                _BATCHES.c.project_id,
                _BATCHES.c.payload,
                _BATCHES.c.datasource_id,
                _BATCHES.c.received_at,
            )
            .where(_BATCHES.c.loaded_at.is_(None))
            .order_by(_BATCHES.c.id)
            .limit(limit)
        )
        with self.db.connect() as conn:
            found = conn.execute(query).all()
        out: list[SpoolBatch] = []
        for r in found:
            tuples = decode_rows(r.payload) if rows else None
            events = _events_of(r.id, r.payload) if tuples is None else []
            out.append(SpoolBatch(r.id, r.project_id, events, r.datasource_id, _aware(r.received_at), tuples))
        return out

    def mark_loaded(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.db.write() as s:
            s.execute(
                update(_BATCHES)
                .where(_BATCHES.c.id.in_(ids), _BATCHES.c.loaded_at.is_(None))
                .values(loaded_at=utcnow())
            )

    def prune(self, loaded_before: datetime) -> int:
        """Delete the batches loaded before ``loaded_before``; how many went."""
        with self.db.write() as s:
            result = s.execute(
                delete(_BATCHES).where(_BATCHES.c.loaded_at.is_not(None), _BATCHES.c.loaded_at < loaded_before)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def count(self, project_id: str | None = None) -> int:
        query = select(func.count()).select_from(_BATCHES)
        if project_id is not None:
            query = query.where(_BATCHES.c.project_id == project_id)
        with self.db.connect() as conn:
            return int(conn.scalar(query) or 0)


def _events_of(batch_id: int, payload: bytes) -> list[dict[str, Any]]:
    """The batch's events; none (logged) for a request text that no longer passes the intake's checks (which
    only a change of those checks between its 200 and its load could cause): it must not hold up the spool."""
    try:
        return decode_payload(payload)
    except SegportError as exc:
        log.error("spool batch %s set aside: its events no longer pass the intake's checks: %s", batch_id, exc)
        return []


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else (value if value.tzinfo else value.replace(tzinfo=UTC))
