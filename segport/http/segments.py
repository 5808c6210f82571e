"""Segments (GrowingIO OpenAPI 2.x paths): list them (E1), page through their users (E2), recompute one (E14).
Their exports are submitted through segport/http/exports.py.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so DuckDB and SQLite never block the
event loop. Each parses its parameters, calls one use case and shapes the answer.
"""

from __future__ import annotations

from segport.http.auth import Who
from segport.http.dependencies import Paging, Properties, Queries, family_router
from segport.http.family_schemas import ComputeAnswer, Page, SegmentValue, UserValue, page_users, segment_value
from segport.http.paging import envelope

router = family_router()
P = "/v1/api/projects/{project_ID}"


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
    f"{P}/segment_profiles/{{segment_key}}/computes",
    response_model=ComputeAnswer,
    tags=["segments"],
    summary="Recompute a segment now (E14)",
)
def recompute_segment(project_ID: str, segment_key: str, who: Who, q: Queries) -> ComputeAnswer:
    return ComputeAnswer(value=True, message=q.recompute_segment(who, project_ID, segment_key))
