"""Bulkheads between the API processes and the engine process, on real `segport serve` processes.

An engine stopped with SIGSTOP makes member pages answer 503 ENGINE_UNAVAILABLE within the documented bound
(probe interval + probe deadline) while submits, polls, cancels and downloads keep answering, 100 pages in flight
or not; the supervisor kills and restarts an engine that stopped answering; a submit whose client went away
before the job was inserted creates no job. Every process stopped here is continued or killed by its PID."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from segport.store.queue import _RECHECK_S
from tests.conftest import PROJECT, LiveServer, auth, children, engine_pid, start_server, stop_server, wait_for
from tests.test_crash import job_result, make_data_dir, submit
from tests.test_processes import SPLIT

PROBE = {"SEGPORT_ENGINE_PROBE_INTERVAL_S": "1.0", "SEGPORT_ENGINE_PROBE_DEADLINE_S": "2.0"}
BOUND_S = 1.0 + 2.0  # docs/processes.md: a page answers 503 at most interval + deadline after the engine stopped
SLACK_S = 4.0  # a shared 2-core CI machine scheduling 100 requests and four processes at once
PAGE = f"/v1/api/projects/{PROJECT}/segment_profiles/seg_few/users"


@contextlib.contextmanager
def metadata_write_lock(data: Path) -> Iterator[None]:
    """Hold the lock the metadata store's writers queue on (segport/store/writelock.py) for the block."""
    fd = os.open(data / "meta.sqlite.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def stopped(pid: int, data: Path) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block, SIGCONT it after (if it still exists).

    It is stopped while this test holds the metadata write lock, so never in the middle of a metadata write: a
    process stopped there would hold SQLite's one write lock and every submit would wait for it to die (see
    docs/processes.md, "Bulkheads": the supervisor's kill ends that wait)."""
    with metadata_write_lock(data):
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def waits_for_lock(pid: int, lock: Path) -> bool:
    """Whether ``pid`` is blocked on a ``flock`` of ``lock``: /proc/locks lists a waiter as
    ``N: -> FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF``."""
    inode = str(lock.stat().st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:
            at = fields.index("->")
            if fields[at + 4] == str(pid) and fields[at + 5].rsplit(":", 1)[-1] == inode:
                return True
    return False


def timed_get(client: httpx.Client, url: str, token: str) -> tuple[float, httpx.Response | Exception]:
    began = time.monotonic()
    try:
        r: httpx.Response | Exception = client.get(url, headers=auth(token), params={"limit": 2})
    except httpx.HTTPError as exc:
        r = exc
    return time.monotonic() - began, r


def finished(server: LiveServer, token: str, job_id: str) -> dict:
    done = wait_for(
        lambda: (r := job_result(server, token, job_id))["stage"] in ("FINISH", "ERROR") and r, f"job {job_id}", 90
    )
    assert isinstance(done, dict) and done["stage"] == "FINISH", done
    return done


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    data, token, _ = make_data_dir(tmp_path, 2_000)
    # the supervisor leaves the stopped engine alone here: this test is about what the API processes answer
    server = start_server(data, tmp_path / "server.log", {**SPLIT, **PROBE, "SEGPORT_ENGINE_PROBE_FAILURES": "1000"})
    yield server, token
    stop_server(server)


def test_a_stopped_engine_makes_100_pages_answer_503_within_the_bound_while_submits_polls_downloads_answer(
    served: tuple[LiveServer, str],
) -> None:
    server, token = served
    first = submit(server, token, "seg_few", {"properties": ["id_$basic_userId"], "fileFormat": "json"})
    done = finished(server, token, first["id"])
    download = f"{server.base_url}/download?file={done['uris'][0]}"
    assert httpx.get(f"{server.base_url}{PAGE}", headers=auth(token), timeout=30).status_code == 200
    pid = int(wait_for(lambda: engine_pid(server), "the engine process"))  # type: ignore[call-overload]
    # one client for the 100 pages: making one costs tens of ms of CPU, which would be timed as the server's
    pager = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=200))
    with pager, stopped(pid, server.data_dir), ThreadPoolExecutor(100) as pool:
        sent = time.monotonic()
        pages = [pool.submit(timed_get, pager, f"{server.base_url}{PAGE}", token) for _ in range(100)]
        time.sleep(0.5)  # the pages are in flight: the engine's threads and connections are all asked for
        for bom, header in ((False, "key"), (True, "key"), (False, "name"), (True, "name")):
            began = time.monotonic()  # meanwhile everything that does not need the engine answers at once
            body = {"properties": ["id_$basic_userId"], "fileFormat": "csv", "bom": bom, "csvHeaderType": header}
            job = submit(server, token, "seg_few", body)
            assert job_result(server, token, job["id"])["stage"] == "NONE"
            cancel = httpx.post(f"{server.base_url}/v1/api/job/{job['id']}/cancel", headers=auth(token), timeout=10)
            assert cancel.status_code == 200, cancel.text
            got = httpx.get(download, headers=auth(token), timeout=10)
            assert got.status_code == 200 and got.content
            assert time.monotonic() - began < 10, "a submit, a poll, a cancel and a download took 10 s"
        answers = [p.result() for p in pages]
        elapsed = time.monotonic() - sent
    slow = [(round(t, 1), r) for t, r in answers if t > BOUND_S + SLACK_S]
    assert not slow, f"{len(slow)} pages took longer than {BOUND_S} s (+{SLACK_S} s slack): {slow[:3]}"
    for _, r in answers:
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "ENGINE_UNAVAILABLE"
        assert 1 <= int(r.headers["Retry-After"]) <= 10
    assert elapsed < BOUND_S + SLACK_S + 10
    # continued, the engine answers again (the API processes' watchers see it within a probe interval)
    wait_for(
        lambda: httpx.get(f"{server.base_url}{PAGE}", headers=auth(token), timeout=30).status_code == 200,
        "pages to answer again",
        30,
    )


def test_the_supervisor_kills_and_restarts_an_engine_that_stopped_answering(tmp_path: Path) -> None:
    data, token, _ = make_data_dir(tmp_path, 2_000)
    probe = {
        "SEGPORT_ENGINE_PROBE_INTERVAL_S": "0.5",
        "SEGPORT_ENGINE_PROBE_DEADLINE_S": "1.0",
        "SEGPORT_ENGINE_PROBE_FAILURES": "3",
    }
    server = start_server(data, tmp_path / "server.log", {**SPLIT, **probe})
    try:
        assert httpx.get(f"{server.base_url}{PAGE}", headers=auth(token), timeout=30).status_code == 200
        first = int(wait_for(lambda: engine_pid(server), "the engine process"))  # type: ignore[call-overload]
        with stopped(first, data):
            began = time.monotonic()
            wait_for(lambda: engine_pid(server) not in (0, first), "a new engine process", 60)
            restarted_s = time.monotonic() - began
            assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
        # 3 failed probes of 1 s, 0.5 s apart, then the backoff: well within 30 s even on a loaded machine
        assert restarted_s < 30, restarted_s
        wait_for(
            lambda: httpx.get(f"{server.base_url}{PAGE}", headers=auth(token), timeout=30).status_code == 200,
            "pages from the new engine",
            60,
        )
        job = submit(server, token, "seg_few", {"properties": ["id_$basic_userId"], "fileFormat": "json"})
        finished(server, token, job["id"])
        assert "stopped answering" in (tmp_path / "server.log").read_text()
    finally:
        stop_server(server)


def test_a_submit_whose_client_disconnected_before_the_job_was_inserted_creates_no_job(tmp_path: Path) -> None:
    data, token, _ = make_data_dir(tmp_path, 200)
    server = start_server(data, tmp_path / "server.log", {**SPLIT, "SEGPORT_API_PROCESSES": "1"})
    try:
        wait_for(lambda: engine_pid(server), "the engine process")
        port = int(server.base_url.rsplit(":", 1)[1])
        body = b'{"properties": ["id_$basic_userId"], "fileFormat": "csv"}'
        request = (
            f"POST /v1/api/projects/{PROJECT}/segment_profiles/seg_few/export_jobs HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        (api,) = children(server)["api"]
        # holding the metadata write lock keeps the submit waiting just before its insert, as a busy store (or a
        # busy machine) would
        with metadata_write_lock(data):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(request)
                wait_for(lambda: waits_for_lock(api.pid, data / "meta.sqlite.lock"), "the submit to wait for the lock")
                time.sleep(_RECHECK_S * 2)  # it waits long enough to ask again, once it has the lock, if we are there
                mine = client.getsockname()
            # the client has given up and gone, and the API process has seen it (it closed its end)
            wait_for(lambda: not any(c.raddr == mine for c in api.net_connections()), "the API process to see it")
        # a later submit in the same process queues behind the abandoned one: once it is answered, that one is done
        after = submit(server, token, "seg_few", {"properties": ["id_$basic_userId"], "fileFormat": "json"})
        with contextlib.closing(sqlite3.connect(data / "meta.sqlite")) as db:
            jobs = [row[0] for row in db.execute("SELECT id FROM jobs")]
        assert jobs == [after["id"]], f"the abandoned submit created a job: {jobs}"
    finally:
        stop_server(server)
