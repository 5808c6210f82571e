"""Events read back: GrowingIO's metadata endpoints (event names, event variables, people and visitor variables,
in the shapes `gio-importer`'s ``export_saas_meta`` reads) and one user's events (E18, and the same beside E11).

Included before :mod:`segport.http.users`: E11's ``{value:path}`` would otherwise take ``…/{value}/events``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from segport.domain.keys import KeyKind
from segport.http.auth import Who
from segport.http.dependencies import Queries
from segport.http.paging import language_header
from segport.http.schemas import ERRORS
from segport.services.events import EventService

router = APIRouter(responses=ERRORS, dependencies=[Depends(language_header)])
_TYPE_NAMES = {"string": "String", "int": "Int", "double": "Double", "date": "Date"}
MAX_END_MS = 9_999_999_999_999


def events_service(request: Request) -> EventService:
    app = request.app.state.segport
    return EventService(app.meta, app.engine, app.data)


Events = Annotated[EventService, Depends(events_service)]


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _var(
    project_id: str, key: str, name: str, type_name: str, description: str, created: datetime, updated: datetime
) -> dict[str, Any]:
    return {
        "id": key,
        "key": key,
        "name": name or key,
        "type": _TYPE_NAMES.get(type_name, "String"),
        "description": description or "",
        "projectId": project_id,
        "createdAt": _ms(created),
        "updatedAt": _ms(updated),
    }


@router.get(
    "/v1/api/projects/{project_ID}/dim/events",
    tags=["events"],
    summary="The project's events and the attributes each carries (GrowingIO's dim/events)",
)
def dim_events(project_ID: str, who: Who, q: Queries, ev: Events) -> list[dict[str, Any]]:
    project = q.project(who, project_ID)
    attrs = {a.attribute.key: a for a in ev.catalog.attribute_rows(project.id)}
    out = []
    for e in ev.catalog.names(project.id):
        out.append(
            {
                "id": e.key,
                "key": e.key,
                "name": e.name or e.key,
                "description": e.description or "",
                "type": "counter",
                "attrs": [
                    _var(
                        project.id,
                        k,
                        a.attribute.name,
                        a.attribute.type.value,
                        a.attribute.description,
                        a.created_at,
                        a.updated_at,
                    )
                    for k in e.attrs
                    if (a := attrs.get(k)) is not None
                ],
                "projectId": project.id,
                "createdAt": _ms(e.created_at),
                "updatedAt": _ms(e.updated_at),
                "creator": "",
                "updater": "",
                "eventType": "dash",
            }
        )
    return out


@router.get(
    "/v1/api/projects/{project_ID}/vars/events",
    tags=["events"],
    summary="The project's event attributes: key, display name, type (GrowingIO's vars/events)",
)
def vars_events(project_ID: str, who: Who, q: Queries, ev: Events) -> list[dict[str, Any]]:
    project = q.project(who, project_ID)
    return [
        _var(
            project.id,
            a.attribute.key,
            a.attribute.name,
            a.attribute.type.value,
            a.attribute.description,
            a.created_at,
            a.updated_at,
        )
        for a in ev.catalog.attribute_rows(project.id)
    ]


@router.get(
    "/v1/api/projects/{project_ID}/vars/peoples",
    tags=["events"],
    summary="The project's user properties (usr_ keys, written without the prefix; GrowingIO's vars/peoples)",
)
def vars_peoples(project_ID: str, who: Who, q: Queries) -> list[dict[str, Any]]:
    project = q.project(who, project_ID)
    rows = q.meta.catalog_rows(project.id, KeyKind.PROPERTY)
    return [_var(project.id, r.key[4:], r.name, r.type, r.description, r.created_at, r.updated_at) for r in rows]


@router.get(
    "/v1/api/projects/{project_ID}/vars/visitors",
    tags=["events"],
    summary="The project's visitor variables (segport keeps none apart from user properties: always [])",
)
def vars_visitors(project_ID: str, who: Who, q: Queries) -> list[dict[str, Any]]:
    q.project(who, project_ID)
    return []


def _user_events(
    project_id: str,
    identity_key: str,
    value: str,
    who: Any,
    q: Any,
    ev: EventService,
    start: int | None,
    end: int | None,
    limit: int,
    offset: int,
    order: str,
) -> dict[str, Any]:
    project = q.project(who, project_id)
    start_ms = 0 if start is None else start
    end_ms = MAX_END_MS if end is None else end
    page = ev.user_events(project.id, identity_key, value, start_ms, end_ms, limit, offset, order)
    values = [
        {
            "event": r["event"],
            "eventType": r["type"],
            "timestamp": r["time"],
            "time": datetime.fromtimestamp(r["time"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{r['time'] % 1000:03d}Z",
            "attributes": {k: _text(v) for k, v in r["attrs"].items()},
            "fields": {k: _text(v) for k, v in r["std"].items()},
        }
        for r in page.rows
    ]
    return {
        "gioId": str(page.gio_id),
        "limit": limit,
        "offset": offset,
        "order": order.lower(),
        "hasNextPage": page.has_next,
        "values": values,
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


Start = Annotated[int | None, Query(alias="startTime", ge=0, description="ms since the epoch, inclusive (default 0)")]
End = Annotated[
    int | None, Query(alias="endTime", ge=0, description="ms since the epoch, exclusive (default: no bound)")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="events per page (default 100)")]
Offset = Annotated[int, Query(ge=0, le=2**53, description="events to skip (segport's addition, for ties at one ms)")]
Order = Annotated[str, Query(pattern="^(asc|desc|ASC|DESC)$", description="asc or desc by time (default desc)")]


@router.get(
    "/cdp/api/v2/spaces/{project_ID}/users/{identityKey}/{identityValue}/events",
    tags=["users"],
    summary="One user's events, by time (E18)",
)
@router.get(
    "/v1/api/projects/{project_ID}/users/{identityKey}/{identityValue}/events",
    tags=["users"],
    summary="One user's events, by time (E18's shape beside E11)",
)
def user_events(
    project_ID: str,
    identityKey: str,
    identityValue: str,
    who: Who,
    q: Queries,
    ev: Events,
    startTime: Start = None,
    endTime: End = None,
    limit: Limit = 100,
    offset: Offset = 0,
    order: Order = "desc",
) -> dict[str, Any]:
    return _user_events(project_ID, identityKey, identityValue, who, q, ev, startTime, endTime, limit, offset, order)
