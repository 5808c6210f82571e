"""The engine's memory budget (segport/engine/admission.py): concurrent exports and member pages under a small
budget all succeed or get a clean 503 with a code and ``Retry-After`` (never a 500, never an export failed for
memory); an export that runs out of memory is queued again like a crashed one; running out of memory, of file
descriptors or of disk answers a documented code."""

from __future__ import annotations

import errno
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import httpx
import pytest

from segport.domain.jobs import Stage, TargetKind
from segport.engine.admission import Admission, Budget, Kind, MiB
from segport.errors import (
    EngineOverloaded,
    OutOfMemory,
    StorageFull,
    TooManyOpenFiles,
    exhaustion_of,
)
from segport.roles.inline import build, create_app
from segport.services.exports import ExportRequest
from segport.settings import Settings
from segport.worker import Worker
from tests.conftest import PROJECT, auth, start_server, stop_server, wait_for
from tests.test_crash import FAST, job_result, make_data_dir, submit

USERS = 150_000
# the pair of exports: three properties as JSON, and the same plus one more as CSV with display names
JSON_EXPORT = {"properties": ["usr_name", "usr_gender", "usr_city"], "fileFormat": "json"}
CSV_EXPORT = {
    "properties": ["usr_name", "usr_gender", "usr_city", "tag_rfm"],
    "fileFormat": "csv",
    "csvHeaderType": "name",
}
SMALL = {
    **FAST,
    "SEGPORT_DUCKDB_THREADS": "0",
    "SEGPORT_MAX_RUNNING_JOBS": "2",
    "SEGPORT_API_PROCESSES": "1",
    "SEGPORT_ENGINE_MEMORY_BYTES": str(80 * MiB),  # DuckDB's limit 64 MiB: two exports and pages fill it
    "SEGPORT_ENGINE_QUEUE_MAX": "6",
    "SEGPORT_ENGINE_QUEUE_WAIT_S": "5",
}


def _page(base: str, token: str, offset: int) -> httpx.Response:
    return httpx.get(
        f"{base}/v1/api/projects/{PROJECT}/segment_profiles/seg_all/users",
        headers=auth(token),
        params={"limit": 1000, "offset": offset},
        timeout=60,
    )


def test_concurrent_exports_and_pages_under_a_small_budget_finish_or_get_a_clean_503(tmp_path: Path) -> None:
    data, token, _ = make_data_dir(tmp_path, USERS)
    server = start_server(data, tmp_path / "server.log", SMALL)
    try:
        jobs = [submit(server, token, "seg_all", JSON_EXPORT), submit(server, token, "seg_all", CSV_EXPORT)]
        with ThreadPoolExecutor(20) as pool:
            pages = list(pool.map(lambda i: _page(server.base_url, token, i * 1000), range(40)))
        done = [
            wait_for(
                lambda j=j: (r := job_result(server, token, j["id"]))["stage"] in ("FINISH", "ERROR") and r,
                "the export to end",
                240,
            )
            for j in jobs
        ]
    finally:
        stop_server(server)
    statuses = [p.status_code for p in pages]
    for p in pages:
        if p.status_code != 200:  # refused cleanly: a code the client knows, and when to come back
            assert p.status_code == 503, (p.status_code, p.text)
            # the engine's queue is full (ENGINE_OVERLOADED), or this API process's own bound on calls in
            # flight to the engine is (ENGINE_UNAVAILABLE, docs/processes.md "Bulkheads")
            assert p.json()["error"]["code"] in ("ENGINE_OVERLOADED", "ENGINE_UNAVAILABLE"), p.text
            assert int(p.headers["retry-after"]) >= 1
        else:
            assert len(p.json()["values"]) == 1000 and p.json()["totalCount"] == USERS
    assert statuses.count(200) >= 10, statuses  # the budget queues pages; it refuses only past its queue
    for result in done:
        assert isinstance(result, dict) and result["stage"] == "FINISH", result
        assert result["rows"] == USERS


def test_an_export_that_runs_out_of_memory_is_queued_again_and_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, token, _ = make_data_dir(tmp_path, 2_000)
    counter = tmp_path / "faults"
    counter.write_text("1", encoding="utf-8")  # the first attempt runs out of memory, the second does not
    server = start_server(
        data,
        tmp_path / "server.log",
        {**FAST, "SEGPORT_TEST_FAULT": "export-oom", "SEGPORT_TEST_FAULT_FILE": str(counter)},
    )
    try:
        job = submit(server, token, "seg_all", JSON_EXPORT)
        done = wait_for(
            lambda: (r := job_result(server, token, job["id"]))["stage"] in ("FINISH", "ERROR") and r,
            "the export to end",
            120,
        )
    finally:
        stop_server(server)
    assert isinstance(done, dict) and done["stage"] == "FINISH", done
    assert done["attempts"] == 2 and done["rows"] == 2_000
    assert counter.read_text(encoding="utf-8") == "0"


def test_an_export_out_of_memory_at_every_attempt_ends_out_of_memory_not_export_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _token, _ = make_data_dir(tmp_path, 500)
    counter = tmp_path / "faults"
    counter.write_text("10", encoding="utf-8")
    monkeypatch.setenv("SEGPORT_TEST_FAULT", "export-oom")
    monkeypatch.setenv("SEGPORT_TEST_FAULT_FILE", str(counter))
    monkeypatch.setattr("segport.services.runner.RETRY_PAUSE_S", 0.01)
    app = build(Settings(data_dir=data, max_attempts=3))
    try:
        who = app.meta.authenticate(app.meta.create_token([PROJECT])[1])
        job = app.exports.submit(who, PROJECT, TargetKind.SEGMENT, "seg_all", ExportRequest(["usr_name"]))
        Worker(app, threads=1).run_until_empty()
        row = app.queue.get(job.id)
    finally:
        app.close()
    assert (row.stage, row.error_code, row.attempts) == (Stage.ERROR.value, "OUT_OF_MEMORY", 3)
    assert counter.read_text(encoding="utf-8") == "7"


# --- the admission itself -------------------------------------------------------------------------
def test_reads_past_the_queue_are_refused_with_engine_overloaded_and_retry_after() -> None:
    budget = Budget.of(80 * MiB, max_running_jobs=2)
    admission = Admission(budget, max_waiting_reads=1, read_wait_s=5, retry_after_s=3)
    held = threading.Event()
    release = threading.Event()
    reads_at_once = budget.reads_bytes // budget.read_bytes

    def hold() -> None:
        with admission.admit(Kind.READ):
            held.set()
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(reads_at_once)]
    for t in holders:
        t.start()
    assert held.wait(5)
    # every holder is in (a slow machine may not have run them all yet): the pool is full, nobody waits
    wait_for(lambda: admission.reads.used == reads_at_once * budget.read_bytes, "the reads pool to fill", 10)
    waiter_done = threading.Event()

    def wait_in_line() -> None:
        with admission.admit(Kind.READ):
            waiter_done.set()

    waiter = threading.Thread(target=wait_in_line)
    waiter.start()
    wait_for(lambda: len(admission.reads._line) == 1, "the waiter to queue", 10)  # the one place in line is taken
    with pytest.raises(EngineOverloaded) as refused, admission.admit(Kind.READ):
        pass
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "3"}
    release.set()
    for t in [*holders, waiter]:
        t.join(10)
    assert waiter_done.is_set()  # the one that waited got its turn


def test_a_read_that_waits_past_its_bound_is_refused_and_exports_wait_their_turn() -> None:
    budget = Budget.of(80 * MiB, max_running_jobs=1)
    admission = Admission(budget, max_waiting_reads=10, read_wait_s=0.2)
    with admission.admit(Kind.EXPORT):  # one export takes the whole work pool
        started = time.monotonic()
        second: list[float] = []
        t = threading.Thread(target=lambda: admission.admit(Kind.EXPORT).__enter__() or second.append(time.monotonic()))
        t.start()
        wait_for(lambda: len(admission.work._line) == 1, "the second export to queue", 10)  # it got that far
        time.sleep(0.3)
        assert second == []  # the second export waits (it is not refused)
        with admission.admit(Kind.READ):  # reads have their own pool: never behind exports
            pass
    t.join(5)
    assert second and second[0] - started >= 0.3
    holders = [admission.admit(Kind.READ) for _ in range(budget.reads_bytes // budget.read_bytes)]
    for h in holders:
        h.__enter__()
    with pytest.raises(EngineOverloaded), admission.admit(Kind.READ):
        pass
    for h in holders:
        h.__exit__(None, None, None)


# --- resources that run out, and their codes -------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "cls", "status"),
    [
        (OSError(errno.EMFILE, os.strerror(errno.EMFILE)), TooManyOpenFiles, 503),
        (OSError(errno.ENFILE, os.strerror(errno.ENFILE)), TooManyOpenFiles, 503),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), StorageFull, 507),
        (MemoryError(), OutOfMemory, 503),
        (duckdb.OutOfMemoryException("Out of Memory Error: failed to pin block of size 256.0 KiB"), OutOfMemory, 503),
        (duckdb.IOException("IO Error: Cannot open file: Too many open files"), TooManyOpenFiles, 503),
        (duckdb.IOException("IO Error: Could not write file: No space left on device"), StorageFull, 507),
    ],
)
def test_exhaustion_maps_to_its_code(exc: BaseException, cls: type, status: int) -> None:
    wrapped = RuntimeError("while doing something")
    wrapped.__cause__ = exc
    for seen in (exc, wrapped):
        found = exhaustion_of(seen)
        assert isinstance(found, cls) and found.status == status


def test_real_sqlite_full_disk_maps_to_storage_full(tmp_path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(tmp_path / "tiny.sqlite")
    con.execute("CREATE TABLE t (x BLOB)")
    con.execute("PRAGMA max_page_count = 3")  # a disk of three pages: the next insert finds it full
    with pytest.raises(sqlite3.OperationalError) as full:
        con.execute("INSERT INTO t VALUES (zeroblob(100000))")
    con.close()
    found = exhaustion_of(full.value)
    assert isinstance(found, StorageFull) and found.status == 507


def test_a_request_that_meets_emfile_or_enospc_answers_its_code_not_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    data, token, _ = make_data_dir(tmp_path, 50)
    app = build(Settings(data_dir=data))
    try:
        with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as tc:
            url = f"/v1/api/projects/{PROJECT}/segment_profiles/seg_all/users"
            for err, status, code in (
                (errno.EMFILE, 503, "TOO_MANY_OPEN_FILES"),
                (errno.ENOSPC, 507, "STORAGE_FULL"),
            ):

                def fail(*_a: object, _err: int = err, **_k: object) -> None:
                    raise OSError(_err, os.strerror(_err))

                with monkeypatch.context() as m:
                    m.setattr(app.engine.engine, "members_page", fail)  # type: ignore[attr-defined]
                    r = tc.get(url, headers=auth(token), params={"limit": 10})
                assert r.status_code == status, r.text
                assert r.json()["error"]["code"] == code
                if status == 503:
                    assert int(r.headers["retry-after"]) >= 1
            assert tc.get(url, headers=auth(token), params={"limit": 10}).status_code == 200
    finally:
        app.close()
