"""What every request and answer goes through before any router sees it: the HTTP edges.

One raw-ASGI middleware, outermost, so that even the 413/414 guards' answers carry the same headers:

* the request line: a path or query string holding a control character (NUL…) or bytes that are not UTF-8 is a
  400 before any identifier reaches a database; a repeated query parameter is a 400 (only ``properties`` and
  ``properties[]`` are lists); a trailing slash is dropped, so ``/x/`` answers what ``/x`` answers (no 307);
* the body: while it is incomplete, each read waits at most ``read_timeout_s`` (uploads: per read; other
  bodies: for the whole body, so one byte a second cannot hold a request); then a 408 and the connection closes.
  A client that goes away mid-request is logged at INFO, not as an unhandled error;
* the answer: ``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store`` on every answer (they carry
  personal data or tokens' views of it), a ``Content-Security-Policy`` (a strict one for HTML pages, ``none``
  for everything else), ``WWW-Authenticate: Bearer`` on a 401; a ``HEAD`` runs the ``GET`` handler and its
  body is dropped (``/download`` has its own HEAD, which does not open the file).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import ClientDisconnect

from segport.http.errors import error_response

log = logging.getLogger("segport.http")

LIST_PARAMETERS = frozenset({"properties", "properties[]"})
# HTML pages not covered by the console's own header middleware (which sets a tighter policy on /console and
# on /docs, /redoc): every asset is served by segport itself, so nothing outside 'self' is allowed
HTML_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"


def request_line_problem(raw_path: bytes, query: bytes) -> str | None:
    """Why a request line is refused (control characters, bytes that are not UTF-8, repeated parameters)."""
    path = _decoded(raw_path)
    if path is None:
        return "the path is not valid percent-encoded UTF-8"
    if _has_control(path):
        return "the path holds a control character"
    seen: set[str] = set()
    for pair in query.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name, value = _decoded(raw_name, plus=True), _decoded(raw_value, plus=True)
        if name is None or value is None:
            return "the query string is not valid percent-encoded UTF-8"
        if _has_control(name) or _has_control(value):
            return f"query parameter {name[:40]!r} holds a control character"
        if name in seen and name not in LIST_PARAMETERS:
            return f"query parameter {name[:40]!r} is given more than once"
        seen.add(name)
    return None


def _decoded(raw: bytes, *, plus: bool = False) -> str | None:
    if b"%" not in raw and raw.isascii():  # the common case, without a copy
        return raw.decode("ascii").replace("+", " ") if plus else raw.decode("ascii")
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ") if plus else raw).decode("utf-8")
    except UnicodeDecodeError:  # also what a percent-encoded lone surrogate (%ED%A0%80) is
        return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


class _ReadTimeout(Exception):
    pass


class EdgeGuard:
    def __init__(self, app: Any, *, read_timeout_s: float, is_upload: Any, native_head: frozenset[str]) -> None:
        self.app = app
        self.native_head = native_head
        self.read_timeout_s = read_timeout_s
        self.is_upload = is_upload

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        problem = request_line_problem(raw_path, scope.get("query_string", b""))
        started = False
        head = scope.get("method") == "HEAD"

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": _with_edge_headers(message)}
            elif message["type"] == "http.response.body" and head and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        if problem:
            await error_response(400, "INVALID_PARAMETER", problem)(scope, receive, guarded_send)
            return
        path = scope.get("path", "")
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/", "raw_path": raw_path.rstrip(b"/") or b"/"}
        if head and scope["path"] not in self.native_head:
            # FastAPI routes only the methods an endpoint declares: HEAD runs the GET handler (body dropped below)
            scope = {**scope, "method": "GET"}
        upload = self.is_upload(scope["path"])
        deadline = time.monotonic() + self.read_timeout_s
        # HTTP/1.1: without Content-Length or Transfer-Encoding there is no body to wait for
        body_done = not any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])

        async def timed_receive() -> dict[str, Any]:
            nonlocal body_done
            if body_done or started:  # after the body, receive() only waits for a disconnect: no bound
                return await receive()
            wait = self.read_timeout_s if upload else max(0.0, deadline - time.monotonic())
            try:
                async with asyncio.timeout(wait):  # no task per read, unlike wait_for: this is every request
                    message = await receive()
            except TimeoutError:
                raise _ReadTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        try:
            await self.app(scope, timed_receive, guarded_send)
        except _ReadTimeout:
            log.info("request body not received within %s s: %s %s", self.read_timeout_s, scope["method"], path)
            if not started:
                message = f"the request body did not arrive within {self.read_timeout_s:g} s"
                response = error_response(408, "REQUEST_TIMEOUT", message, {"Connection": "close"})
                await response(scope, receive, guarded_send)
        except ClientDisconnect:
            log.info("client went away before its request was read: %s %s", scope["method"], path)


_HTML_POLICY, _DATA_POLICY = HTML_POLICY.encode(), DATA_POLICY.encode()


def _with_edge_headers(message: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    headers = list(message.get("headers", []))
    names = {name.lower() for name, _ in headers}
    content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
    extra = [
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", _HTML_POLICY if content_type.startswith(b"text/html") else _DATA_POLICY),
    ]
    if message.get("status") == 401:
        extra.append((b"www-authenticate", b'Bearer realm="segport"'))
    return headers + [(n, v) for n, v in extra if n not in names]
