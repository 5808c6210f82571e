"""Bounds on the request line, for every endpoint at once (bodies are bounded by ``BodyLimit``).

A path longer than ``MAX_PATH`` bytes, a path segment longer than ``MAX_SEGMENT``, or a query string longer than
``MAX_QUERY`` is refused with HTTP 414 before any handler runs, so no identifier of unbounded length reaches a
database or an error message.
"""

from __future__ import annotations

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
