"""One error renderer for every failure: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from segport.domain import strict_json
from segport.errors import InvalidBody, MetadataBusy, SegportError, exhaustion_of

log = logging.getLogger("segport.http")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    422: "BAD_REQUEST",
    429: "TOO_MANY_REQUESTS",
}


# pydantic's words for "a JSON object", as its JSON and Python modes spell them
_OBJECT_WORDS = re.compile(r"a valid dictionary or (object to extract fields from|instance of \w+)")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405: every method of the request's path. FastAPI makes one route per method and
    answers with the methods of the first route only. Where a literal path is also a parameter's value
    (``…/catalog/import`` and ``…/catalog/{key}``), the routes with the fewest parameters are the path's. Every
    ``GET`` also answers ``HEAD`` (:class:`segport.http.guard.EdgeGuard`)."""
    found: dict[int, set[str]] = {}
    path = request.scope.get("path", "")
    for regex, parameters, methods in _route_table(request.app):
        if regex.match(path):
            found.setdefault(parameters, set()).update(methods)
    chosen = found[min(found)] if found else set()
    if "GET" in chosen:
        chosen.add("HEAD")
    return ", ".join(sorted(chosen, key=lambda m: (_METHOD_ORDER + (m,)).index(m)))


def _route_table(app: FastAPI) -> list[tuple[re.Pattern[str], int, frozenset[str]]]:
    """(path regex, number of path parameters, methods) of every route with methods, built once per app."""
    table = getattr(app.state, "route_table", None)
    if table is None:
        table = []
        for route in iter_route_contexts(app.router.routes):
            if route.methods and route.path:
                regex, _, convertors = compile_path(route.path)
                table.append((regex, len(convertors), frozenset(route.methods)))
        app.state.route_table = table
    return table


def describe_validation(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """(code, message) for pydantic/FastAPI validation errors, phrased for a person."""
    parts = []
    code = "INVALID_PARAMETER"
    for err in errors[:5]:
        raw_loc = tuple(err.get("loc") or ())
        loc = [str(p) for p in raw_loc if p != "body"]
        where = ".".join(loc)
        kind = err.get("type", "")
        if kind == "json_invalid":
            return "INVALID_BODY", "request body is not valid JSON: " + str(
                err.get("ctx", {}).get("error", err.get("msg"))
            )
        if raw_loc[:1] == ("body",):
            code = "INVALID_BODY"
        if kind == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        elif kind == "missing":
            parts.append(f"{where}: required")
        else:
            msg = _OBJECT_WORDS.sub("an object", str(err.get("msg", "invalid")))
            parts.append(f"{where}: {msg}" if where else f"body: {msg}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return code, "; ".join(parts) or "invalid request"


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """A JSON request body read strictly (see :mod:`segport.domain.strict_json`), then checked by ``model``."""
    try:
        data = strict_json.loads(raw)
    except strict_json.StrictJSONError as exc:
        raise InvalidBody(f"request body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidBody(describe_validation(list(exc.errors()))[1]) from None


def known_error_response(exc: BaseException) -> JSONResponse | None:
    """The answer to a refusal segport names itself (a :class:`SegportError`, or no metadata connection free
    within the pool's timeout), as the app's handlers below give it; None for anything else."""
    if isinstance(exc, SegportError):
        return error_response(exc.status, exc.code, exc.message, exc.headers or None)
    if isinstance(exc, PoolTimeout):
        busy = MetadataBusy()
        log.warning("no metadata connection free within the pool timeout: %s", busy.message)
        return error_response(busy.status, busy.code, busy.message, busy.headers)
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(SegportError)
    async def _segport(_req: Request, exc: SegportError) -> JSONResponse:
        return known_error_response(exc)  # type: ignore[return-value]

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = describe_validation(list(exc.errors()))
        return error_response(400, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(exc.status_code, code, message, headers)

    @app.exception_handler(PoolTimeout)
    async def _pool(_req: Request, exc: PoolTimeout) -> JSONResponse:
        return known_error_response(exc)  # type: ignore[return-value]

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        exhausted = exhaustion_of(exc)  # out of memory, of file descriptors, of disk: a 503/507 with its code
        if exhausted is not None:
            log.warning("resource exhausted: %s (%s)", exhausted.message, type(exc).__name__)
            return error_response(exhausted.status, exhausted.code, exhausted.message, exhausted.headers or None)
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "INTERNAL_ERROR", "internal error; the server log has the details")
