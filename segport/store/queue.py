"""The jobs table is the queue: submit, claim under a lease, heartbeat, transition, expire.

Every stage change goes through :meth:`JobQueue.transition` (or the claim, which is a transition too) and is
one transaction that checks the transition table, the current owner, and sets stage, timestamps and result
together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import aliased

from segport.domain.jobs import ACTIVE, Stage, check_transition
from segport.errors import ClientGone, Conflict, JobCancelled, JobNotFound, TooManyJobs
from segport.store.db import Database
from segport.store.models import JobRow, UTCDateTime, check_lengths, utcnow

_RECHECK_S = 0.05  # a submit that waited longer than this for the write lock asks again if its client is there

_JOBS = JobRow.__table__
_ACTIVE = [st.value for st in ACTIVE]
_BY_ID = select(_JOBS).where(_JOBS.c.id == bindparam("id"))
_INSERT = _JOBS.insert()
_CLAIMABLE = select(
    exists().where(
        or_(
            _JOBS.c.stage == Stage.NONE.value,
            and_(
                _JOBS.c.stage == Stage.RUNNING.value, _JOBS.c.lease_expires_at < bindparam("now", type_=UTCDateTime())
            ),
        )
    )
)
# A submit's three checks in one statement: an identical job still queued, running or kept (dedupe); how many
# of the project's jobs wait (the cap); whether the new id or name is taken.
_CHECKS = select(
    select(_JOBS.c.id)
    .where(
        _JOBS.c.project_id == bindparam("project_id"),
        _JOBS.c.fingerprint == bindparam("fingerprint"),
        or_(
            _JOBS.c.stage.in_(_ACTIVE),
            and_(_JOBS.c.stage == Stage.FINISH.value, _JOBS.c.expires_at > bindparam("now", type_=UTCDateTime())),
        ),
    )
    .order_by(_JOBS.c.created_at.desc())
    .limit(1)
    .scalar_subquery(),
    select(func.count())
    .select_from(_JOBS)
    .where(_JOBS.c.project_id == bindparam("project_id"), _JOBS.c.stage == Stage.NONE.value)
    .scalar_subquery(),
    exists().where(or_(_JOBS.c.id == bindparam("id"), _JOBS.c.name == bindparam("name"))),
)


def _job(found: Any) -> JobRow:
    """A transient :class:`JobRow` from a Core result row."""
    return JobRow(**found._mapping)


def _values(row: JobRow) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in _JOBS.columns}


class LeaseLost(Exception):
    """The job is no longer ours (lease lapsed and re-claimed, or cancelled): stop working on it."""


class JobQueue:
    def __init__(self, db: Database, *, max_attempts: int) -> None:
        self.db = db
        self.max_attempts = max_attempts

    # --- submit ------------------------------------------------------------------------------------
    def submit(
        self,
        make_row: Callable[[], JobRow],
        *,
        max_queued: int | None = None,
        retry_after_s: int = 5,
        abandoned: Callable[[], bool] | None = None,
    ) -> tuple[JobRow, bool]:
        """Insert the job made by ``make_row`` unless an identical one is queued, running or still kept.

        Returns ``(job, created)``. ``make_row`` is called again if a generated id or name collides. With
        ``max_queued``, a project that already has that many jobs waiting gets :class:`TooManyJobs` (an
        identical request still gets its existing job). Both checks and the insert are one transaction, so
        concurrent submits can neither both slip under the cap nor both create the same job.

        ``abandoned`` says whether the caller has gone away (its client disconnected): then nothing is inserted
        and :class:`ClientGone` is raised. It is asked before the write lock is taken, and again inside the
        transaction just before the insert if the lock took longer than ``_RECHECK_S`` to get (asking costs a
        round trip to the event loop, which a quick submit need not spend while it holds the lock).
        """
        if abandoned is not None and abandoned():
            raise ClientGone("the client went away before its job was created; nothing was done")
        for _ in range(5):
            row = make_row()
            check_lengths(row)
            asked = time.monotonic()
            with self.db.write() as s:
                conn = s.connection()  # Core statements: this runs on every submit, the ORM's cost shows
                # one submit per project at a time: the dedupe check must see a concurrent identical insert
                self.db.lock(s, f"segport:submit:{row.project_id}")
                same, queued, clash = conn.execute(
                    _CHECKS,
                    {
                        "project_id": row.project_id,
                        "fingerprint": row.fingerprint,
                        "now": utcnow(),
                        "id": row.id,
                        "name": row.name,
                    },
                ).one()
                if same is not None:
                    return _job(conn.execute(_BY_ID, {"id": same}).one()), False
                if max_queued is not None and queued >= max_queued:
                    raise TooManyJobs(
                        f"project {row.project_id} already has {queued} exports waiting to run "
                        f"(limit {max_queued}); retry in {retry_after_s} s",
                        headers={"Retry-After": str(retry_after_s)},
                    )
                if not clash:
                    if abandoned is not None and time.monotonic() - asked > _RECHECK_S and abandoned():
                        raise ClientGone(f"the client went away before job {row.id} was created; nothing was done")
                    conn.execute(_INSERT, _values(row))
                    return row, True
        raise RuntimeError("could not allocate a unique job id")  # 62^8 ids: never in practice

    def count_active(self, project_id: str) -> dict[Stage, int]:
        with self.db.read() as s:
            rows = s.execute(
                select(JobRow.stage, func.count())
                .where(JobRow.project_id == project_id, JobRow.stage.in_([st.value for st in ACTIVE]))
                .group_by(JobRow.stage)
            ).all()
        return {Stage(stage): n for stage, n in rows}

    # --- read --------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRow:
        """The job (a detached copy); one Core query, as every poll asks for it."""
        with self.db.connect() as conn:
            found = conn.execute(_BY_ID, {"id": job_id}).first()
        if found is None:
            raise JobNotFound(f"job {job_id!r} not found")
        return _job(found)

    def by_name(self, name: str) -> JobRow | None:
        with self.db.read() as s:
            return s.scalar(select(JobRow).where(JobRow.name == name))

    def list(self, project_id: str | None = None, limit: int = 100) -> list[JobRow]:
        with self.db.read() as s:
            q = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if project_id:
                q = q.where(JobRow.project_id == project_id)
            return list(s.scalars(q))

    # --- workers -----------------------------------------------------------------------------------
    def claim(
        self,
        owner: str,
        lease_s: float,
        *,
        max_running_per_project: int | None = None,
        error_ttl_s: float = 7 * 24 * 3600,
    ) -> JobRow | None:
        """Take the oldest queued job, or a running one whose lease lapsed; ``None`` if there is none.

        With ``max_running_per_project``, a queued job waits while its project already has that many jobs
        running under a live lease. A lapsed job that already used all its attempts is failed here (kept
        ``error_ttl_s``) instead of being run again.
        """
        while True:
            now = utcnow()
            if not self._claimable(now):  # an idle worker's poll takes no write lock (it would block submits)
                return None
            with self.db.write() as s:
                ready = JobRow.stage == Stage.NONE.value
                if max_running_per_project is not None:
                    other = aliased(JobRow)
                    busy = (
                        select(func.count())
                        .select_from(other)
                        .where(
                            other.project_id == JobRow.project_id,
                            other.stage == Stage.RUNNING.value,
                            other.lease_expires_at >= now,
                        )
                        .correlate(JobRow)
                        .scalar_subquery()
                    )
                    ready = and_(ready, busy < max_running_per_project)
                row = s.scalar(
                    select(JobRow)
                    .where(or_(ready, and_(JobRow.stage == Stage.RUNNING.value, JobRow.lease_expires_at < now)))
                    .order_by(JobRow.created_at)
                    .limit(1)
                    .with_for_update(skip_locked=True, of=JobRow)
                )
                if row is None:
                    return None
                if row.stage == Stage.NONE and max_running_per_project is not None and not self.db.is_sqlite:
                    # PostgreSQL claims run side by side: take turns per project and count again, so two
                    # workers cannot both take the project's last running slot (SQLite runs one claim at a
                    # time, so the query above already counted right)
                    self.db.lock(s, f"running:{row.project_id}")
                    running = s.scalar(
                        select(func.count())
                        .select_from(JobRow)
                        .where(
                            JobRow.project_id == row.project_id,
                            JobRow.stage == Stage.RUNNING.value,
                            JobRow.lease_expires_at >= now,
                        )
                    )
                    if (running or 0) >= max_running_per_project:
                        return None
                if row.stage == Stage.RUNNING:
                    # lease lapsed: the worker died; the attempt it used counts
                    if row.attempts >= self.max_attempts:
                        self._apply(
                            row,
                            Stage.ERROR,
                            now,
                            error_code="EXPORT_FAILED",
                            error_message=f"export failed: the worker running it stopped "
                            f"{row.attempts} times (lease lost); giving up",
                            expires_at=now + timedelta(seconds=error_ttl_s),
                        )
                        continue
                    self._apply(row, Stage.NONE, now)
                self._apply(
                    row,
                    Stage.RUNNING,
                    now,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=row.attempts + 1,
                    started_at=now,
                )
                return row

    def _claimable(self, now: datetime) -> bool:
        """Whether a job may be waiting to be claimed (queued, or running under a lapsed lease), read without
        the write lock. Idle workers poll often; were each poll a write, a worker process stopped while it
        holds the write lock (SIGSTOP, a hung host) would stall every submit for as long as it stays stopped."""
        with self.db.connect() as conn:
            return bool(conn.execute(_CLAIMABLE, {"now": now}).scalar())

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> None:
        """Extend our lease; raise :class:`LeaseLost` if the job is no longer ours."""
        with self.db.write() as s:
            row = s.get(JobRow, job_id, with_for_update=True)  # PostgreSQL: a claim may be changing it
            if row is None or row.stage != Stage.RUNNING or row.lease_owner != owner:
                raise LeaseLost(job_id)
            row.lease_expires_at = utcnow() + timedelta(seconds=lease_s)

    def transition(self, job_id: str, dst: Stage, *, owner: str | None = None, **fields: Any) -> JobRow:
        """Move a job to ``dst`` in one transaction; with ``owner``, only if we still hold its lease."""
        with self.db.write() as s:
            row = s.get(JobRow, job_id, with_for_update=True)  # the owner check holds until we commit
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found")
            if owner is not None and (row.stage != Stage.RUNNING or row.lease_owner != owner):
                raise LeaseLost(job_id)
            self._apply(row, dst, utcnow(), **fields)
            return row

    @staticmethod
    def _apply(row: JobRow, dst: Stage, now: datetime, **fields: Any) -> None:
        check_transition(Stage(row.stage), dst)
        row.stage = dst.value
        if dst in (Stage.FINISH, Stage.ERROR):
            row.finished_at = now
            row.lease_owner = None
            row.lease_expires_at = None
        if dst is Stage.NONE:
            row.lease_owner = None
            row.lease_expires_at = None
        for name, value in fields.items():
            setattr(row, name, value)

    def cancel(self, job_id: str, *, error_ttl_s: float, message: str) -> tuple[JobRow, bool]:
        """Stop a queued or running job: ERROR with code ``JOB_CANCELLED``, in one transaction.

        Returns ``(job, was_running)``; the worker of a running job notices at its next heartbeat (or at
        once, through the in-process interrupt). Cancelling a job that was already cancelled answers it again;
        a job that finished or failed cannot be cancelled (:class:`Conflict`).
        """
        with self.db.write() as s:
            row = s.get(JobRow, job_id, with_for_update=True)  # PostgreSQL: a claim may be changing it
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found")
            if row.stage == Stage.ERROR and row.error_code == JobCancelled.code:
                return row, False
            if row.stage not in (Stage.NONE, Stage.RUNNING):
                raise Conflict(f"job {job_id} is {row.stage} and can no longer be cancelled")
            was_running = row.stage == Stage.RUNNING
            now = utcnow()
            self._apply(
                row,
                Stage.ERROR,
                now,
                error_code=JobCancelled.code,
                error_message=message,
                expires_at=now + timedelta(seconds=error_ttl_s),
            )  # finished_at = now, by _apply
            return row, was_running

    def running_attempts(self) -> set[str]:
        """``<job id>-<attempt>`` of every running job: the staging folders still in use."""
        with self.db.read() as s:
            rows = s.execute(select(JobRow.id, JobRow.attempts).where(JobRow.stage == Stage.RUNNING.value)).all()
        return {f"{job_id}-{attempts}" for job_id, attempts in rows}

    def attempts_with_files(self, names: list[str]) -> dict[str, str]:
        """Those of ``names`` whose jobs may own published files, each with the ``<job id>-<attempt>`` that
        may own them (the one that finished the job, or the running one about to)."""
        found: dict[str, str] = {}
        with self.db.read() as s:
            for i in range(0, len(names), 500):
                rows = s.execute(
                    select(JobRow.name, JobRow.id, JobRow.attempts).where(
                        JobRow.name.in_(names[i : i + 500]),
                        JobRow.stage.in_([Stage.FINISH.value, Stage.RUNNING.value]),
                    )
                ).all()
                found.update({name: f"{job_id}-{attempts}" for name, job_id, attempts in rows})
        return found

    # --- expiry ------------------------------------------------------------------------------------
    def due_for_expiry(self, now: datetime) -> list[JobRow]:
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(JobRow).where(
                        JobRow.stage.in_([Stage.FINISH.value, Stage.ERROR.value]), JobRow.expires_at < now
                    )
                )
            )


def job_files(row: JobRow) -> list[str]:
    return list(json.loads(row.files or "[]"))
