"""Data sources and the event spool in the metadata store, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from segport.domain.events import normalize_events
from segport.errors import DataSourceNotFound, InvalidParameter, ProjectNotFound
from segport.services.collect import LoopCommitter, SpoolWriter
from segport.store.db import MIGRATIONS, Database
from segport.store.events import DataSources, EventSpool, NewBatch, encode_payload, encode_wire_payload
from segport.store.meta import MetaStore
from segport.store.models import Base, utcnow
from segport.store.writelock import WriteLock

P, Q = "Evproj01", "Evproj02"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    database.migrate()
    MetaStore(database).create_project(P, "events")
    MetaStore(database).create_project(Q, "other")
    yield database
    database.close()


def _event(i: int) -> dict[str, object]:
    return {"t": 1764806400000 + i, "type": "CUSTOM", "event": "buy", "user_id": f"u{i}", "user_key": None,
            "device_id": None, "attrs": {"price": "9.5"}, "std": {"platform": "python"}}  # fmt: skip


def test_migration_builds_the_models_schema_and_downgrades(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "data_versions")
    tables = inspect(db.engine).get_table_names()
    assert "event_batches" not in tables and "datasources" not in tables
    db.migrate()
    assert {"event_batches", "datasources"} <= set(inspect(db.engine).get_table_names())


def test_data_sources_add_list_revoke_resolve(db: Database) -> None:
    sources = DataSources(db)
    key, ds1 = sources.add(P, "web")
    key2, ds2 = sources.add(P)
    assert key == key2 and len(key) == 16 and ds1 != ds2
    other_key, ds3 = sources.add(Q, "app")
    assert other_key != key
    assert [s.id for s in sources.list(P)] == [ds1, ds2]
    assert sources.list(P)[0].name == "web"
    assert sources.resolve(key, ds1) == P
    assert sources.resolve(key, ds3) is None  # registered, but to another project
    assert sources.check(key, ds3).problem == "source"
    assert sources.check("0" * 16, ds1).problem == "key"
    first = sources.revoke(ds1)
    assert first.revoked_at is not None
    assert sources.revoke(ds1).revoked_at == first.revoked_at
    assert sources.resolve(key, ds1) is None and sources.check(key, ds1).problem == "revoked"
    assert sources.resolve(key, ds2) == P
    with pytest.raises(DataSourceNotFound):
        sources.revoke("nope")
    with pytest.raises(ProjectNotFound):
        sources.add("Nosuch01")
    with pytest.raises(InvalidParameter):
        sources.add(P, "bad\x00name")


def test_spool_appends_once_per_key_and_hands_out_pending_batches_in_order(db: Database) -> None:
    spool = EventSpool(MetaStore(db))
    assert spool.append(P, "ds", "k1", [_event(1), _event(2)]) is True
    assert spool.append(P, "ds", "k1", [_event(9)]) is False  # a retry: stored once
    assert spool.append(Q, "ds", "k1", [_event(3)]) is True  # the key is per project
    assert spool.append(P, "ds", "k2", [_event(4)]) is True
    batches = spool.pending(10)
    assert [(b.project_id, len(b.events)) for b in batches] == [(P, 2), (Q, 1), (P, 1)]
    assert batches[0].events == [_event(1), _event(2)]
    assert batches[0].datasource_id == "ds" and batches[0].received_at is not None
    assert [b.id for b in spool.pending(1)] == [batches[0].id]
    spool.mark_loaded([batches[0].id, batches[1].id])
    assert [b.id for b in spool.pending(10)] == [batches[2].id]
    assert spool.append(P, "ds", "k1", [_event(1)]) is False  # loaded, still inside the window
    assert spool.prune(utcnow() - timedelta(hours=1)) == 0
    assert spool.prune(utcnow() + timedelta(seconds=1)) == 2
    assert spool.count() == 1
    assert spool.append(P, "ds", "k1", [_event(1)]) is True  # past the window: a new batch


def test_concurrent_appends_of_one_key_store_it_once(db: Database) -> None:
    spool = EventSpool(db)
    results: list[bool] = []

    def send() -> None:
        results.append(spool.append(P, "ds", "same", [_event(1)]))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True]
    assert spool.count(P) == 1


def _new(project: str, key: str, payload: bytes = b"") -> NewBatch:
    return NewBatch(project, "ds", key, 1, payload or encode_payload([_event(1)]))


def test_a_group_commit_stores_each_key_once_and_says_which_were_duplicates(db: Database) -> None:
    spool = EventSpool(db)
    assert spool.append(P, "ds", "old", [_event(1)]) is True
    group = [_new(P, "a"), _new(P, "old"), _new(P, "b"), _new(P, "a"), _new(Q, "a")]
    assert spool.append_many(group) == [True, False, True, False, True]
    assert spool.count(P) == 3 and spool.count(Q) == 1
    assert [b.events for b in spool.pending(10)][1:] == [[_event(1)]] * 3
    assert spool.append_many([_new(P, "a"), _new(P, "c")]) == [False, True]


def test_the_spool_writer_answers_every_waiting_batch_after_one_commit(db: Database) -> None:
    spool = EventSpool(db)
    writer = SpoolWriter(spool)
    results: list[bool] = []

    def send(key: str) -> None:
        results.append(writer.submit(_new(P, key)).result(30))

    threads = [threading.Thread(target=send, args=(f"k{i % 10}",)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 30 + [True] * 10
    assert spool.count(P) == 10


def test_a_json_request_kept_as_its_text_reads_back_as_its_normalized_events(db: Database) -> None:
    wire = [
        {"eventType": "CUSTOM", "eventName": "buy", "timestamp": 1764806400000, "userId": "u1", "deviceId": "d1",
         "attributes": {"price": 9.5, "tags": ["a", "b"]}, "dataSourceId": "ds", "projectKey": "91eaf9b283361032",
         "platform": "python", "latitude": 31.2},
        {"eventType": "VISITOR_ATTRIBUTES", "timestamp": 1764806400001, "deviceId": "d1",
         "attributes": {"city": "上海"}, "dataSourceId": "ds"},
    ]  # fmt: skip
    text = json.dumps(wire, ensure_ascii=False).encode()
    spool = EventSpool(db)
    assert spool.append_many([NewBatch(P, "ds", "w", 2, encode_wire_payload("91eaf9b283361032", text))]) == [True]
    (batch,) = spool.pending(10)
    assert batch.events == normalize_events(wire, "91eaf9b283361032").events
    assert batch.events[0]["attrs"] == {"price": "9.5", "tags": "a||b"}
    assert batch.events[0]["std"] == {"platform": "python", "latitude": "31.2"}


def test_the_spool_writer_appends_one_by_one_when_another_writer_raced_the_group(db: Database) -> None:
    class Raced(EventSpool):
        def append_many(self, batches: Sequence[NewBatch]) -> list[bool] | None:
            # what PostgreSQL's unique index makes of a key another process committed meanwhile
            self.append(P, "ds", "raced", [_event(1)])
            return None

    spool = Raced(db)
    writer = SpoolWriter(spool)
    assert writer.submit(_new(P, "raced")).result(30) is False
    assert writer.submit(_new(P, "fresh")).result(30) is True
    assert spool.count(P) == 2


def test_the_loop_committer_answers_each_request_of_a_group_after_its_commit(db: Database) -> None:
    spool = EventSpool(db)

    async def send_all() -> list[bool]:
        committer = LoopCommitter(SpoolWriter(spool), asyncio.get_running_loop())
        return list(await asyncio.gather(*(committer.commit(_new(P, f"k{i % 5}")) for i in range(20))))

    results = asyncio.run(send_all())
    assert results[:5] == [True] * 5 and results[5:] == [False] * 15  # in order: the first of each key stored
    assert spool.count(P) == 5


def _other_writer(db: Database) -> WriteLock:
    """The metadata store's write lock as another process holds it (its own open file: ``flock`` conflicts)."""
    lock = WriteLock(db._write_lock.path if db.is_sqlite else None)  # noqa: SLF001
    lock.__enter__()
    return lock


def test_the_loop_committer_fails_its_requests_when_no_writer_can_take_them(db: Database) -> None:
    class NoThread(SpoolWriter):
        def submit_lot(self, batches: list[NewBatch], answer: Any) -> None:
            raise RuntimeError("can't start new thread")

    async def send() -> bool:
        return await LoopCommitter(NoThread(EventSpool(db)), asyncio.get_running_loop()).commit(_new(P, "k"))

    other = _other_writer(db)  # so the loop cannot commit the group itself
    try:
        with pytest.raises(RuntimeError, match="new thread"):
            asyncio.run(asyncio.wait_for(send(), 30))
    finally:
        other.release()
    assert EventSpool(db).count(P) == 0


class _Spy(EventSpool):
    """The spool, recording the thread of each SQLite group commit."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.threads: list[int] = []

    def _append_many_sqlite(self, batches: Sequence[NewBatch], now: Any, autocheckpoint: int) -> list[bool]:
        self.threads.append(threading.get_ident())
        return super()._append_many_sqlite(batches, now, autocheckpoint)


def test_on_sqlite_the_loop_commits_a_group_itself_when_no_other_writer_holds_the_store(db: Database) -> None:
    spool = _Spy(db)

    async def send_all() -> tuple[list[bool], int]:
        committer = LoopCommitter(SpoolWriter(spool), asyncio.get_running_loop())
        got = await asyncio.gather(*(committer.commit(_new(P, f"k{i % 3}")) for i in range(9)))
        return list(got), threading.get_ident()

    assert spool.try_append_many([]) == [] and spool.threads == []  # nothing to commit: no transaction
    results, loop_thread = asyncio.run(send_all())
    assert results == [True] * 3 + [False] * 6
    assert spool.count(P) == 3
    if db.is_sqlite:
        assert spool.threads == [loop_thread]  # one group, one transaction, on the loop's own thread
    else:  # PostgreSQL: a round trip never runs on the loop; the writer thread commits
        assert spool.threads == []


def test_the_loop_never_waits_for_another_writer_it_hands_the_group_to_the_writer_thread(tmp_path: Path) -> None:
    db = _sqlite(tmp_path)  # SQLite's write lock (PostgreSQL has none: above)
    spool = _Spy(db)
    other = _other_writer(db)
    released = threading.Event()

    async def scenario() -> tuple[bool, int, bool, int]:
        loop = asyncio.get_running_loop()
        committer = LoopCommitter(SpoolWriter(spool), loop)
        pending = asyncio.ensure_future(committer.commit(_new(P, "held")))
        ticks = 0
        for _ in range(10):  # the loop keeps turning while the other writer holds the store
            await asyncio.sleep(0.02)
            ticks += 1
        done_while_held = pending.done()
        threading.Thread(target=lambda: (other.release(), released.set())).start()
        stored = await asyncio.wait_for(pending, 30)
        return stored, ticks, done_while_held, threading.get_ident()

    try:
        stored, ticks, done_while_held, loop_thread = asyncio.run(scenario())
    finally:
        if not released.wait(5):
            other.release()
    assert ticks == 10 and not done_while_held  # it waited for the lock, the loop did not
    assert stored is True and spool.count(P) == 1
    assert len(spool.threads) == 1 and spool.threads[0] != loop_thread  # the writer thread committed it
    db.close()


def _sqlite(tmp_path: Path) -> Database:
    """A SQLite metadata store of its own (the tests of the SQLite group commit's write lock and WAL)."""
    db = Database(f"sqlite:///{tmp_path / 'm.sqlite'}")
    db.migrate()
    MetaStore(db).create_project(P, "events")
    return db


def _commit_one_by_one(writer: SpoolWriter, n: int, payload: bytes, handover_every: int) -> list[bool]:
    async def send() -> list[bool]:
        committer = LoopCommitter(writer, asyncio.get_running_loop(), handover_every)
        return [await committer.commit(_new(P, f"k{i}", payload)) for i in range(n)]

    return asyncio.run(send())


def test_the_event_loop_never_checkpoints_the_wal_the_writer_thread_bounds_it(tmp_path: Path) -> None:
    """600 batches of ~3 KB (as the SDK's batches of 100 events are kept) put ~3,000 pages in the WAL (~5 pages
    a batch committed alone): with SQLite's default the committing thread, here the event loop, would copy them
    into the database every 1,000 pages. The loop's commits never do, so the WAL file grows past that; the
    writer thread, handed a group every 100 batches, checkpoints once the WAL holds ``wal_pages`` (here 400)
    and the WAL starts over."""
    payload = os.urandom(3000)
    page = 4096 + 24  # a WAL frame: the page and its header
    sizes = {}
    for every in (10**9, 100):
        run = tmp_path / str(every)
        run.mkdir()
        db = _sqlite(run)
        spool = _Spy(db)
        spool.wal_pages = 400
        assert _commit_one_by_one(SpoolWriter(spool), 600, payload, every) == [True] * 600
        sizes[every] = (run / "m.sqlite-wal").stat().st_size
        assert spool.count(P) == 600
        loop_thread = threading.get_ident()  # asyncio.run's loop runs on this thread
        handed = [t for t in spool.threads if t != loop_thread]
        assert len(handed) == (0 if every == 10**9 else 5)  # the 101st, 202nd, ... 505th batch
        db.close()
    assert sizes[10**9] > 2000 * page  # the loop never checkpointed: the WAL holds every batch
    # the writer checkpointed at 400 pages (at every second hand-over: ~545 pages): the WAL started over
    assert sizes[100] < 800 * page
