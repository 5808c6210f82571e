"""What a careless or hostile client sends a real `segport serve` (issue 23): console forms with more fields than
the form parser takes, and HTTP/1.1 requests without (or with two) ``Host`` headers. Each gets a clean 4xx, the
log has no traceback, and a keep-alive connection that got a 4xx from the application goes on serving.

Real sockets on loopback; the server is stopped by its PID."""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT, SEGMENT, LiveServer, start_server, stop_server
from tests.test_http_protocol import serve_bytes, status_and_body

TOO_MANY_FIELDS = b"&" * 600  # parse_qs(max_num_fields=500) counts the separators


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, seeded_template: tuple[Path, tuple[str, str, str]]
) -> Iterator[tuple[LiveServer, str]]:
    template, (token, _, _) = seeded_template
    base = tmp_path_factory.mktemp("hostile-clients")
    shutil.copytree(template, base / "data")
    server = start_server(base / "data", base / "server.log", env={"SEGPORT_API_PROCESSES": "1"})
    try:
        yield server, token
    finally:
        stop_server(server)
    log = (base / "server.log").read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


class Connection:
    """One keep-alive HTTP/1.1 connection, spoken by hand so that a test sees whether it survives."""

    def __init__(self, server: LiveServer) -> None:
        host, port = server.base_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request; (status, headers, body) of its answer (Content-Length or chunked)."""
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buffer:
                    self._more()
                size_line, _, self.buffer = self.buffer.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self.buffer) < size + 2:
                    self._more()
                body += self.buffer[:size]
                self.buffer = self.buffer[size + 2 :]
                if size == 0:
                    break
        else:
            size = int(headers.get("content-length", "0"))
            while len(self.buffer) < size:
                self._more()
            body, self.buffer = self.buffer[:size], self.buffer[size:]
        return int(lines[0].split()[1]), headers, body


def post_form(path: str, body: bytes, cookie: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: segport\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n"
    ).encode() + body


def get(path: str, cookie: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: segport\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n").encode()


def signed_in(server: LiveServer, token: str) -> tuple[str, str]:
    """(Cookie header of a console session, its CSRF token)."""
    with httpx.Client(base_url=server.base_url) as client:
        page = client.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]*)"', page)
        assert csrf
        r = client.post("/console/signin", data={"csrf": csrf.group(1), "token": token}, follow_redirects=False)
        assert r.status_code == 303, r.text
        session = client.cookies["segport_session"]
        page = client.get(f"/console/p/{PROJECT}/segments").text
        csrf = re.search(r'name="csrf" value="([^"]*)"', page)
        assert csrf
        return f"segport_session={session}", csrf.group(1)


def test_a_sign_in_form_with_too_many_fields_is_a_400_and_the_connection_goes_on(
    live: tuple[LiveServer, str],
) -> None:
    server, _ = live
    with Connection(server) as conn:
        for _ in range(2):  # the second time on the same connection: it was not reset
            status, headers, body = conn.request(post_form("/console/signin", TOO_MANY_FIELDS))
            assert status == 400 and headers["content-type"].startswith("text/html")
            assert b"INVALID_BODY" in body and b"more than 500 fields" in body
            assert headers.get("connection") != "close"
        status, _, body = conn.request(get("/console/signin"))
        assert status == 200 and b'name="csrf"' in body


def test_signed_in_forms_with_too_many_fields_are_a_400_too(live: tuple[LiveServer, str]) -> None:
    server, token = live
    cookie, csrf = signed_in(server, token)
    many = f"csrf={csrf}&p=usr_gender&action=export".encode() + TOO_MANY_FIELDS
    paths = [
        f"/console/p/{PROJECT}/segments/{SEGMENT}",  # export and preview are one form
        f"/console/p/{PROJECT}/jobs/nojob123/cancel",
        "/console/signout",
    ]
    with Connection(server) as conn:
        for path in paths:
            status, _, body = conn.request(post_form(path, many, cookie))
            assert status == 400, (path, body[:300])
            assert b"INVALID_BODY" in body and b"more than 500 fields" in body
        for path in ["/console/signout"]:  # without a session: the same refusal
            status, _, body = conn.request(post_form(path, TOO_MANY_FIELDS))
            assert status == 400 and b"INVALID_BODY" in body
        status, _, _ = conn.request(get(f"/console/p/{PROJECT}/segments", cookie))
        assert status == 200  # still signed in: nothing was done


def test_a_form_with_500_fields_is_still_read(live: tuple[LiveServer, str]) -> None:
    server, _ = live
    with Connection(server) as conn:
        status, _, body = conn.request(post_form("/console/signin", b"&" * 499))  # 500 fields
        assert status == 403 and b"CSRF_REFUSED" in body  # read, then refused for what it lacks


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/api/job/result/nojob123 HTTP/1.1\r\n\r\n",
        b"GET /v1/api/job/result/nojob123 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /v1/api/job/result/nojob123 HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
    ],
    ids=["http-1.1-without-host", "two-hosts", "http-1.0-with-two-hosts"],
)
def test_a_request_without_one_host_header_is_a_400(live: tuple[LiveServer, str], request_bytes: bytes) -> None:
    server, _ = live
    with Connection(server) as conn:
        status, headers, body = conn.request(request_bytes)
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(body) == {
        "error": {
            "code": "BAD_REQUEST",
            "message": "a request must carry exactly one Host header (only HTTP/1.0 may leave it out)",
        }
    }


def test_http_1_0_without_host_is_still_served(live: tuple[LiveServer, str]) -> None:
    server, token = live
    with Connection(server) as conn:
        request = f"GET /v1/api/job/result/nojob123 HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
        status, _, body = conn.request(request.encode())
    assert status == 404 and json.loads(body)["error"]["code"] == "JOB_NOT_FOUND"


@pytest.mark.parametrize("one_byte_at_a_time", [False, True], ids=["one-read", "byte-by-byte"])
def test_the_protocol_refuses_a_missing_host_however_it_arrives(one_byte_at_a_time: bool) -> None:
    answer = serve_bytes(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", one_byte_at_a_time=one_byte_at_a_time)
    status, body = status_and_body(answer)
    assert status == 400 and json.loads(body)["error"]["code"] == "BAD_REQUEST"
    assert answer.count(b"HTTP/1.1 ") == 1
    served = serve_bytes(b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello")
    assert status_and_body(served) == (200, b'{"got": 5}')
