"""The seed's three endpoints: submit an export job, poll its result, download its file."""

from __future__ import annotations

import codecs
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from segport.domain.jobs import TargetKind
from segport.errors import InvalidBody
from segport.http.auth import Who, quick
from segport.http.errors import parse_body
from segport.http.files import ResultFileResponse
from segport.http.job_result import job_result
from segport.http.remote_files import remote_response
from segport.http.schemas import ERRORS, ExportJobBody, JobCreated, JobResult
from segport.services.exports import ExportRequest

router = APIRouter(responses=ERRORS)


async def export_body(request: Request) -> ExportRequest:
    """The export body, parsed as JSON whatever the Content-Type (curl -d sends form encoding); empty = defaults.

    A leading UTF-8 byte-order mark is skipped (Windows tools write one; RFC 8259 lets parsers ignore it). A
    compressed body is refused by name rather than reported as broken JSON."""
    if request.query_params:  # e.g. ?properties=usr_gender: silently exporting gio_id alone would mislead
        names = ", ".join(sorted(request.query_params.keys()))[:200]
        raise InvalidBody(f"an export takes its options in the JSON body, not the query string ({names})")
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        raise InvalidBody(f"Content-Encoding {coding[:40]!r} is not supported: send the JSON body uncompressed")
    raw = (await request.body()).removeprefix(codecs.BOM_UTF8)
    body = parse_body(ExportJobBody, raw) if raw.strip() else ExportJobBody()
    return ExportRequest(body.properties, body.fileFormat, body.csvHeaderType, body.bom, body.compression)


Body = Annotated[ExportRequest, Depends(export_body)]
BODY_DOC = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": ExportJobBody.model_json_schema(ref_template="#/components/schemas/{model}")}
        },
    }
}


@router.post(
    "/v1/api/projects/{project_ID}/segment_profiles/{segment_key}/export_jobs",
    response_model=JobCreated,
    tags=["segments"],
    summary="Submit a segment export job (项目-群体画像用户列表下载)",
    openapi_extra=BODY_DOC,
)
def submit_segment_export(project_ID: str, segment_key: str, request: Request, who: Who, body: Body) -> JobCreated:
    job = request.app.state.segport.exports.submit(who, project_ID, TargetKind.SEGMENT, segment_key, body)
    return JobCreated(id=job.id, name=job.name)


@router.get(
    "/v1/api/job/result/{id}",
    response_model=JobResult,
    response_model_exclude_none=True,
    tags=["jobs"],
    summary="Poll an export job",
)
async def get_job_result(id: str, request: Request, who: Who) -> JobResult:
    exports = request.app.state.segport.exports
    return job_result(exports, await quick(exports.queue.db, exports.job, who, id))


@router.get(
    "/download",
    response_class=FileResponse,
    tags=["jobs"],
    summary="Download a result file",
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}, "application/gzip": {}}}},
)
def download(request: Request, who: Who, file: Annotated[str, Query(max_length=1024)]) -> Response:
    found = request.app.state.segport.exports.download(who, file)
    if found.remote is not None:  # object storage: streamed from it, or a redirect to it
        return remote_response(found.remote, media_type=found.media_type, filename=found.file_name)
    return ResultFileResponse(found.path, media_type=found.media_type, filename=found.file_name)


# HEAD answers what GET would, without the body (curl -I, download managers checking the size first)
router.head("/download", include_in_schema=False)(download)
