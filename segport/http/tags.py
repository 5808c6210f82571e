"""Tags (GrowingIO OpenAPI 2.x paths): list them (E4 platform level, E5), page through their users (E6, E7),
recount one (E15). Their exports (E8, E9) are submitted through segport/http/exports.py."""

from __future__ import annotations

from segport.http.auth import Who
from segport.http.dependencies import Paging, Properties, Queries, family_router
from segport.http.family_schemas import ComputeAnswer, Page, TagValue, UserValue, page_users, tag_value
from segport.http.paging import PageParams, envelope
from segport.services.queries import QueryService
from segport.store.meta import Principal

router = family_router()
P = "/v1/api/projects/{project_ID}"


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
    f"{P}/user_tags/{{tag_key}}/computes", response_model=ComputeAnswer, tags=["tags"], summary="Recount a tag (E15)"
)
def recompute_tag(project_ID: str, tag_key: str, who: Who, q: Queries) -> ComputeAnswer:
    return ComputeAnswer(value=True, message=q.recount_tag(who, project_ID, tag_key))
