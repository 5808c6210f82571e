"""Running export jobs, in the processes that run export workers: one claimed job to FINISH or ERROR.

The engine writes the files natively into the result store's attempt (a staging folder, or FIFOs feeding S3
uploads); the attempt is published while the job's lease is still ours, then the job turns FINISH in one
transaction. While a job runs its :class:`Interrupt` is kept here, so a cancel or a lost lease stops the
engine's statement at once (:meth:`ExportRunner.stop_running`).
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import threading
import time
from datetime import datetime, timedelta

from segport.domain.export import ExportSpec, FileFormat, columns_of
from segport.domain.jobs import Stage
from segport.domain.naming import result_file_names
from segport.engine.base import ProfileEngine, Target
from segport.engine.interrupt import Interrupt
from segport.errors import (
    ExportFailed,
    MetadataUnavailable,
    ResourceExhausted,
    SegportError,
    StorageFull,
    exhaustion_of,
)
from segport.results.base import Attempt, ResultStore
from segport.settings import Settings
from segport.store.meta import MetaStore
from segport.store.models import JobRow, utcnow
from segport.store.queue import JobQueue, LeaseLost
from segport.testing_hooks import pause_point

log = logging.getLogger("segport.exports")
BOM = "\ufeff".encode()
RETRY_PAUSE_S = 1.0  # before a transiently failed export goes back to the queue, times the attempts it used


class ExportRunner:
    def __init__(
        self, settings: Settings, meta: MetaStore, queue: JobQueue, engine: ProfileEngine, results: ResultStore
    ) -> None:
        self.settings = settings
        self.meta = meta
        self.queue = queue
        self.engine = engine
        self.results = results
        self._lock = threading.Lock()
        self._running: dict[str, Interrupt] = {}  # jobs this process is exporting now

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
            if not isinstance(exc, Exception) or isinstance(exc, MetadataUnavailable):
                raise  # not the job's failure: with the store back, its lease brings it back
            failure = stored if isinstance(stored, Exception) else exc
            if _transient(failure) and row.attempts < self.queue.max_attempts:
                self._retry(row, owner, failure)
                return
            self._fail(row, owner, *_failure(row, failure))
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

    def _retry(self, row: JobRow, owner: str, exc: Exception) -> None:
        """Put a job that failed for a transient reason back in the queue, as a lapsed lease would: the next
        claim runs it again (its attempt counted). It waits a little first, the longer the more attempts it
        used, so that the memory or file descriptors it lacked can come free."""
        code, message = _failure(row, exc)
        log.warning(
            "job %s: attempt %d of %d failed (%s: %s); queued again",
            row.id,
            row.attempts,
            self.queue.max_attempts,
            code,
            message,
        )
        time.sleep(min(RETRY_PAUSE_S * row.attempts, 10 * RETRY_PAUSE_S))
        self.queue.transition(row.id, Stage.NONE, owner=owner)

    def stop_running(self, job_id: str, reason: str) -> bool:
        """Abort the export of ``job_id`` if this process is running it (cancelled, or its lease is gone)."""
        with self._lock:
            interrupt = self._running.get(job_id)
        if interrupt is None:
            return False
        interrupt.fire(reason)
        return True


def _transient(exc: Exception) -> bool:
    """Whether the same export may well succeed if run again: the engine ran out of memory, of file
    descriptors or of room in its queue, or its statement was interrupted by something other than a cancel."""
    if isinstance(exc, ResourceExhausted):
        return True
    if isinstance(exc, SegportError):
        return bool(exc.details.get("transient"))
    exhausted = exhaustion_of(exc)
    return exhausted is not None and isinstance(exhausted, ResourceExhausted)


def _failure(row: JobRow, exc: Exception) -> tuple[str, str]:
    """(error code, message) recorded on a job that failed with ``exc``."""
    if isinstance(exc, SegportError):
        return exc.code, exc.message
    exhausted = exhaustion_of(exc)
    if exhausted is not None:
        return exhausted.code, exhausted.message
    if isinstance(exc, OSError):
        code = StorageFull.code if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else ExportFailed.code
        return code, f"writing the result failed: {exc.strerror or exc}"
    log.exception("export %s failed", row.id, exc_info=exc)  # a bug: record it on the job rather than lose it
    return ExportFailed.code, f"export failed: an internal error (job {row.id}; the server log has the details)"


def _prefix(spec: ExportSpec) -> bytes:
    """What every file of the export starts with: the UTF-8 BOM for ``bom`` CSV. A gzip file gets it as a
    gzip member of its own: gzip readers concatenate members, so the file still decompresses to BOM + CSV."""
    if not (spec.bom and spec.file_format is FileFormat.CSV):
        return b""
    return gzip.compress(BOM, mtime=0) if spec.compression.value == "gzip" else BOM


def _prepared(attempt: Attempt, names: list[str]) -> list[str]:
    attempt.prepare(names)
    return names
