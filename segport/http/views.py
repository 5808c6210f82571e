"""Turning stored rows into response models."""

from __future__ import annotations

from segport.domain.jobs import Stage
from segport.http.schemas import ErrorDetail, JobResult
from segport.services.exports import ExportService
from segport.store.meta import iso_ms
from segport.store.models import JobRow


def job_result(exports: ExportService, row: JobRow) -> JobResult:
    error = None
    if row.stage == Stage.ERROR.value:
        error = ErrorDetail(code=row.error_code or "EXPORT_FAILED", message=row.error_message or "export failed")
    finished = row.stage == Stage.FINISH.value
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
        error=error,
    )
