"""The metadata store and the job queue on a real PostgreSQL 15 server (started by tests/pg_support.py).

What SQLite gives for free by running one writer at a time, PostgreSQL must get from row locks: these tests
race real connections against each other and check no job is ever handed to two workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import StatementError

from segport.domain.jobs import Stage
from segport.domain.keys import CatalogEntry, KeyKind, ValueType
from segport.errors import AlreadyExists, Conflict, InvalidParameter, SegmentNotFound, Unauthorized
from segport.store.db import MIGRATIONS, Database
from segport.store.meta import MetaStore
from segport.store.models import Base, JobRow, Project, SegmentRow, utcnow
from segport.store.queue import JobQueue, LeaseLost

P = "Pgproj01"


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    database.migrate()
    MetaStore(database).create_project(P, "pg")
    yield database
    database.close()


def job_maker(fingerprint: str | None = None) -> Callable[[], JobRow]:
    """A JobRow factory like ExportService.submit's; each call gets a fresh id and name."""

    def make() -> JobRow:
        now = utcnow()
        ident = _ids.next()
        return JobRow(
            id=ident,
            name=f"DES-{ident}",
            project_id=P,
            target_kind="segment",
            target_key="s",
            target_name="s",
            spec="{}",
            fingerprint=fingerprint or f"fp-{ident}",
            stage=Stage.NONE.value,
            files="[]",
            attempts=0,
            created_at=now,
            file_day="2026-11-28",
        )

    return make


class _Ids:
    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._n += 1
            return f"j{self._n:07d}"


_ids = _Ids()


def run_together(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run ``fn(i)`` in ``n`` threads released at once; return each result (or the exception it raised)."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def body(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected and asserted on by the caller
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# --- schema ---------------------------------------------------------------------------------------
def test_migrations_from_empty_build_exactly_the_models_schema(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        assert inspect(db.engine).get_table_names() == []
        db.migrate()
        db.migrate()  # a second start finds the schema current
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        with db.engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        columns = {c["name"]: c for c in inspect(db.engine).get_columns("jobs")}
        assert str(columns["bytes"]["type"]) == "BIGINT"
        assert columns["lease_owner"]["type"].length == 255
    finally:
        db.close()


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrading_a_0001_store_keeps_its_jobs_and_widens_their_sizes(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")  # a store made before this migration existed
        # rows written with the 0001 columns only: the models describe the newest schema
        old = job_maker()()
        v0001 = {c["name"] for c in inspect(db.engine).get_columns("jobs")}
        with db.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO projects (id, name, timezone, created_at) VALUES (:id, 'old', 'UTC', :at)"),
                {"id": P, "at": utcnow().replace(tzinfo=None)},
            )
            values = {c.name: getattr(old, c.key) for c in JobRow.__table__.columns if c.name in v0001}
            conn.execute(JobRow.__table__.insert().values(**values))
        queue = JobQueue(db, max_attempts=3)
        db.migrate()
        assert queue.get(old.id).fingerprint == old.fingerprint
        queue.claim("w", 60)
        queue.transition(old.id, Stage.FINISH, owner="w", bytes=5 * 2**30)
        assert queue.get(old.id).bytes == 5 * 2**30
    finally:
        db.close()


def test_processes_starting_together_on_an_empty_database_migrate_once(pg_url: str) -> None:
    def start(_i: int) -> str:
        db = Database(pg_url)
        try:
            db.migrate()
            with db.engine.connect() as conn:
                return str(conn.scalar(text("SELECT string_agg(version_num, ',') FROM alembic_version")))
        finally:
            db.close()

    results = run_together(4, start)
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert results == [head] * 4


def test_utc_datetimes_are_stored_as_utc_and_come_back_aware(db: Database) -> None:
    shanghai = datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=ZoneInfo("Asia/Shanghai"))
    with db.write() as s:
        s.add(Project(id="Tz000001", name="tz", created_at=shanghai))
    with db.read() as s:
        back = s.get(Project, "Tz000001")
        raw = s.scalar(text("SELECT created_at::text FROM projects WHERE id = 'Tz000001'"))
    assert back is not None and back.created_at == shanghai and back.created_at.tzinfo is UTC
    assert raw == "2026-05-01 01:30:15.123456"
    with pytest.raises(StatementError, match="naive datetime"), db.write() as s:
        s.add(Project(id="Tz000002", name="tz", created_at=datetime(2026, 5, 1)))


# --- projects, tokens, catalogue, segments ----------------------------------------------------------
def test_projects_tokens_catalogue_and_segments_work_on_postgres(db: Database) -> None:
    meta = MetaStore(db)
    with pytest.raises(AlreadyExists):
        meta.create_project(P, "again")
    meta.create_project("Pgproj02", "two", "Europe/Paris")
    assert [p.id for p in meta.projects()] == [P, "Pgproj02"]

    token_id, raw = meta.create_token([P, P], label="ci")
    _, admin_raw = meta.create_token([], admin=True)
    who = meta.authenticate(raw)
    assert (who.token_id, who.admin, who.projects) == (token_id, False, frozenset({P}))
    assert meta.authenticate(admin_raw).admin
    meta.revoke_token(raw)
    with pytest.raises(Unauthorized):
        meta.authenticate(raw)
    meta.revoke_token(str(token_id))  # by id, again: stays revoked
    assert [(t.id, projects) for t, projects in meta.tokens()][0] == (token_id, [P])

    entries = [
        CatalogEntry("usr_city", KeyKind.PROPERTY, "城市", ValueType.STRING, False, ""),
        CatalogEntry("tag_rfm", KeyKind.TAG, "会员等级", ValueType.STRING, False, ""),
    ]
    assert meta.upsert_catalog(P, entries) == (2, 0)
    renamed = [CatalogEntry("usr_city", KeyKind.PROPERTY, "City", ValueType.STRING, False, "where")]
    assert meta.upsert_catalog(P, renamed) == (0, 1)
    with pytest.raises(Conflict, match="cannot change"):
        meta.upsert_catalog(P, [CatalogEntry("usr_city", KeyKind.PROPERTY, "x", ValueType.INT, False, "")])
    assert [(e.key, e.name) for e in meta.catalog(P).entries.values()] == [
        ("usr_city", "City"),
        ("tag_rfm", "会员等级"),
    ]
    meta.delete_catalog_key(P, "tag_rfm")
    assert [e.key for e in meta.catalog(P).entries.values()] == ["usr_city"]

    for i in range(3):
        meta.add_segment(
            SegmentRow(
                project_id=P,
                key=f"seg_{i}",
                id=f"Seg0000{i}",
                name=f"分群{i}",
                created_at=datetime(2026, 1, 1 + i, tzinfo=UTC),
            )
        )
    with pytest.raises(AlreadyExists):
        meta.add_segment(SegmentRow(project_id=P, key="seg_0", id="Seg00009", name="dup"))
    page, total = meta.segments(P, limit=2, offset=1)
    assert ([r.key for r in page], total) == (["seg_1", "seg_2"], 3)
    meta.update_segment(P, "seg_1", detector_stage="FINISH", total_users=3_000)
    assert meta.segment(P, "seg_1").total_users == 3_000
    meta.delete_segment(P, "seg_1")
    with pytest.raises(SegmentNotFound):
        meta.segment(P, "seg_1")


def test_concurrent_creates_of_one_project_make_it_once_and_refuse_the_rest(db: Database) -> None:
    meta = MetaStore(db)
    results = run_together(8, lambda i: meta.create_project("Racer001", f"racer {i}"))
    assert sum(isinstance(r, Project) for r in results) == 1
    assert sum(isinstance(r, AlreadyExists) for r in results) == 7, results


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_text_longer_than_its_column_is_refused_alike_on_both_backends(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    try:
        database.migrate()
        meta = MetaStore(database)
        with pytest.raises(InvalidParameter, match=r"project name is too long: at most 200 characters \(got 201\)"):
            meta.create_project("Long0001", "名" * 201)
        assert meta.projects() == []
        meta.create_project("Long0001", "名" * 200)
        with pytest.raises(InvalidParameter, match="token label is too long"):
            meta.create_token(["Long0001"], label="x" * 201)
        assert meta.tokens() == []
    finally:
        database.close()


# --- the queue --------------------------------------------------------------------------------------
def test_sizes_past_2_gib_and_long_host_names_are_recorded(db: Database) -> None:
    queue = JobQueue(db, max_attempts=3)
    job, _ = queue.submit(job_maker())
    owner = "h" * 64 + ":4194304:abcdef/inline"  # the longest host name Linux allows, as a worker names itself
    assert queue.claim(owner, 60) is not None
    queue.transition(job.id, Stage.FINISH, owner=owner, rows=3_000_000_000, bytes=5 * 2**30)
    back = queue.get(job.id)
    assert (back.stage, back.rows, back.bytes) == (Stage.FINISH.value, 3_000_000_000, 5 * 2**30)


def test_identical_concurrent_submits_make_one_job(db: Database) -> None:
    queue = JobQueue(db, max_attempts=3)
    make = job_maker(fingerprint="same-request")
    results = run_together(8, lambda _i: queue.submit(make))
    assert all(isinstance(r, tuple) for r in results), results
    assert sum(created for _, created in results) == 1  # type: ignore[misc]
    assert len({job.id for job, _ in results}) == 1  # type: ignore[misc]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(JobRow)) == 1


def test_200_jobs_claimed_by_8_threads_each_go_to_exactly_one(db: Database) -> None:
    queue = JobQueue(db, max_attempts=3)
    make = job_maker()
    with db.write() as s:
        s.add_all(make() for _ in range(200))
    claimed: dict[str, list[str]] = {}

    def drain(i: int) -> list[str]:
        mine = []
        while (row := queue.claim(f"worker-{i}", 60)) is not None:
            mine.append(row.id)
        claimed[f"worker-{i}"] = mine
        return mine

    started = time.monotonic()
    results = run_together(8, drain)
    elapsed = time.monotonic() - started
    all_ids = [job_id for r in results for job_id in r]  # type: ignore[union-attr]
    assert len(all_ids) == 200 and len(set(all_ids)) == 200
    assert sum(1 for mine in claimed.values() if mine) >= 2, "the threads never competed"
    with db.read() as s:
        rows = list(s.scalars(select(JobRow)))
    assert {(r.stage, r.attempts) for r in rows} == {(Stage.RUNNING.value, 1)}
    assert all(r.id in claimed[r.lease_owner or ""] for r in rows)
    assert queue.claim("late", 60) is None
    assert elapsed < 20


def test_concurrent_claims_never_pass_the_per_project_running_cap(db: Database) -> None:
    queue = JobQueue(db, max_attempts=3)
    make = job_maker()
    with db.write() as s:
        s.add_all(make() for _ in range(20))
    results = run_together(8, lambda i: queue.claim(f"worker-{i}", 60, max_running_per_project=2))
    claimed = [r for r in results if isinstance(r, JobRow)]
    assert not [r for r in results if isinstance(r, Exception)]
    assert len(claimed) == 2
    with db.read() as s:
        running = s.scalar(select(func.count()).select_from(JobRow).where(JobRow.stage == Stage.RUNNING.value))
    assert running == 2


def test_a_claim_skips_a_job_another_transaction_holds_instead_of_waiting(db: Database) -> None:
    queue = JobQueue(db, max_attempts=3)
    first, _ = queue.submit(job_maker())
    second, _ = queue.submit(job_maker())
    with db.write() as s:
        s.get(JobRow, first.id, with_for_update=True)  # held by an unfinished claim elsewhere
        got: list[JobRow | None] = []
        t = threading.Thread(target=lambda: got.append(queue.claim("other", 60)))
        t.start()
        t.join(10)
        assert not t.is_alive(), "the claim waited for the lock instead of skipping the row"
    assert got[0] is not None and got[0].id == second.id


def test_a_lapsed_lease_is_reclaimed_and_the_old_owner_is_refused(db: Database) -> None:
    queue = JobQueue(db, max_attempts=2)
    job, _ = queue.submit(job_maker())
    assert queue.claim("A", 60) is not None
    assert queue.claim("B", 60) is None  # A's lease is live (for a minute: however slow the machine)
    queue.heartbeat(job.id, "A", 0.3)  # then A stalls: its last heartbeat gave it 0.3 s
    time.sleep(0.5)
    again = queue.claim("B", 60)
    assert again is not None and (again.id, again.attempts, again.lease_owner) == (job.id, 2, "B")
    with pytest.raises(LeaseLost):
        queue.heartbeat(job.id, "A", 60)
    with pytest.raises(LeaseLost):
        queue.transition(job.id, Stage.FINISH, owner="A")
    queue.heartbeat(job.id, "B", 0.3)
    time.sleep(0.5)  # B dies too: its second attempt was the last one
    assert queue.claim("C", 60) is None
    gone = queue.get(job.id)
    assert (gone.stage, gone.error_code, gone.lease_owner) == (Stage.ERROR.value, "EXPORT_FAILED", None)
    assert "lease lost" in (gone.error_message or "")


def test_finishing_waits_for_a_concurrent_reclaim_and_is_then_refused(db: Database, pg_url: str) -> None:
    queue = JobQueue(db, max_attempts=3)
    job, _ = queue.submit(job_maker())
    assert queue.claim("A", 60) is not None
    outcome: list[object] = []

    def finish() -> None:
        try:
            outcome.append(queue.transition(job.id, Stage.FINISH, owner="A", files='["x.csv"]'))
        except LeaseLost as exc:
            outcome.append(exc)

    with db.write() as s:  # B takes the job over (as a claim of a lapsed lease would) and has not committed
        row = s.get(JobRow, job.id, with_for_update=True)
        assert row is not None
        row.lease_owner, row.attempts = "B", row.attempts + 1
        s.flush()
        t = threading.Thread(target=finish)
        t.start()
        _wait_for_a_lock_wait(pg_url)
    t.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome
    after = queue.get(job.id)
    assert (after.stage, after.lease_owner, after.files) == (Stage.RUNNING.value, "B", "[]")


def _wait_for_a_lock_wait(sqlalchemy_url: str) -> None:
    """Block until some session of this database waits on a row lock (the thread under test)."""
    dsn = sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + 10
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0] > 0:
                return
            time.sleep(0.02)
    raise AssertionError("the transition never waited for the row lock")
