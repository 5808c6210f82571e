"""Turning stored rows into response models."""

from __future__ import annotations

from segport.domain.jobs import Stage
from segport.http.schemas import ErrorDetail, JobResult
from segport.services.exports import ExportService
from segport.store.meta import iso_ms
from segport.store.models import JobRow


def job_result(exports: ExportService, row: JobRow) -> JobResult:
    error = None
    if row.stage == Stage.ERROR:
        error = ErrorDetail(code=row.error_code or "EXPORT_FAILED", message=row.error_message or "export failed")
    finished = row.stage == Stage.FINISH
    return JobResult(
        stage=row.stage,  # type: ignore[arg-type]
        uris=exports.uris(row),
        id=row.id,
        name=row.name,
        createdAt=iso_ms(row.created_at),
        startedAt=iso_ms(row.started_at),
        finishedAt=iso_ms(row.finished_at),
        expiresAt=iso_ms(row.expires_at),
        attempts=row.attempts,
        rows=row.rows if finished else None,
        bytes=row.bytes if finished else None,
        submitDataVersion=row.submit_version,
        dataVersion=row.data_version if finished else None,
        dataVersionAt=iso_ms(row.data_version_at) if finished else None,
        dataNote=_data_note(row) if finished else None,
        error=error,
    )


def _data_note(row: JobRow) -> str | None:
    if row.data_version is None or row.submit_version is None or row.data_version <= row.submit_version:
        return None
    return (
        f"this file holds data version {row.data_version}, newer than version {row.submit_version} the job was "
        f"submitted against (attempt {row.attempts} read the data as it was then)"
    )
