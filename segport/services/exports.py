"""Export jobs: submit, look up, download, cancel, expire."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from segport.domain.export import build_spec
from segport.domain.jobs import Stage, TargetKind
from segport.domain.keys import KeyKind, canonical_key
from segport.domain.naming import new_job_id, new_job_name, parse_result_path, result_uri
from segport.errors import (
    FileNotFound,
    JobExpired,
    JobNotFound,
    ProjectNotFound,
    SegportError,
    TagNotFound,
)
from segport.results.base import RemoteResult, ResultStore
from segport.results.base import media_type_of as _media_type
from segport.settings import Settings
from segport.store.meta import MetaStore, Principal, iso_ms
from segport.store.models import JobRow, utcnow
from segport.store.queue import JobQueue, job_files
from segport.wake import WorkerLink


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """The body of an export submission after HTTP parsing (names as on the wire, values unchecked)."""

    properties: list[str] | None = None
    file_format: str | None = None
    header: str | None = None
    bom: bool = False
    compression: str | None = None


@dataclass(frozen=True, slots=True)
class Download:
    path: Path | None  # a local file, or None when the file is ``remote``
    file_name: str
    media_type: str
    remote: RemoteResult | None = None


class ExportService:
    """Export jobs as callers see them: submit, look up, download, cancel; and their expiry. Running them is
    :class:`segport.services.runner.ExportRunner`'s, in the processes that run workers."""

    def __init__(
        self,
        settings: Settings,
        meta: MetaStore,
        queue: JobQueue,
        results: ResultStore,
        link: WorkerLink,
    ) -> None:
        self.settings = settings
        self.meta = meta
        self.queue = queue
        self.results = results
        self.link = link  # how a submit and a cancel reach the workers, wherever they run

    # --- submit ------------------------------------------------------------------------------------
    def submit(
        self,
        who: Principal,
        project_id: str,
        kind: TargetKind,
        target_key: str,
        req: ExportRequest,
        *,
        abandoned: Callable[[], bool] | None = None,
    ) -> JobRow:
        """Queue an export (or find its identical twin). ``abandoned``: whether the caller has gone away; asked
        just before the job would be inserted, so a client that disconnected creates nothing (ClientGone)."""
        if not who.can_see(project_id):
            raise ProjectNotFound(f"project {project_id!r} not found")
        segment_key = target_key if kind is TargetKind.SEGMENT else None
        project, catalog, segment = self.meta.export_target(project_id, segment_key)
        if segment is not None:
            target_name = segment.name
        else:
            tag = catalog.get(canonical_key(target_key))
            if tag is None or tag.kind is not KeyKind.TAG:
                raise TagNotFound(f"tag {target_key!r} not found in project {project_id}")
            target_key, target_name = tag.key, tag.name or tag.key
        spec = build_spec(
            req.properties,
            req.file_format,
            req.header,
            catalog,
            self.settings.max_properties,
            bom=req.bom,
            compression=req.compression,
        )
        # from the metadata store, never the engine: a submit must not wait for (or need) the engine process
        data_version = int(project.data_version or 0)
        version = str(data_version)
        fingerprint = spec.fingerprint(project_id, kind.value, target_key, version)

        def make_row() -> JobRow:
            now = utcnow()
            return JobRow(
                id=new_job_id(),
                name=new_job_name(kind, now, project.timezone),
                project_id=project_id,
                target_kind=kind.value,
                target_key=target_key,
                target_name=target_name,
                spec=spec.to_json(),
                fingerprint=fingerprint,
                stage=Stage.NONE.value,
                files="[]",
                attempts=0,
                created_at=now,
                file_day=_local_day(now, project.timezone),
                submit_version=data_version,
            )

        row, created = self.queue.submit(
            make_row,
            max_queued=self.settings.max_queued_jobs_per_project,
            retry_after_s=self.settings.retry_after_s,
            abandoned=abandoned,
        )
        if created:
            self.link.wake()
        return row

    # --- look up -----------------------------------------------------------------------------------
    def job(self, who: Principal, job_id: str, project_id: str | None = None) -> JobRow:
        """A job the caller may see; another project's job is reported as not found."""
        row = self.queue.get(job_id)
        if not who.can_see(row.project_id) or (project_id is not None and row.project_id != project_id):
            raise JobNotFound(f"job {job_id!r} not found")
        _check_not_expired(row)
        return row

    def uris(self, row: JobRow) -> list[str]:
        if row.stage != Stage.FINISH:
            return []
        return [result_uri(row.name, f) for f in job_files(row)]

    def download(self, who: Principal, file_param: str) -> Download:
        parsed = parse_result_path(file_param)
        if parsed is None:
            raise FileNotFound("no such result file: 'file' must be a uri from a job result")
        job_name, file_name = parsed
        row = self.queue.by_name(job_name)
        if row is None or not who.can_see(row.project_id):
            raise FileNotFound("no such result file")
        _check_not_expired(row)
        if row.stage != Stage.FINISH or file_name not in job_files(row):
            raise FileNotFound("no such result file (the job may not be finished yet)")
        found = self.results.locate(row.name, row.id, row.attempts, file_name)
        if found is None:
            raise FileNotFound("the result file is missing from the result store")
        if isinstance(found, Path):
            return Download(found, file_name, _media_type(file_name))
        return Download(None, file_name, _media_type(file_name), remote=found)

    # --- cancel ------------------------------------------------------------------------------------
    def cancel(self, who: Principal, job_id: str) -> JobRow:
        """Stop a queued or running job the caller may see; its partial files are removed."""
        self.job(who, job_id)  # visibility and expiry, as for the job result
        row, was_running = self.queue.cancel(
            job_id,
            error_ttl_s=self.settings.result_ttl_s,
            message="the export was cancelled at the caller's request",
        )
        if was_running:
            # stop it now wherever it runs; a worker the link does not reach sees its lease gone at its next heartbeat
            self.link.interrupt(job_id, "cancelled")
        return row

    # --- expiry and cleanup ------------------------------------------------------------------------
    def expire(self, now: datetime | None = None) -> int:
        """Mark jobs past ``expires_at`` EXPIRED and delete their files. Returns how many.

        The stage changes first, so no FINISH job ever points at deleted files."""
        count = 0
        for row in self.queue.due_for_expiry(now or utcnow()):
            try:
                self.queue.transition(row.id, Stage.EXPIRED)
            except SegportError:  # gone or changed meanwhile
                continue
            self.results.delete(row.name)
            count += 1
        return count

    def cleanup(self) -> dict[str, int]:
        """The janitor's round: expire results, and remove files no job owns (left by crashes)."""
        return {
            "expired": self.expire(),
            "staging": self.results.sweep_staging(self.queue.running_attempts),
            "orphans": self.results.sweep_published(self.queue.attempts_with_files),
        }


def _check_not_expired(row: JobRow) -> None:
    """410 for a job whose results were deleted, or are due to be (the janitor may not have run yet)."""
    due = row.stage in (Stage.FINISH, Stage.ERROR) and row.expires_at is not None and row.expires_at <= utcnow()
    if row.stage == Stage.EXPIRED or due:
        raise JobExpired(f"the results of job {row.id} expired at {_iso(row.expires_at)} and were deleted")


def _local_day(now: datetime, tz: str) -> str:
    return now.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d")


def _iso(value: datetime | None) -> str:
    return iso_ms(value) or "an unknown time"
