"""segport's HTTP protocol (segport/http/protocol.py) fed in the ways a socket can deliver bytes.

The live tests in tests/test_slow_clients.py cannot choose how the kernel splits what a client sends. Here the
protocol runs on a real asyncio transport over a Unix socketpair whose peer has written the whole request before
the transport reads, so the protocol receives it in one ``data_received`` call; and again one byte per call.
The application behind it is a trivial ASGI app that answers 200: what is tested is the protocol.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.server import ServerState

from segport.http.protocol import MAX_HEADER_BYTES, guarded_protocol


async def hello(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = json.dumps({"got": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


def serve_bytes(request: bytes, *, one_byte_at_a_time: bool = False) -> bytes:
    """What the guarded protocol answers to ``request``, read until it closes or goes quiet."""

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        config = uvicorn.Config(app=hello, http=guarded_protocol(5.0, 10), lifespan="off", log_level="critical")
        config.load()
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        server_side, client_side = socket.socketpair()
        server_side.setblocking(False)
        client_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        client_side.settimeout(5)
        try:
            if one_byte_at_a_time:
                await loop.connect_accepted_socket(lambda: protocol, server_side)
                for i in range(len(request)):
                    if protocol.transport.is_closing():
                        break
                    protocol.data_received(request[i : i + 1])
            else:
                client_side.sendall(request)  # all of it waits in the socket before the transport's first read
                await loop.connect_accepted_socket(lambda: protocol, server_side)
            chunks = []
            while True:
                data = await loop.run_in_executor(None, _recv, client_side)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks)
        finally:
            client_side.close()
            if protocol.transport is not None:
                protocol.transport.close()

    return asyncio.run(run())


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except (TimeoutError, ConnectionResetError):
        return b""


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


REQUEST_LINE = b"POST /anything HTTP/1.1\r\nHost: a\r\n"


HUGE_HEADER = b"X-Big: " + b"a" * 200_000 + b"\r\n"
MANY_HEADERS = b"X-A: b\r\n" * 20_000
JUST_OVER = b"X-A: " + b"b" * (MAX_HEADER_BYTES - 40) + b"\r\n"


@pytest.fixture(params=["one-read", "byte-by-byte"])
def delivery(request: pytest.FixtureRequest) -> Iterator[bool]:
    yield request.param == "byte-by-byte"


@pytest.mark.parametrize(
    ("headers", "one_byte_at_a_time"),
    [(HUGE_HEADER, False), (MANY_HEADERS, False), (JUST_OVER, False), (JUST_OVER, True)],
    ids=["one-huge-header", "twenty-thousand-headers", "just-over-the-bound", "just-over-the-bound-byte-by-byte"],
)
def test_headers_over_the_bound_are_a_431_however_they_arrive(headers: bytes, one_byte_at_a_time: bool) -> None:
    request = REQUEST_LINE + headers + b"Content-Length: 5\r\n\r\nhello"
    status, body = status_and_body(serve_bytes(request, one_byte_at_a_time=one_byte_at_a_time))
    assert status == 431
    assert json.loads(body)["error"]["code"] == "HEADERS_TOO_LARGE"


def test_headers_under_the_bound_are_served_however_they_arrive(delivery: bool) -> None:
    headers = b"X-A: " + b"b" * (MAX_HEADER_BYTES - 200) + b"\r\n"
    request = REQUEST_LINE + headers + b"Connection: close\r\nContent-Length: 5\r\n\r\nhello"
    status, body = status_and_body(serve_bytes(request, one_byte_at_a_time=delivery))
    assert (status, json.loads(body)) == (200, {"got": 5})


def test_a_refused_request_is_not_served_nor_is_the_request_pipelined_behind_it() -> None:
    big = REQUEST_LINE + b"X-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 5\r\n\r\nhello"
    small = b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n"
    answer = serve_bytes(big + small)
    status, body = status_and_body(answer)
    assert status == 431 and json.loads(body)["error"]["code"] == "HEADERS_TOO_LARGE"
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"\x00\x01\x02 hello\r\n\r\n",
    ],
    ids=["content-length-and-chunked", "negative-content-length", "not-http"],
)
def test_requests_that_are_not_valid_http_get_the_json_400(request_bytes: bytes) -> None:
    """docs/limits.md: both Content-Length and chunked, and bytes that are not HTTP, are a JSON 400."""
    status, body = status_and_body(serve_bytes(request_bytes))
    assert status == 400 and json.loads(body)["error"]["code"] == "BAD_REQUEST"
