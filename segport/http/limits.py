"""Bounds on the request line and the body, for every endpoint at once (request headers are bounded earlier, by
:mod:`segport.http.protocol`).

A path longer than ``MAX_PATH`` bytes, a path segment longer than ``MAX_SEGMENT``, or a query string longer than
``MAX_QUERY`` is refused with HTTP 414 before any handler runs, so no identifier of unbounded length reaches a
database or an error message. A body over ``max_body_bytes`` (an upload: ``max_upload_bytes``) is a 413, whether
or not it declares its length (:class:`BodyLimit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segport.http.errors import error_response

MAX_PATH = 2048
MAX_SEGMENT = 512  # a percent-encoded result uri (segment names up to 150 characters) fits
MAX_QUERY = 8192


class RequestLineLimit:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope.get("path", "").encode()
            query = scope.get("query_string", b"")
            problem = None
            if len(raw_path) > MAX_PATH:
                problem = f"the path is longer than {MAX_PATH} bytes"
            elif any(len(part) > MAX_SEGMENT for part in raw_path.split(b"/")):
                problem = f"a path segment is longer than {MAX_SEGMENT} bytes"
            elif len(query) > MAX_QUERY:
                problem = f"the query string is longer than {MAX_QUERY} bytes"
            if problem:
                await error_response(414, "URI_TOO_LONG", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with HTTP 413, whether or not they declare a length.

    Admin uploads (users files, id lists) are bounded by ``upload_bytes`` instead; they are streamed to disk."""

    def __init__(
        self, app: Any, max_bytes: int, upload_bytes: int | None = None, *, is_upload: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes or max_bytes
        self.is_upload = is_upload

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if self.is_upload(scope.get("path", "")) else self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _reject(scope, receive, send, limit)
                    return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _reject(scope, receive, send, limit)


class _TooLarge(Exception):
    pass


async def _reject(scope: dict[str, Any], receive: Any, send: Any, limit: int) -> None:
    response = error_response(413, "PAYLOAD_TOO_LARGE", f"request body is larger than {limit} bytes")
    await response(scope, receive, send)
