"""The admin API's events (``/admin/v1/projects/{p}/events/...``): history from a file, and the event attribute
catalogue. Admin tokens only, as the rest of :mod:`segport.http.admin`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from segport.domain.event_files import EventAttribute
from segport.engine.base import EventImportReport
from segport.http.admin import PREFIX, RAW_BODY, Admin, UploadFormat, UploadName, _app, _json_body, _json_doc, uploaded
from segport.http.admin_schemas import DESCRIPTION_PATTERN, DISPLAY_NAME_PATTERN, TYPE_PATTERN
from segport.http.schemas import ERRORS
from segport.services.events import EventService

router = APIRouter(prefix=PREFIX, responses=ERRORS, tags=["admin"])


class EventKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # JSON schema only (json_schema_extra): the service's own checks and error codes stay what they are
    key: str = Field(max_length=110, json_schema_extra={"pattern": r"^\s*[A-Za-z_][A-Za-z0-9_]{0,99}\s*$"})
    name: str = Field("", max_length=200, json_schema_extra={"pattern": f"^$|{DISPLAY_NAME_PATTERN}"})
    type: str = Field(
        "string",
        max_length=16,
        description="string, int, double or date (one value: no [])",
        json_schema_extra={"pattern": TYPE_PATTERN.replace(r"(\[\])?", "")},
    )
    description: str = Field("", max_length=2000, json_schema_extra={"pattern": DESCRIPTION_PATTERN})


class EventKeyOut(BaseModel):
    key: str
    name: str
    type: str
    description: str
    declared: bool


class EventImportOut(BaseModel):
    file: str | None = None
    rowsRead: int
    stored: int
    usersCreated: int
    newAttributes: list[str]
    events: dict[str, list[str]]
    elapsedSeconds: float


def _events(request: Request) -> EventService:
    app = _app(request)
    return EventService(app.meta, app.engine, app.data)


def import_out(report: EventImportReport, filename: str | None) -> EventImportOut:
    return EventImportOut(
        file=filename,
        rowsRead=report.rows_read,
        stored=report.stored,
        usersCreated=report.users_created,
        newAttributes=[a.key for a in report.new_attributes],
        events=report.events,
        elapsedSeconds=round(report.elapsed_s, 3),
    )


@router.post(
    "/projects/{project_id}/events/import",
    response_model=EventImportOut,
    summary="Import events (the raw file as the body); all or nothing",
    openapi_extra=RAW_BODY,
)
async def import_events(
    project_id: str,
    request: Request,
    _who: Admin,
    format: UploadFormat = None,
    filename: UploadName = "",
) -> EventImportOut:
    app = _app(request)
    app.meta.project(project_id)
    async with uploaded(request, filename, format) as (path, format):
        report = await run_in_threadpool(_events(request).import_events, project_id, path, file_format=format)
    return import_out(report, filename or None)


@router.get("/projects/{project_id}/events/keys", response_model=list[EventKeyOut], summary="List event attributes")
def list_event_keys(project_id: str, request: Request, _who: Admin) -> list[EventKeyOut]:
    ev = _events(request)
    ev.meta.project(project_id)
    return [key_out(a.attribute, a.declared) for a in ev.catalog.attribute_rows(project_id)]


@router.post(
    "/projects/{project_id}/events/keys",
    response_model=EventKeyOut,
    summary="Declare an event attribute",
    openapi_extra=_json_doc(EventKeyBody),
)
async def add_event_key(project_id: str, request: Request, _who: Admin) -> EventKeyOut:
    body: EventKeyBody = await _json_body(request, EventKeyBody)
    ev = _events(request)
    attribute = await run_in_threadpool(ev.declare, project_id, body.key, body.name, body.type, body.description)
    return key_out(attribute, True)


def key_out(a: EventAttribute, declared: bool) -> EventKeyOut:
    return EventKeyOut(key=a.key, name=a.name, type=a.type.value, description=a.description, declared=declared)
