"""PostgreSQL restarted under a concurrent submit/poll load against a real `segport serve` (2 API processes and
the engine process, metadata and job queue on a real PostgreSQL 15 of the test's own).

While the metadata store is down every answer is a 503 METADATA_UNAVAILABLE with Retry-After (never a 500), each
process logs the outage once (no traceback per request), the service recovers by itself when the server is back,
and every job a submit accepted finishes."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import DataError

from segport.errors import MetadataUnavailable
from segport.roles.inline import build
from segport.settings import Settings
from segport.store.db import Database
from tests.conftest import COLUMNS, PROJECT, SEGMENT, auth, seed_project, start_server, stop_server
from tests.pg_support import PgCluster, missing_reason

CLIENTS = int(os.environ.get("SEGPORT_TEST_OUTAGE_CLIENTS", "60"))  # the 200 when the machine bears it
API_PROCESSES = 2
ENV = {
    "SEGPORT_API_PROCESSES": str(API_PROCESSES),
    "SEGPORT_DUCKDB_THREADS": "1",
    "SEGPORT_LEASE_S": "5",
    "SEGPORT_HEARTBEAT_S": "0.5",
    "SEGPORT_POLL_INTERVAL_S": "0.2",
    "SEGPORT_CLEANUP_INTERVAL_S": "0.5",
    "SEGPORT_MAX_QUEUED_JOBS_PER_PROJECT": "100000",
    "SEGPORT_RECOMPUTE_INTERVAL_S": "1",  # the daily recompute's loop runs through the outage too
}
# distinct export requests: each is a job of its own (an identical one is answered with the same job)
BODIES = [
    {"properties": list(props), "fileFormat": fmt}
    for n in (1, 2, 3)
    for props in itertools.combinations([c for c in COLUMNS if c != "id_$anonymous_user"], n)
    for fmt in ("csv", "json")
]


@pytest.fixture
def own_pg() -> Iterator[PgCluster]:
    """A PostgreSQL server of this test's own: it is stopped and started again."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Load:
    answers: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # (kind, status, code)
    wrong: list[str] = field(default_factory=list)  # answers that are neither a success nor a proper 503
    accepted: set[str] = field(default_factory=set)
    last: dict[str, float] = field(default_factory=dict)  # "ok"/"503": time.monotonic() of the latest answer

    def record(self, kind: str, r: httpx.Response) -> None:
        code = ""
        if r.status_code != 200:
            try:
                code = r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
            if r.status_code != 503 or code != "METADATA_UNAVAILABLE" or not r.headers.get("retry-after"):
                self.wrong.append(f"{kind}: {r.status_code} {r.headers.get('retry-after')!r} {r.text[:200]}")
        self.answers[(kind, r.status_code, code)] += 1
        self.last["ok" if r.status_code == 200 else "503"] = time.monotonic()


async def run_load(base: str, token: str, load: Load, stop: threading.Event) -> None:
    submit_url = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=auth(token), timeout=60, limits=limits) as http:

        async def one_client(i: int) -> None:
            for n in itertools.count(i):
                if stop.is_set():
                    return
                try:
                    r = await http.post(submit_url, json=BODIES[n % len(BODIES)])
                    load.record("submit", r)
                    if r.status_code == 200:
                        load.accepted.add(r.json()["id"])
                    if load.accepted:
                        job_id = sorted(load.accepted)[n % len(load.accepted)]
                        load.record("poll", await http.get(f"/v1/api/job/result/{job_id}"))
                except httpx.TransportError as exc:  # a connection reset after a 500, say
                    load.wrong.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)

        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))


@pytest.mark.parametrize("outage_s", [8.0])
def test_postgres_restart_under_load_is_503_then_recovers_by_itself(
    tmp_path: Path, own_pg: PgCluster, outage_s: float
) -> None:
    url = own_pg.new_store_url()
    data = tmp_path / "data"
    app = build(Settings(data_dir=data, metadata_url=url))
    try:
        seeded = seed_project(app, tmp_path)
    finally:
        app.close()
    log = tmp_path / "server.log"
    server = start_server(data, log, env={**ENV, "SEGPORT_METADATA_URL": url})
    load, stop = Load(), threading.Event()
    timeline: dict[str, float] = {}

    def outage() -> None:
        time.sleep(3)  # the load first runs against a healthy store
        timeline["down"] = time.monotonic()
        own_pg.pause("fast")
        time.sleep(outage_s)
        own_pg.resume()
        timeline["up"] = time.monotonic()
        # the load runs on until every answer has been a success for a while (or a deadline): recovery
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if time.monotonic() - load.last.get("503", 0) > 5:
                break
        stop.set()

    try:
        fault = threading.Thread(target=outage)
        fault.start()
        try:
            asyncio.run(run_load(server.base_url, seeded.token, load, stop))
        finally:
            stop.set()
            fault.join()

        assert not load.wrong, f"{len(load.wrong)} wrong answers, e.g. {load.wrong[:5]}; all: {load.answers}"
        unavailable = sum(n for (_, status, _), n in load.answers.items() if status == 503)
        assert unavailable > 0, f"the outage was not seen: {load.answers}"
        # recovered by itself: the last seconds of the load were all successes
        assert load.last["ok"] - load.last.get("503", 0) >= 5, (timeline, load.last)
        assert load.last["503"] < timeline["up"] + 30

        # no accepted job was lost: each one finishes
        with httpx.Client(base_url=server.base_url, headers=auth(seeded.token), timeout=60) as http:
            deadline = time.monotonic() + 180
            pending = set(load.accepted)
            while pending and time.monotonic() < deadline:
                for job_id in sorted(pending):
                    r = http.get(f"/v1/api/job/result/{job_id}")
                    assert r.status_code == 200, r.text  # not lost (a lost job would be 404 JOB_NOT_FOUND)
                    stage = r.json()["stage"]
                    assert stage != "ERROR", r.json()
                    if stage == "FINISH":
                        pending.discard(job_id)
                time.sleep(0.5)
            assert not pending, f"{len(pending)} of {len(load.accepted)} accepted jobs did not finish"
    finally:
        stop_server(server)

    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]
    outage_lines = [line for line in text.splitlines() if "segport.store: metadata store unavailable" in line]
    # once per outage in each process that noticed it (the API processes and the engine process), not per request
    assert 1 <= len(outage_lines) <= API_PROCESSES + 1, outage_lines
    assert sum("reachable again" in line for line in text.splitlines()) == len(outage_lines), text[-3000:]
    print(f"{CLIENTS} clients, {outage_s} s outage: {dict(load.answers)}; {len(load.accepted)} jobs accepted")


def test_a_store_nobody_listens_on_is_unavailable_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port with no server behind it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", pool_size=2)
    try:
        with caplog.at_level("WARNING", logger="segport.store"):
            for _ in range(20):
                with pytest.raises(MetadataUnavailable) as exc, db.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                assert exc.value.status == 503 and exc.value.headers == {"Retry-After": "5"}
        assert [r.message.split(" (")[0] for r in caplog.records] == ["metadata store unavailable"]
        assert db.outage.count == 1
    finally:
        db.close()


def test_a_failing_statement_is_not_an_outage(pg_url: str) -> None:
    db = Database(pg_url, pool_size=2)
    try:
        with pytest.raises(DataError), db.connect() as conn:
            conn.exec_driver_sql("SELECT 1 / 0")
        assert db.outage.since is None and db.outage.count == 0
    finally:
        db.close()
