"""Export jobs: submit, look up, run, download, expire."""

from __future__ import annotations

import errno
import gzip
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from segport.domain.export import ExportSpec, FileFormat, build_spec, columns_of
from segport.domain.jobs import Stage, TargetKind
from segport.domain.keys import KeyKind, canonical_key
from segport.domain.naming import new_job_id, new_job_name, parse_result_path, result_file_names, result_uri
from segport.engine.base import ProfileEngine, Target
from segport.engine.interrupt import Interrupt
from segport.errors import (
    ExportFailed,
    FileNotFound,
    JobExpired,
    JobNotFound,
    ProjectNotFound,
    SegportError,
    StorageFull,
    TagNotFound,
)
from segport.results.base import Attempt, RemoteResult, ResultStore
from segport.results.base import media_type_of as _media_type
from segport.settings import Settings
from segport.store.meta import MetaStore, Principal, iso_ms
from segport.store.models import JobRow, utcnow
from segport.store.queue import JobQueue, LeaseLost, job_files
from segport.testing_hooks import pause_point
from segport.wake import Wake

log = logging.getLogger("segport.exports")
BOM = "\ufeff".encode()


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
    def __init__(
        self,
        settings: Settings,
        meta: MetaStore,
        queue: JobQueue,
        engine: ProfileEngine,
        results: ResultStore,
        wake: Wake,
    ) -> None:
        self.settings = settings
        self.meta = meta
        self.queue = queue
        self.engine = engine
        self.results = results
        self.wake = wake
        self._lock = threading.Lock()
        self._running: dict[str, Interrupt] = {}  # jobs this process is exporting now
        # an API process sets this: a cancel then stops the export in the engine process at once
        self.remote_interrupt: Callable[[str, str], None] | None = None

    # --- submit ------------------------------------------------------------------------------------
    def submit(self, who: Principal, project_id: str, kind: TargetKind, target_key: str, req: ExportRequest) -> JobRow:
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
        )
        if created:
            self.wake.set()
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
        if row.stage != Stage.FINISH.value:
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
        if row.stage != Stage.FINISH.value or file_name not in job_files(row):
            raise FileNotFound("no such result file (the job may not be finished yet)")
        found = self.results.locate(row.name, row.id, row.attempts, file_name)
        if found is None:
            raise FileNotFound("the result file is missing from the result store")
        if isinstance(found, Path):
            return Download(found, file_name, _media_type(file_name))
        return Download(None, file_name, _media_type(file_name), remote=found)

    # --- run (worker side) -------------------------------------------------------------------------
    def run(self, row: JobRow, owner: str, interrupt: Interrupt | None = None) -> None:
        """Run one claimed job to FINISH or ERROR. Raises :class:`LeaseLost` if the job was taken away
        (cancelled, or its lease lapsed and another worker claimed it); its partial files are removed."""
        interrupt = interrupt or Interrupt()
        with self._lock:
            self._running[row.id] = interrupt
        attempt: Attempt | None = None
        try:
            spec = ExportSpec.from_json(row.spec)
            attempt = self.results.begin(row.id, row.attempts, row.name, prefix=_prefix(spec))
            pause_point("export-started")  # tests stop a worker here (RUNNING, its upload begun) to kill it
            names, rows, size, snapshot = self._write(row, spec, attempt, interrupt)
            self.queue.heartbeat(row.id, owner, self.settings.lease_s)  # still ours? then publish
            attempt.publish()
        except BaseException as exc:
            stored = attempt.failure() if attempt is not None else None  # the store's error explains a broken pipe
            if attempt is not None:
                attempt.discard()
            if interrupt.fired or isinstance(exc, LeaseLost):
                raise LeaseLost(row.id) from exc
            if not isinstance(exc, Exception):
                raise
            self._fail(row, owner, *_failure(row, stored if isinstance(stored, Exception) else exc))
            return
        finally:
            with self._lock:
                self._running.pop(row.id, None)
        now = utcnow()
        try:
            self.queue.transition(
                row.id,
                Stage.FINISH,
                owner=owner,
                files=json.dumps(names, ensure_ascii=False),
                rows=rows,
                bytes=size,
                finished_at=now,
                expires_at=now + timedelta(seconds=self.settings.result_ttl_s),
                data_version=snapshot[0],
                data_version_at=snapshot[1],
            )
        except LeaseLost:
            attempt.discard()
            raise

    def _write(
        self, row: JobRow, spec: ExportSpec, attempt: Attempt, interrupt: Interrupt
    ) -> tuple[list[str], int, int, tuple[int, datetime]]:
        """Write the job's files through ``attempt``: (file names, rows, bytes, (data version, snapshot time)).

        The engine reports the version of the one snapshot it read the files from (DuckDB: read in the
        export's own transaction; ClickHouse: its snapshot row), so an import committing meanwhile changes
        neither the file nor the version; the snapshot time is when this attempt began reading."""
        at = utcnow()
        catalog = self.meta.catalog(row.project_id)
        columns = columns_of(spec, catalog)
        ext = spec.extension
        output = self.engine.export(
            row.project_id,
            Target(row.target_kind, row.target_key),
            columns,
            spec,
            attempt.folder,
            lambda parts: _prepared(attempt, result_file_names(row.target_name, row.file_day, ext, parts)),
            max_file_rows=self.settings.max_file_rows,
            excel_safe=self.settings.excel_safe,
            interrupt=interrupt,
        )
        sizes = attempt.finish()  # BOM prefixes are added by the store, as the bytes go in
        names = [p.name for p in output.files]
        return names, output.rows, sum(sizes.get(name, 0) for name in names), (output.data_version, at)

    def _fail(self, row: JobRow, owner: str, code: str, message: str) -> None:
        now = utcnow()
        self.queue.transition(
            row.id,
            Stage.ERROR,
            owner=owner,
            error_code=code,
            error_message=message,
            finished_at=now,
            expires_at=now + timedelta(seconds=self.settings.result_ttl_s),
        )

    def stop_running(self, job_id: str, reason: str) -> bool:
        """Abort the export of ``job_id`` if this process is running it (its lease is gone)."""
        with self._lock:
            interrupt = self._running.get(job_id)
        if interrupt is None:
            if self.remote_interrupt is not None:
                self.remote_interrupt(job_id, reason)
            return False
        interrupt.fire(reason)
        return True

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
            # in this process: abort now; elsewhere, the worker sees its lease gone at its next heartbeat
            self.stop_running(job_id, "cancelled")
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


def _failure(row: JobRow, exc: Exception) -> tuple[str, str]:
    """(error code, message) recorded on a job that failed with ``exc``."""
    if isinstance(exc, SegportError):
        return exc.code, exc.message
    if isinstance(exc, OSError):
        code = StorageFull.code if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else ExportFailed.code
        return code, f"writing the result failed: {exc.strerror or exc}"
    log.exception("export %s failed", row.id, exc_info=exc)  # a bug: record it on the job rather than lose it
    return ExportFailed.code, f"export failed: an internal error (job {row.id}; the server log has the details)"


def _check_not_expired(row: JobRow) -> None:
    """410 for a job whose results were deleted, or are due to be (the janitor may not have run yet)."""
    due = (
        row.stage in (Stage.FINISH.value, Stage.ERROR.value)
        and row.expires_at is not None
        and row.expires_at <= utcnow()
    )
    if row.stage == Stage.EXPIRED.value or due:
        raise JobExpired(f"the results of job {row.id} expired at {_iso(row.expires_at)} and were deleted")


def _prefix(spec: ExportSpec) -> bytes:
    """What every file of the export starts with: the UTF-8 BOM for ``bom`` CSV. A gzip file gets it as a
    gzip member of its own: gzip readers concatenate members, so the file still decompresses to BOM + CSV."""
    if not (spec.bom and spec.file_format is FileFormat.CSV):
        return b""
    return gzip.compress(BOM, mtime=0) if spec.compression.value == "gzip" else BOM


def _prepared(attempt: Attempt, names: list[str]) -> list[str]:
    attempt.prepare(names)
    return names


def _local_day(now: datetime, tz: str) -> str:
    return now.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d")


def _iso(value: datetime | None) -> str:
    return iso_ms(value) or "an unknown time"
