"""The collect endpoints GrowingIO's SDKs send to (collection protocol v3; docs/events.md).

``POST /v3/projects/{projectKey}/collect?stm=`` takes a batch of events, ``POST /projects/{projectKey}/collect/item``
a batch of items: JSON or protobuf, maybe gzip (``Content-Encoding``), snappy (``X-Compress-Codec: 2``) and XOR
(``X-Crypt-Codec: 1``). No bearer token: the collection key in the path and the ``dataSourceId`` the events carry
must name a data source that is not revoked. The answer is 200 only once the batch is committed to the spool.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette._utils import get_route_path
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from segport.domain.events import Encoding, encoding_of
from segport.http.errors import known_error_response
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
    return _service_of(request.app.state)


def _service_of(state: Any) -> CollectService:
    """The app's one collect service (and so one group commit per process), made on first use."""
    service: CollectService | None = getattr(state, "segport_collect", None)
    if service is None:
        db = state.segport.db
        service = CollectService(DataSources(db), EventSpool(db))
        state.segport_collect = service
    return service


async def _accept(
    service: CollectService, project_key: str, body: bytes, enc: Encoding, items: bool
) -> tuple[int, bool]:
    """Check ``body`` and commit it to the spool: (events accepted, whether it was a duplicate). Both the route
    and :class:`CollectFastPath` answer through here."""
    if len(body) <= INLINE_BYTES:  # a typical batch: checked here, cheaper than the hop to a thread and back
        prepared = service.prepare(project_key, body, enc, items=items)
    else:  # a large body takes milliseconds to check, which would hold up every other request here
        prepared = await run_in_threadpool(service.prepare, project_key, body, enc, items=items)
    project_id = service.cached_project(prepared)
    if project_id is None:
        project_id = await run_in_threadpool(service.project_of, prepared)
    # the group commit: answered once the transaction holding this batch has committed
    stored = await service.commit(project_id, prepared)
    return prepared.n_events, not stored


async def _collect(request: Request, project_key: str, *, items: bool) -> Response:
    headers = request.headers
    enc = encoding_of(
        headers.get("content-type"),
        headers.get("x-compress-codec"),
        headers.get("x-crypt-codec"),
        headers.get("content-encoding"),
        request.query_params.get("stm"),
    )
    accepted, duplicate = await _accept(_service(request), project_key, await request.body(), enc, items)
    return Response(
        b'{"accepted":%d,"duplicate":%s}' % (accepted, b"true" if duplicate else b"false"),
        media_type="application/json",
    )


class CollectFastPath:
    """The SDKs' hot path, ``POST`` on the collect paths, answered as raw ASGI just inside the edge guards
    (:class:`segport.http.guard.EdgeGuard`, the request-line and body limits, which it runs behind like every
    request): no routing through the whole API (a regular expression per route), no ``Request`` or
    ``Response`` objects, no FastAPI parameter machinery. Every other method and path goes on to the app, and
    the FastAPI routes below stay for the OpenAPI document (and answer a 405 to another method).

    What a request gets is what the routes gave it: the headers and ``stm`` read as Starlette reads them (the
    first header of a name; the query string as ``QueryParams`` parses it), the body read to its end (a client
    gone mid-body is Starlette's ``ClientDisconnect``), a refusal rendered by the app's own renderer
    (:func:`segport.http.errors.known_error_response`; anything else propagates to the app's last-resort
    handler), and a 200 as ``Response`` built it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._service: CollectService | None = None  # the app's (its state's), found on the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = _collect_target(get_route_path(scope))
            if target is not None:
                await self._answer(scope, receive, send, *target)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, project_key: str, items: bool) -> None:
        try:
            accepted, duplicate = await self._collect(scope, receive, project_key, items)
        except Exception as exc:  # noqa: BLE001 - the app's renderer answers what it knows, the rest goes on up
            response = known_error_response(exc)
            if response is None:
                raise
            await response(scope, receive, send)
            return
        body = b'{"accepted":%d,"duplicate":%s}' % (accepted, b"true" if duplicate else b"false")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _collect(self, scope: Scope, receive: Receive, project_key: str, items: bool) -> tuple[int, bool]:
        content_type = compress = crypt = coding = None
        for name, value in scope["headers"]:  # the first of each name, as Starlette's Headers.get
            if name == b"content-type":
                content_type = value.decode("latin-1") if content_type is None else content_type
            elif name == b"x-compress-codec":
                compress = value.decode("latin-1") if compress is None else compress
            elif name == b"x-crypt-codec":
                crypt = value.decode("latin-1") if crypt is None else crypt
            elif name == b"content-encoding":
                coding = value.decode("latin-1") if coding is None else coding
        enc = encoding_of(content_type, compress, crypt, coding, _stm(scope["query_string"]))
        body = await _read_body(receive)
        service = self._service
        if service is None:
            service = self._service = _service_of(scope["app"].state)
        return await _accept(service, project_key, body, enc, items)


_EVENTS_PREFIX, _EVENTS_SUFFIX = "/v3/projects/", "/collect"
_ITEMS_PREFIX, _ITEMS_SUFFIX = "/projects/", "/collect/item"


def _collect_target(path: str) -> tuple[str, bool] | None:
    """(projectKey, items?) of a collect path, matched as the routes' ``{projectKey}`` (one non-empty segment)."""
    for prefix, suffix, items in ((_EVENTS_PREFIX, _EVENTS_SUFFIX, False), (_ITEMS_PREFIX, _ITEMS_SUFFIX, True)):
        if path.startswith(prefix) and path.endswith(suffix):
            key = path[len(prefix) : len(path) - len(suffix)]
            if key and "/" not in key:
                return key, items
    return None


def _stm(query: bytes) -> str | None:
    """``stm`` of the query string as ``request.query_params.get("stm")`` gives it (EdgeGuard has refused a
    repeated parameter already)."""
    if query[:4] == b"stm=" and query[4:].isdigit():  # what the SDKs send: nothing to decode
        return query[4:].decode("ascii")
    return QueryParams(query).get("stm") if query else None


async def _read_body(receive: Receive) -> bytes:
    """The whole body, as ``Request.body()`` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
