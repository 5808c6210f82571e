"""The API family around the seed (GrowingIO OpenAPI 2.x paths): segments, their users, tags, tag
exports, recomputes, and the project-scoped job result.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so DuckDB and SQLite never block the
event loop. Each parses its parameters, calls one use case and shapes the answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from segport.http.auth import Who
from segport.http.exports import BODY_DOC, Body, submit_segment_export
from segport.http.job_result import job_result
from segport.http.paging import PageParams, envelope, language_header, page_params, page_properties
from segport.http.profile_schemas import (
    ComputeAnswer,
    Page,
    SegmentValue,
    TagValue,
    UserValue,
    page_users,
    segment_value,
    tag_value,
)
from segport.http.schemas import ERRORS, JobCreated, JobResult
from segport.services.queries import QueryService
from segport.store.meta import Principal

router = APIRouter(
    responses={**ERRORS, 409: ERRORS[400] | {"description": "Detector busy"}}, dependencies=[Depends(language_header)]
)
Paging = Annotated[PageParams, Depends(page_params)]
Properties = Annotated[list[str], Depends(page_properties)]


def queries(request: Request) -> QueryService:
    """FastAPI dependency: the family's use cases, of the app the role built."""
    queries: QueryService = request.app.state.segport.queries
    return queries


Queries = Annotated[QueryService, Depends(queries)]
P = "/v1/api/projects/{project_ID}"


# --- segments (E1, E2, E14, the export address variant) -------------------------------------------
@router.get(f"{P}/segment_profiles", response_model=Page[SegmentValue], tags=["segments"], summary="List segments (E1)")
def list_segments(project_ID: str, who: Who, q: Queries, paging: Paging) -> dict:
    rows, total = q.segments(who, project_ID, paging.limit, paging.offset)
    return envelope(paging, total, [segment_value(r) for r in rows])


@router.get(
    f"{P}/segment_profiles/{{segment_key}}/users",
    response_model=Page[UserValue],
    tags=["segments"],
    summary="Page through a segment's users (E2)",
)
def segment_users(
    project_ID: str, segment_key: str, who: Who, q: Queries, paging: Paging, properties: Properties
) -> dict:
    result = q.segment_users(who, project_ID, segment_key, properties, paging.limit, paging.offset)
    return envelope(paging, result.page.total, page_users(result))


@router.post(
    f"{P}/segment_profiles/{{segment_key}}/users/export_jobs",
    response_model=JobCreated,
    tags=["segments"],
    summary="Submit a segment export (the address one doc copy writes)",
    openapi_extra=BODY_DOC,
)
def submit_segment_export_variant(
    project_ID: str, segment_key: str, request: Request, who: Who, body: Body
) -> JobCreated:
    return submit_segment_export(project_ID, segment_key, request, who, body)


@router.post(
    f"{P}/segment_profiles/{{segment_key}}/computes",
    response_model=ComputeAnswer,
    tags=["segments"],
    summary="Recompute a segment now (E14)",
)
def recompute_segment(project_ID: str, segment_key: str, who: Who, q: Queries) -> ComputeAnswer:
    return ComputeAnswer(value=True, message=q.recompute_segment(who, project_ID, segment_key))


# --- tags (E4-E9, E15) ----------------------------------------------------------------------------
def _tag_page(q: QueryService, who: Principal, project_id: str | None, paging: PageParams) -> dict:
    tags = q.tags(who, project_id)
    chosen = tags[paging.offset : paging.offset + paging.limit]
    return envelope(paging, len(tags), [tag_value(t) for t in chosen])


@router.get(
    "/v1/api/user_tags",
    response_model=Page[TagValue],
    tags=["tags"],
    summary="List tags (E4, platform level: a token of one project)",
)
def list_tags_platform(who: Who, q: Queries, paging: Paging) -> dict:
    return _tag_page(q, who, None, paging)


@router.get(f"{P}/user_tags", response_model=Page[TagValue], tags=["tags"], summary="List a project's tags (E5)")
def list_tags(project_ID: str, who: Who, q: Queries, paging: Paging) -> dict:
    return _tag_page(q, who, project_ID, paging)


@router.get(
    "/v1/api/user_tags/{tag_key}/users",
    response_model=Page[UserValue],
    tags=["tags"],
    summary="Page through a tag's users (E6, platform level)",
)
def tag_users_platform(tag_key: str, who: Who, q: Queries, paging: Paging, properties: Properties) -> dict:
    result = q.tag_users(who, None, tag_key, properties, paging.limit, paging.offset)
    return envelope(paging, result.page.total, page_users(result))


@router.get(
    f"{P}/user_tags/{{tag_key}}/users",
    response_model=Page[UserValue],
    tags=["tags"],
    summary="Page through a tag's users (E7)",
)
def tag_users(project_ID: str, tag_key: str, who: Who, q: Queries, paging: Paging, properties: Properties) -> dict:
    result = q.tag_users(who, project_ID, tag_key, properties, paging.limit, paging.offset)
    return envelope(paging, result.page.total, page_users(result))


@router.post(
    "/v1/api/user_tags/{tag_key}/export_jobs",
    response_model=JobCreated,
    tags=["tags"],
    summary="Submit a tag export (E8, platform level)",
    openapi_extra=BODY_DOC,
)
def submit_tag_export_platform(tag_key: str, who: Who, q: Queries, body: Body) -> JobCreated:
    job = q.export_tag(who, None, tag_key, body)
    return JobCreated(id=job.id, name=job.name)


@router.post(
    f"{P}/user_tags/{{tag_key}}/export_jobs",
    response_model=JobCreated,
    tags=["tags"],
    summary="Submit a tag export (E9)",
    openapi_extra=BODY_DOC,
)
def submit_tag_export(project_ID: str, tag_key: str, who: Who, q: Queries, body: Body) -> JobCreated:
    job = q.export_tag(who, project_ID, tag_key, body)
    return JobCreated(id=job.id, name=job.name)


@router.post(
    f"{P}/user_tags/{{tag_key}}/computes", response_model=ComputeAnswer, tags=["tags"], summary="Recount a tag (E15)"
)
def recompute_tag(project_ID: str, tag_key: str, who: Who, q: Queries) -> ComputeAnswer:
    return ComputeAnswer(value=True, message=q.recount_tag(who, project_ID, tag_key))


# --- jobs -----------------------------------------------------------------------------------------
@router.get(
    f"{P}/job/result/{{id}}",
    response_model=JobResult,
    response_model_exclude_none=True,
    tags=["jobs"],
    summary="Poll an export job through its project (4.x address)",
)
def get_project_job_result(project_ID: str, id: str, request: Request, who: Who) -> JobResult:
    exports = request.app.state.segport.exports
    return job_result(exports, exports.job(who, id, project_id=project_ID))
