"""The jobs table is the queue: submit, claim under a lease, heartbeat, transition, expire.

Every stage change goes through :meth:`JobQueue.transition` (or the claim, which is a transition too) and is
one transaction that checks the transition table, the current owner, and sets stage, timestamps and result
together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from segport.domain.jobs import ACTIVE, Stage, check_transition
from segport.errors import JobNotFound
from segport.store.db import Database
from segport.store.models import JobRow, utcnow


class LeaseLost(Exception):
    """The job is no longer ours (lease lapsed and re-claimed, or cancelled): stop working on it."""


class JobQueue:
    def __init__(self, db: Database, *, max_attempts: int) -> None:
        self.db = db
        self.max_attempts = max_attempts

    # --- submit ------------------------------------------------------------------------------------
    def submit(self, make_row: Callable[[], JobRow], *, dedupe: bool = True) -> tuple[JobRow, bool]:
        """Insert the job made by ``make_row`` unless an identical one is queued, running or still kept.

        Returns ``(job, created)``. ``make_row`` is called again if a generated id or name collides.
        """
        for _ in range(5):
            row = make_row()
            with self.db.write() as s:
                # one submit per project at a time: the dedupe check must see a concurrent identical insert
                self.db.lock(s, f"segport:submit:{row.project_id}")
                if dedupe:
                    same = s.scalar(
                        select(JobRow)
                        .where(
                            JobRow.project_id == row.project_id,
                            JobRow.fingerprint == row.fingerprint,
                            or_(
                                JobRow.stage.in_([st.value for st in ACTIVE]),
                                and_(JobRow.stage == Stage.FINISH.value, JobRow.expires_at > utcnow()),
                            ),
                        )
                        .order_by(JobRow.created_at.desc())
                        .limit(1)
                    )
                    if same is not None:
                        return same, False
                clash = s.scalar(select(JobRow.id).where(or_(JobRow.id == row.id, JobRow.name == row.name)))
                if clash is None:
                    s.add(row)
                    try:
                        s.flush()
                    except IntegrityError:
                        continue
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
        with self.db.read() as s:
            row = s.get(JobRow, job_id)
        if row is None:
            raise JobNotFound(f"job {job_id!r} not found")
        return row

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
    def claim(self, owner: str, lease_s: float) -> JobRow | None:
        """Take the oldest queued job, or a running one whose lease lapsed; ``None`` if there is none.

        A lapsed job that already used all its attempts is failed here instead of being run again.
        """
        while True:
            now = utcnow()
            with self.db.write() as s:
                row = s.scalar(
                    select(JobRow)
                    .where(
                        or_(
                            JobRow.stage == Stage.NONE.value,
                            and_(JobRow.stage == Stage.RUNNING.value, JobRow.lease_expires_at < now),
                        )
                    )
                    .order_by(JobRow.created_at)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                if row is None:
                    return None
                if row.stage == Stage.RUNNING.value:
                    # lease lapsed: the worker died; the attempt it used counts
                    if row.attempts >= self.max_attempts:
                        self._apply(row, Stage.ERROR, now, error_code="EXPORT_FAILED",
                                    error_message=f"export failed: the worker running it stopped "
                                    f"{row.attempts} times (lease lost); giving up")
                        continue
                    self._apply(row, Stage.NONE, now)
                self._apply(row, Stage.RUNNING, now, lease_owner=owner,
                            lease_expires_at=now + timedelta(seconds=lease_s),
                            attempts=row.attempts + 1, started_at=now)
                return row

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> None:
        """Extend our lease; raise :class:`LeaseLost` if the job is no longer ours."""
        with self.db.write() as s:
            row = s.get(JobRow, job_id, with_for_update=True)  # PostgreSQL: a claim may be changing it
            if row is None or row.stage != Stage.RUNNING.value or row.lease_owner != owner:
                raise LeaseLost(job_id)
            row.lease_expires_at = utcnow() + timedelta(seconds=lease_s)

    def transition(self, job_id: str, dst: Stage, *, owner: str | None = None, **fields: Any) -> JobRow:
        """Move a job to ``dst`` in one transaction; with ``owner``, only if we still hold its lease."""
        with self.db.write() as s:
            row = s.get(JobRow, job_id, with_for_update=True)  # the owner check holds until we commit
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found")
            if owner is not None and (row.stage != Stage.RUNNING.value or row.lease_owner != owner):
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
