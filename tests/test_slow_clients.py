"""Slow and vanishing clients against a real `segport serve` over real sockets (loopback only, bounded loops,
stopped by PID): partial headers and short bodies are cut off with a 408, a client that goes away is a quiet
event, and thousands of held connections are bounded by ``max_connections`` (docs/limits.md)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT, SEGMENT, LiveServer, children, start_server, stop_server

READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 60
EXPORT_PATH = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, seeded_template: tuple[Path, tuple[str, str, str]]
) -> Iterator[tuple[LiveServer, str, str]]:
    template, (token, _, admin_token) = seeded_template
    base = tmp_path_factory.mktemp("slow-clients")
    shutil.copytree(template, base / "data")
    env = {
        "SEGPORT_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "SEGPORT_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "SEGPORT_API_PROCESSES": "1",  # the cap is per API process: one process, one bound to count against
        "SEGPORT_KEEP_ALIVE_TIMEOUT_S": "2",
    }
    server = start_server(base / "data", base / "server.log", env=env)
    try:
        yield server, token, admin_token
    finally:
        stop_server(server)
    log = (base / "server.log").read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def connect(server: LiveServer) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_all(sock: socket.socket, limit_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``limit_s`` passes)."""
    sock.settimeout(limit_s)
    chunks = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def error_of(answer: bytes) -> tuple[int, dict, dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), json.loads(body), headers


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def still_serves(server: LiveServer, token: str) -> None:
    r = httpx.get(f"{server.base_url}/v1/api/job/result/nojob123", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "JOB_NOT_FOUND"


@pytest.mark.parametrize(
    "partial",
    [b"", b"GET /v1/api/job/result/x HTTP/1.1\r\n", b"GET /v1/api/job/result/x HTTP/1.1\r\nHost: a\r\nX-Slow: "],
    ids=["nothing", "request-line", "half-a-header"],
)
def test_partial_request_headers_are_cut_off_with_a_408(live: tuple[LiveServer, str, str], partial: bytes) -> None:
    server, token, _ = live
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        answer = read_all(sock)
        elapsed = time.monotonic() - started
    status, body, headers = error_of(answer)
    assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT"
    assert headers["connection"] == "close"
    assert READ_TIMEOUT_S * 0.8 <= elapsed < READ_TIMEOUT_S + 3
    still_serves(server, token)


def test_headers_trickled_one_byte_at_a_time_are_cut_off_too(live: tuple[LiveServer, str, str]) -> None:
    server, _, _ = live
    request = b"GET /v1/api/job/result/x HTTP/1.1\r\nHost: a\r\nX-Padding: " + b"x" * 200
    with connect(server) as sock:
        started = time.monotonic()
        closed = False
        for byte in request:  # ~0.05 s per byte: the deadline is for all of the headers, not per byte
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - started > READ_TIMEOUT_S + 3:
                break
        answer = b"" if closed else read_all(sock, 3)
    assert closed or error_of(answer)[0] == 408
    assert time.monotonic() - started < READ_TIMEOUT_S + 4


def test_a_body_shorter_than_its_content_length_gets_a_408(live: tuple[LiveServer, str, str]) -> None:
    server, token, _ = live
    body = b'{"properties": []}'
    head = (
        f"POST {EXPORT_PATH} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 50}\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(head + body)
        answer = read_all(sock)
        elapsed = time.monotonic() - started
    status, error, headers = error_of(answer)
    assert status == 408 and error["error"]["code"] == "REQUEST_TIMEOUT", answer
    assert "did not arrive within 1 s" in error["error"]["message"]
    assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
    assert elapsed < READ_TIMEOUT_S + 3


def test_a_body_sent_one_byte_every_so_often_cannot_hold_a_request(live: tuple[LiveServer, str, str]) -> None:
    server, token, _ = live
    body = b'{"properties": ["usr_gender"], "fileFormat": "csv"}'
    head = (
        f"POST {EXPORT_PATH} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for byte in body:  # each read comes well within the timeout; the whole body does not
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)
            if time.monotonic() - started > READ_TIMEOUT_S + 3:
                break
        answer = read_all(sock, 3)
    assert error_of(answer)[0] == 408
    assert time.monotonic() - started < READ_TIMEOUT_S + 5


def test_a_client_that_disconnects_mid_body_is_a_quiet_event(live: tuple[LiveServer, str, str]) -> None:
    server, token, admin_token = live
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(
                (
                    f"POST {EXPORT_PATH} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n"
                    'Content-Length: 1000\r\n\r\n{"prop'
                ).encode()
            )
            time.sleep(0.1)
    with connect(server) as sock:  # and one that goes away while uploading a users file to the admin API
        sock.sendall(
            (
                f"POST /admin/v1/projects/{PROJECT}/users/import?filename=u.csv HTTP/1.1\r\nHost: a\r\n"
                f"Authorization: Bearer {admin_token}\r\nContent-Length: 100000\r\n\r\nid_$basic_userId\nC1\n"
            ).encode()
        )
        time.sleep(0.3)
    time.sleep(0.5)
    still_serves(server, token)
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log and "ERROR" not in log, log[-3000:]


def test_thousands_of_held_connections_are_bounded(live: tuple[LiveServer, str, str]) -> None:
    server, token, _ = live
    (api,) = children(server)["api"]  # the one API process (the supervisor holds no connections)
    pid = api.pid
    time.sleep(READ_TIMEOUT_S + 1)  # connections of earlier tests are gone
    baseline, rss_before = open_fds(pid), rss_kb(pid)
    held: list[socket.socket] = []
    answers: dict[str, int] = {"503": 0, "408": 0}
    try:
        for _ in range(1500):  # bounded: each is one descriptor here and, if accepted, one in the server
            sock = connect(server)
            sock.sendall(b"GET /v1/api/job/result/x HTTP/1.1\r\n")  # never finishes its headers
            held.append(sock)
        peak = open_fds(pid)
        waiting = []
        for sock in held:  # over the cap: a 503 at once; under it: held until the header deadline (408)
            sock.settimeout(0.01)
            try:
                answers[sock.recv(64)[9:12].decode()] += 1
            except TimeoutError:
                waiting.append(sock)
        peak = max(peak, open_fds(pid))
        assert answers["503"] >= 1000, answers
        assert peak <= baseline + MAX_CONNECTIONS + 20, (baseline, peak)
        assert rss_kb(pid) - rss_before < 64 * 1024  # memory stays bounded too (measured: a few MB)
        time.sleep(READ_TIMEOUT_S + 1.5)  # the held ones hit the header deadline
        for sock in waiting:  # every connection got its answer: none is held for ever
            sock.settimeout(10)
            answers[sock.recv(64)[9:12].decode()] += 1
        assert sum(answers.values()) == 1500 and answers["408"] >= 1, answers
        assert open_fds(pid) <= baseline + 5
        still_serves(server, token)
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * 200_000 + b"\r\n", b"X-A: b\r\n" * 20_000],
    ids=["one-huge-header", "twenty-thousand-headers"],
)
def test_request_headers_over_64_kb_are_a_431(live: tuple[LiveServer, str, str], headers: bytes) -> None:
    server, token, _ = live
    with connect(server) as sock:
        # the server may close while we still send: its answer is then already in our receive buffer
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n")
        answer = read_all(sock)
    status, body, _ = error_of(answer)
    assert status == 431 and body["error"]["code"] == "HEADERS_TOO_LARGE"
    still_serves(server, token)


def test_bytes_that_are_not_http_get_the_json_error_shape(live: tuple[LiveServer, str, str]) -> None:
    server, token, _ = live
    for garbage in (b"\x00\x01\x02 hello\r\n\r\n", b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(garbage)
            status, body, _ = error_of(read_all(sock))
        assert status == 400 and body["error"]["code"] == "BAD_REQUEST"
    still_serves(server, token)
