"""The admin API's tags (``/admin/v1/projects/{p}/tags``): define a tag computed from events, list and show the
project's tags (imported ones too), recompute one, delete one. Admin tokens only, as the rest of
:mod:`segport.http.admin`; docs/tags.md tells the definitions."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from segport.domain.tags import IMPORTED_TYPE
from segport.http.admin import PREFIX, Admin, _app, _json_body, _json_doc
from segport.http.admin_schemas import DESCRIPTION_PATTERN, DISPLAY_NAME_PATTERN
from segport.http.schemas import ERRORS
from segport.services.tags import TagService, TagSpec, TagView
from segport.store.meta import iso_ms

router = APIRouter(prefix=PREFIX, responses=ERRORS, tags=["admin"])


class TagBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        ..., max_length=100, examples=["tag_pay_30d"], json_schema_extra={"pattern": r"^tag_[A-Za-z_$][A-Za-z0-9_$]*$"}
    )
    name: str = Field(
        ..., max_length=200, examples=["30天支付金额"], json_schema_extra={"pattern": DISPLAY_NAME_PATTERN}
    )
    description: str = Field("", max_length=2000, json_schema_extra={"pattern": DESCRIPTION_PATTERN})
    definition: Any = Field(
        ...,
        description="AGGREGATED, ATTRIBUTION_ATTRIBUTE, TOP_N_ATTRIBUTE or HORIZONTAL (docs/tags.md), or that JSON "
        "as a string.",
        examples=[{"type": "AGGREGATED", "event": "pay", "measure": {"sum": "amount"}, "time": {"last_days": 30}}],
    )
    scheduler: str | None = Field(None, pattern="^(DAILY|ONCE|daily|once)$", description="DAILY (default) or ONCE.")


class TagValueType(BaseModel):
    type: Literal["STRING", "INT", "DOUBLE", "DATE"]
    isArray: bool


class TagDetector(BaseModel):
    stage: Literal["NONE", "RUNNING", "FINISH", "ERROR"]
    detectedAt: str | None
    totalUsers: int
    error: str | None = None


class TagOut(BaseModel):
    key: str
    name: str
    description: str
    type: str = Field(description="the definition's type, or DATA_SET_ATTRIBUTE for a tag imported with profiles")
    valueType: TagValueType
    definition: Any = Field(None, description="the definition as given (null for an imported tag)")
    scheduler: str | None = None
    detector: TagDetector | None = None
    creator: str = ""
    createdAt: str | None = None
    updatedAt: str | None = None


def tag_out(view: TagView) -> TagOut:
    e, row = view.entry, view.definition
    out = TagOut(
        key=e.key,
        name=e.name,
        description=e.description,
        type=IMPORTED_TYPE,
        valueType=TagValueType(type=e.type.value.upper(), isArray=e.multi),  # type: ignore[arg-type]
    )
    if row is not None:
        out.type = row.type
        out.definition = json.loads(row.definition)
        out.scheduler = row.scheduler
        out.detector = TagDetector(
            stage=row.detector_stage,  # type: ignore[arg-type]
            detectedAt=iso_ms(row.detected_at),
            totalUsers=row.total_users,
            error=row.detector_error,
        )
        out.creator = row.creator
        out.createdAt = iso_ms(row.created_at)
        out.updatedAt = iso_ms(row.updated_at)
    return out


def _tags(request: Request) -> TagService:
    return TagService(_app(request).data)


@router.get("/projects/{project_id}/tags", response_model=list[TagOut], summary="List the tags (imported and computed)")
def list_tags(project_id: str, request: Request, _who: Admin) -> list[TagOut]:
    return [tag_out(v) for v in _tags(request).views(project_id)]


@router.get("/projects/{project_id}/tags/{tag_key}", response_model=TagOut, summary="Show a tag")
def show_tag(project_id: str, tag_key: str, request: Request, _who: Admin) -> TagOut:
    return tag_out(_tags(request).view(project_id, tag_key))


@router.post(
    "/projects/{project_id}/tags",
    response_model=TagOut,
    status_code=201,
    summary="Create a tag computed from events (computed at once)",
    openapi_extra=_json_doc(TagBody),
)
async def create_tag(project_id: str, request: Request, who: Admin) -> TagOut:
    _app(request).meta.project(project_id)
    body: TagBody = await _json_body(request, TagBody)
    spec = TagSpec(
        key=body.key,
        name=body.name,
        definition=body.definition,
        description=body.description,
        scheduler=body.scheduler,
        creator=f"admin token {who.token_id}",
    )
    return tag_out(await run_in_threadpool(_tags(request).create, project_id, spec))


@router.post(
    "/projects/{project_id}/tags/{tag_key}/recompute",
    response_model=TagOut,
    summary="Recompute a computed tag now (when its detector is FINISH or ERROR)",
)
async def recompute_tag(project_id: str, tag_key: str, request: Request, _who: Admin) -> TagOut:
    tags = _tags(request)
    view = tags.view(project_id, tag_key)
    await run_in_threadpool(tags.recompute_if_idle, project_id, view.entry.key)
    return tag_out(tags.view(project_id, tag_key))


@router.delete("/projects/{project_id}/tags/{tag_key}", status_code=204, summary="Delete a computed tag and its values")
async def delete_tag(project_id: str, tag_key: str, request: Request, _who: Admin) -> None:
    await run_in_threadpool(_tags(request).delete, project_id, tag_key)
