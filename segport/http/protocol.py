"""uvicorn's HTTP protocol with the two bounds it lacks: a deadline for request headers, and a connection cap.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but a connection that sends part of its
request line or headers, or nothing at all, is held for ever: a few thousand of them (slow-loris) take every
descriptor the process has. Here a request's headers must be complete ``header_timeout_s`` after the
connection opened, or after the first byte of the next request on a keep-alive connection; otherwise the client
gets a 408 (the one JSON error shape) and the connection is closed. A connection beyond ``max_connections``
is answered 503 and closed at once, before anything is read (the listen backlog queues the rest in the kernel).
A request line with headers over ``MAX_HEADER_BYTES`` is a 431, and bytes that are not HTTP a JSON 400, as
is an HTTP/1.1 request without a ``Host`` header or any request with two (RFC 9112 §3.2).
Bodies are bounded in size by :class:`segport.http.limits.BodyLimit` and in time by
:class:`segport.http.guard.EdgeGuard`.

The header bound is checked twice, because the socket decides how the bytes arrive: while headers are still
incomplete, by the bytes received (so a client cannot make the parser buffer an endless header), and when they
complete, by what the parser read (so headers that arrive in a single read, however large, are refused too).
Once a connection is refused, the parser's later callbacks for it (body, next pipelined request) do nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("segport.http")


def raw_error(status: int, reason: str, code: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 error answer with ``Connection: close``, written straight to the socket."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


MAX_HEADER_BYTES = 64 * 1024  # request line and headers; the parser itself sets no limit


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with these bounds."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0  # received while the headers are incomplete
        _parsed_header_bytes = 0  # request line and headers as the parser read them
        _refused = False
        _host_headers = 0  # Host fields of the request being parsed

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refused = True
                log.warning("connection refused: %d connections are open (max_connections)", max_connections)
                message = f"the server holds {max_connections} connections already: try again shortly"
                transport.write(
                    raw_error(503, "Service Unavailable", "TOO_MANY_CONNECTIONS", message, {"retry-after": "1"})
                )
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if self._header_timer is not None:  # still reading a request line and headers
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._headers_too_large()

        def send_400_response(self, msg: str) -> None:
            """Not HTTP/1.1 at all: the one JSON error shape instead of uvicorn's plain text."""
            self._refuse(400, "Bad Request", "BAD_REQUEST", "the request is not valid HTTP/1.1")

        def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
            if self._refused or self.transport.is_closing():
                return
            self._refused = True
            self._disarm()
            self.transport.write(raw_error(status, reason, code, message))
            self.transport.close()

        def _headers_too_large(self) -> None:
            message = f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes"
            self._refuse(431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE", message)

        # The parser's callbacks. After a refusal the parser may still be walking the rest of the bytes it was
        # fed (the body, a pipelined request): none of it reaches the application.

        def on_message_begin(self) -> None:
            if self._refused:
                return
            super().on_message_begin()
            self._parsed_header_bytes = 0
            self._host_headers = 0
            self._arm()

        def on_url(self, url: bytes) -> None:
            if self._refused:
                return
            self._parsed_header_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._refused:
                return
            self._parsed_header_bytes += len(name) + len(value) + 4  # "name: value\r\n"
            if name.lower() == b"host":
                self._host_headers += 1
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            self._header_bytes = 0
            if self._refused:
                return
            if self._parsed_header_bytes > MAX_HEADER_BYTES:
                self._headers_too_large()
                return
            # RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with more than one, is a 400
            # (HTTP/1.0 predates Host and may omit it)
            if self._host_headers > 1 or (self._host_headers == 0 and self.parser.get_http_version() != "1.0"):
                message = "a request must carry exactly one Host header (only HTTP/1.0 may leave it out)"
                self._refuse(400, "Bad Request", "BAD_REQUEST", message)
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_overdue)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_overdue(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self._arm()  # a pipelined request waits behind one still running: look again later
                return
            log.info("request headers not received within %s s: connection closed", header_timeout_s)
            message = f"the request headers did not arrive within {header_timeout_s:g} s"
            self._refuse(408, "Request Timeout", "REQUEST_TIMEOUT", message)

    return GuardedHttpProtocol


def raise_descriptor_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never above the hard limit);
    returns the limit in force. Each connection holds one descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.Config`` that bound slow and idle clients (see docs/limits.md)."""
    return {
        "http": guarded_protocol(settings.request_read_timeout_s, settings.max_connections),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
    }
