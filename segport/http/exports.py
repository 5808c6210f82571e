"""Export submissions: the body every export takes, and the endpoints that submit one: the seed's segment export
(项目-群体画像用户列表下载), the address one doc copy writes for it, and tag exports (E8, E9).

The job is then polled through segport/http/jobs.py and its files fetched through segport/http/downloads.py.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio.from_thread
from fastapi import APIRouter, Depends, Request

from segport.domain.jobs import TargetKind
from segport.errors import InvalidBody
from segport.http.auth import Who
from segport.http.dependencies import FAMILY_ROUTE, Queries
from segport.http.errors import parse_body
from segport.http.schemas import ERRORS, ExportJobBody, JobCreated
from segport.services.exports import ExportRequest
from segport.store.models import JobRow

router = APIRouter(responses=ERRORS)
F = TypeVar("F", bound=Callable[..., Any])


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


def client_gone(request: Request) -> Callable[[], bool]:
    """Whether the request's client has disconnected, asked from the thread a sync route runs on (a submit asks
    it just before it inserts the job: a client that gave up while the submit waited creates nothing)."""

    def gone() -> bool:
        try:
            return bool(anyio.from_thread.run(request.is_disconnected))
        except RuntimeError:  # not on a worker thread of the event loop (called directly): nobody to ask
            return False

    return gone


Body = Annotated[ExportRequest, Depends(export_body)]
BODY_DOC = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": ExportJobBody.model_json_schema(ref_template="#/components/schemas/{model}")}
        },
    }
}


def _submits(path: str, tag: str, summary: str, *, family: bool = True) -> Callable[[F], F]:
    """The route of an export submission: the export body, a :class:`JobCreated` answer; ``family``: a route of
    the API family around the seed (not the seed's own)."""
    family_settings = FAMILY_ROUTE if family else {}
    return router.post(
        path, response_model=JobCreated, tags=[tag], summary=summary, openapi_extra=BODY_DOC, **family_settings
    )


def _created(job: JobRow) -> JobCreated:
    return JobCreated(id=job.id, name=job.name)


P = "/v1/api/projects/{project_ID}"


@_submits(
    f"{P}/segment_profiles/{{segment_key}}/export_jobs",
    "segments",
    "Submit a segment export job (项目-群体画像用户列表下载)",
    family=False,
)
def submit_segment_export(project_ID: str, segment_key: str, request: Request, who: Who, body: Body) -> JobCreated:
    exports = request.app.state.segport.exports
    return _created(
        exports.submit(who, project_ID, TargetKind.SEGMENT, segment_key, body, abandoned=client_gone(request))
    )


@_submits(
    f"{P}/segment_profiles/{{segment_key}}/users/export_jobs",
    "segments",
    "Submit a segment export (the address one doc copy writes)",
)
def submit_segment_export_variant(
    project_ID: str, segment_key: str, request: Request, who: Who, body: Body
) -> JobCreated:
    return submit_segment_export(project_ID, segment_key, request, who, body)


@_submits("/v1/api/user_tags/{tag_key}/export_jobs", "tags", "Submit a tag export (E8, platform level)")
def submit_tag_export_platform(tag_key: str, request: Request, who: Who, q: Queries, body: Body) -> JobCreated:
    return _created(q.export_tag(who, None, tag_key, body, abandoned=client_gone(request)))


@_submits(f"{P}/user_tags/{{tag_key}}/export_jobs", "tags", "Submit a tag export (E9)")
def submit_tag_export(project_ID: str, tag_key: str, request: Request, who: Who, q: Queries, body: Body) -> JobCreated:
    return _created(q.export_tag(who, project_ID, tag_key, body, abandoned=client_gone(request)))
