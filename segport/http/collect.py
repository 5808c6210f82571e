"""The collect endpoints GrowingIO's SDKs send to (collection protocol v3; docs/events.md).

``POST /v3/projects/{projectKey}/collect?stm=`` takes a batch of events, ``POST /projects/{projectKey}/collect/item``
a batch of items: JSON or protobuf, maybe gzip (``Content-Encoding``), snappy (``X-Compress-Codec: 2``) and XOR
(``X-Crypt-Codec: 1``). No bearer token: the collection key in the path and the ``dataSourceId`` the events carry
must name a data source that is not revoked. The answer is 200 only once the batch is committed to the spool.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.routing import Route

from segport.domain.events import encoding_of
from segport.http.schemas import ERRORS
from segport.services.collect import CollectService
from segport.store.events import DataSources, EventSpool

router = APIRouter(responses=ERRORS, tags=["collect"])
# A body up to this size is checked on the event loop (a batch of 100 events is about 28 KB and takes well
# under a millisecond); a larger one in a worker thread.
INLINE_BYTES = 64 * 1024

# No token (the SDKs send none: the collection key and each event's dataSourceId are checked instead). A batch
# holds at least one event, each an object carrying its data source; what else an event must hold (its type's
# fields, a time within the clock's window, the catalogue's types) is checked per event: docs/events.md.
_BODY = {
    "security": [],
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["dataSourceId"],
                        "properties": {"dataSourceId": {"type": "string", "minLength": 1}},
                    },
                }
            },
            "application/protobuf": {"schema": {"type": "string", "format": "binary"}},
        }
    },
}


def _service(request: Request) -> CollectService:
    state = request.app.state
    service: CollectService | None = getattr(state, "segport_collect", None)
    if service is None:
        db = state.segport.db
        service = CollectService(DataSources(db), EventSpool(db))
        state.segport_collect = service
    return service


async def _collect(request: Request, project_key: str, *, items: bool) -> Response:
    headers = request.headers
    enc = encoding_of(
        headers.get("content-type"),
        headers.get("x-compress-codec"),
        headers.get("x-crypt-codec"),
        headers.get("content-encoding"),
        request.query_params.get("stm"),
    )
    body = await request.body()
    service = _service(request)
    if len(body) <= INLINE_BYTES:  # a typical batch: checked here, cheaper than the hop to a thread and back
        prepared = service.prepare(project_key, body, enc, items=items)
    else:  # a large body takes milliseconds to check, which would hold up every other request here
        prepared = await run_in_threadpool(service.prepare, project_key, body, enc, items=items)
    project_id = service.cached_project(prepared)
    if project_id is None:
        project_id = await run_in_threadpool(service.project_of, prepared)
    # the group commit: answered once the transaction holding this batch has committed
    stored = await service.commit(project_id, prepared)
    return Response(
        b'{"accepted":%d,"duplicate":%s}' % (prepared.n_events, b"false" if stored else b"true"),
        media_type="application/json",
    )


async def _events_endpoint(request: Request) -> Response:
    return await _collect(request, request.path_params["projectKey"], items=False)


async def _items_endpoint(request: Request) -> Response:
    return await _collect(request, request.path_params["projectKey"], items=True)


def install_first(api: FastAPI) -> None:
    """The collect paths as plain Starlette routes ahead of every other route: the hot path of the SDKs then
    skips matching the whole API (a regular expression per route, some hundreds of microseconds a request) and
    FastAPI's parameter machinery. The FastAPI routes below stay for the OpenAPI document; these answer."""
    api.router.routes[0:0] = [
        Route("/v3/projects/{projectKey}/collect", _events_endpoint, methods=["POST"], include_in_schema=False),
        Route("/projects/{projectKey}/collect/item", _items_endpoint, methods=["POST"], include_in_schema=False),
    ]


@router.post(
    "/v3/projects/{projectKey}/collect",
    summary="Collect a batch of events (GrowingIO v3 collection protocol; no token)",
    openapi_extra=_BODY,
)
async def collect_events(projectKey: str, request: Request) -> Response:
    return await _collect(request, projectKey, items=False)


@router.post(
    "/projects/{projectKey}/collect/item",
    summary="Collect a batch of items (key, id, attributes; no token)",
    openapi_extra=_BODY,
)
async def collect_items(projectKey: str, request: Request) -> Response:
    return await _collect(request, projectKey, items=True)
