"""One error renderer for every failure: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from segport.errors import SegportError

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


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


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
            msg = str(err.get("msg", "invalid")).replace(
                "a valid dictionary or object to extract fields from", "an object"
            )
            parts.append(f"{where}: {msg}" if where else f"body: {msg}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return code, "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(SegportError)
    async def _segport(_req: Request, exc: SegportError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = describe_validation(list(exc.errors()))
        return error_response(400, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "INTERNAL_ERROR", "internal error; the server log has the details")
