"""Limits: per-project caps (429 + Retry-After), identical requests answered by the same job, cancel, and
bounds on bodies, lists and strings."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.domain.jobs import Stage
from segport.settings import Settings
from segport.worker import Worker
from tests.conftest import OTHER_PROJECT, PROJECT, SEGMENT, USERS, Seeded, auth, write_users_csv

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
OTHER_EXPORT = f"/v1/api/projects/{OTHER_PROJECT}/segment_profiles/{SEGMENT}/export_jobs"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        serve_workers=False,
        heartbeat_s=0.1,
        lease_s=5,
        poll_interval_s=0.1,
        max_queued_jobs_per_project=2,
        max_running_jobs_per_project=1,
        retry_after_s=7,
    )


def submit(client: TestClient, token: str, body: dict, url: str = EXPORT) -> dict:
    r = client.post(url, headers=auth(token), json=body)
    assert r.status_code == 200, r.text
    return r.json()


def result(client: TestClient, token: str, job_id: str) -> dict:
    r = client.get(f"/v1/api/job/result/{job_id}", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


# --- caps ------------------------------------------------------------------------------------------
def test_queued_cap_answers_429_with_retry_after(client: TestClient, seeded: Seeded) -> None:
    submit(client, seeded.token, {"properties": ["usr_gender"]})
    submit(client, seeded.token, {"properties": ["usr_city"]})
    r = client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_age"]})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "TOO_MANY_JOBS"
    assert "limit 2" in r.json()["error"]["message"]
    # the cap is per project, and an identical request still gets its job
    submit(client, seeded.other_token, {"properties": ["usr_age"]}, OTHER_EXPORT)
    assert client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_city"]}).status_code == 200


def test_queued_cap_frees_up_when_jobs_run(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    submit(client, seeded.token, {"properties": ["usr_gender"]})
    submit(client, seeded.token, {"properties": ["usr_city"]})
    assert client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_age"]}).status_code == 429
    worker.run_until_empty()
    submit(client, seeded.token, {"properties": ["usr_age"]})


def test_running_cap_lets_other_projects_jobs_go_first(app: App, client: TestClient, seeded: Seeded) -> None:
    first = submit(client, seeded.token, {"properties": ["usr_gender"]})
    second = submit(client, seeded.token, {"properties": ["usr_city"]})
    other = submit(client, seeded.other_token, {"properties": ["usr_city"]}, OTHER_EXPORT)
    claim = lambda: app.queue.claim("w", 30, max_running_per_project=1)  # noqa: E731
    assert claim().id == first["id"]  # type: ignore[union-attr]
    assert claim().id == other["id"]  # type: ignore[union-attr]  # the project's second job waits
    assert claim() is None
    assert result(client, seeded.token, second["id"])["stage"] == "NONE"


# --- identical requests ----------------------------------------------------------------------------
def test_identical_request_returns_the_queued_job(client: TestClient, seeded: Seeded) -> None:
    a = submit(client, seeded.token, {"properties": ["ids_$basic_userId", "usr_gender"], "fileFormat": "csv"})
    # same request spelled differently: ids_ vs id_, default format written out or not, key case
    b = submit(client, seeded.token, {"properties": ["id_$basic_userId", "usr_gender"]})
    c = submit(client, seeded.token, {"properties": ["id_$basic_userId", "usr_gender"], "fileformat": "CSV"})
    assert a == b == c


def test_identical_request_returns_the_finished_job_until_data_changes(
    app: App, client: TestClient, worker: Worker, seeded: Seeded, tmp_path: Path
) -> None:
    body = {"properties": ["usr_gender"]}
    first = submit(client, seeded.token, body)
    worker.run_until_empty()
    assert result(client, seeded.token, first["id"])["stage"] == "FINISH"
    assert submit(client, seeded.token, body) == first
    # other options, another project: other jobs
    assert submit(client, seeded.token, {**body, "fileFormat": "json"})["id"] != first["id"]
    assert submit(client, seeded.other_token, body, OTHER_EXPORT)["id"] != first["id"]
    worker.run_until_empty()
    # a new data snapshot: a new job
    app.data.import_users(PROJECT, write_users_csv(tmp_path / "more.csv", [{**USERS[0], "id_$basic_userId": "C100"}]))
    fresh = submit(client, seeded.token, body)
    assert fresh["id"] != first["id"]


def test_cancelled_or_expired_job_is_not_reused(app: App, client: TestClient, worker: Worker, seeded: Seeded) -> None:
    body = {"properties": ["usr_gender"]}
    first = submit(client, seeded.token, body)
    client.post(f"/v1/api/job/{first['id']}/cancel", headers=auth(seeded.token))
    second = submit(client, seeded.token, body)
    assert second["id"] != first["id"]
    worker.run_until_empty()
    assert app.exports.expire(now=app.queue.get(second["id"]).expires_at + timedelta(seconds=1)) >= 1  # type: ignore[operator]
    third = submit(client, seeded.token, body)
    assert third["id"] not in (first["id"], second["id"])


# --- cancel ----------------------------------------------------------------------------------------
def test_cancel_a_queued_job(app: App, client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, {"properties": ["usr_gender"]})
    r = client.post(f"/v1/api/job/{job['id']}/cancel", headers=auth(seeded.token))
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "ERROR"
    assert r.json()["error"]["code"] == "JOB_CANCELLED"
    assert r.json()["uris"] == []
    assert worker.run_until_empty() == 0
    assert result(client, seeded.token, job["id"])["error"]["code"] == "JOB_CANCELLED"
    again = client.post(f"/v1/api/job/{job['id']}/cancel", headers=auth(seeded.token))
    assert again.status_code == 200 and again.json()["stage"] == "ERROR"


def test_cancel_a_finished_job_is_409_and_keeps_its_file(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, {"properties": ["usr_gender"]})
    worker.run_until_empty()
    r = client.post(f"/v1/api/job/{job['id']}/cancel", headers=auth(seeded.token))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "CONFLICT"
    uri = result(client, seeded.token, job["id"])["uris"][0]
    assert client.get("/download?file=" + uri, headers=auth(seeded.token)).status_code == 200


def test_cancel_another_projects_job_is_404(client: TestClient, seeded: Seeded) -> None:
    job = submit(client, seeded.token, {"properties": ["usr_gender"]})
    r = client.post(f"/v1/api/job/{job['id']}/cancel", headers=auth(seeded.other_token))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "JOB_NOT_FOUND"
    assert result(client, seeded.token, job["id"])["stage"] == "NONE"


@contextmanager
def export_being_written(app: App, client: TestClient) -> Iterator[tuple[str, str]]:
    """A demo export of 300k users, JSON gzip, run by a worker: yields (token, job id) while its file is being
    written; afterwards waits for the staging folder to be empty again, then stops the worker.

    The pump that compresses the COPY's output into the file (segport/engine/duckdb/fifo.py) is held after its
    first write until the block ends: the COPY, its FIFO full, is still running when the block acts on it, and the
    job cannot finish meanwhile, however fast the machine."""
    from segport.demo import build_demo

    token = build_demo(app, users=300_000)  # WlGk4Daj gets the demo catalogue and segment too
    body = {
        "properties": [
            "id_$basic_userId",
            "id_$anonymous_user",
            "usr_name",
            "usr_city",
            "usr_total_spend",
            "tag_rfm",
            "tag_channel",
        ],
        "fileFormat": "json",
        "compression": "gzip",
    }
    job = submit(client, token, body, f"/v1/api/projects/{PROJECT}/segment_profiles/seg_51activity/export_jobs")
    staging = app.settings.data_dir / "results" / ".staging"
    wrote, release = threading.Event(), threading.Event()
    real_write = os.write

    def write_then_hold(fd: int, data: bytes) -> int:
        written = real_write(fd, data)
        if threading.current_thread().name.startswith("segport-fifo"):  # the pump, writing the result file
            wrote.set()
            release.wait(60)
        return written

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "write", write_then_hold)
        w = Worker(app, threads=1)
        w.start()
        try:
            assert wrote.wait(30), "the export never started writing"
            assert any(p.is_file() and p.stat().st_size for p in staging.rglob("*"))  # a partial file
            try:
                yield token, job["id"]
            finally:
                release.set()  # the COPY goes on, and meets what the block did
            wait_until(lambda: not any(staging.iterdir()), 10, "the partial file was not removed", poll_s=0.02)
        finally:
            release.set()
            w.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float, failure: str, *, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(poll_s)


def test_cancel_a_running_export_stops_it_and_removes_its_partial_file(
    app: App, client: TestClient, seeded: Seeded, tmp_path: Path
) -> None:
    with export_being_written(app, client) as (token, job_id):
        assert result(client, token, job_id)["stage"] == "RUNNING"
        r = client.post(f"/v1/api/job/{job_id}/cancel", headers=auth(token))
        assert r.status_code == 200 and r.json()["error"]["code"] == "JOB_CANCELLED"
    final = result(client, token, job_id)
    assert final["stage"] == "ERROR" and final["uris"] == []
    assert not (app.settings.data_dir / "results" / final["name"]).exists()


# --- bounds ----------------------------------------------------------------------------------------
def test_body_over_the_size_limit_is_413(client: TestClient, seeded: Seeded) -> None:
    big = '{"properties": ["' + "x" * 2_000_000 + '"]}'
    r = client.post(EXPORT, headers=auth(seeded.token), content=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_list_and_string_lengths_are_bounded(client: TestClient, seeded: Seeded) -> None:
    r = client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_gender"] * 1001})
    assert r.status_code == 400
    r = client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_" + "x" * 10_000]})
    assert r.status_code == 400
    assert len(r.text) < 1000  # the long value is not echoed back
    r = client.post(EXPORT, headers=auth(seeded.token), json={"properties": [f"usr_k{i}" for i in range(61)]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "TOO_MANY_PROPERTIES"


def test_overlong_paths_and_queries_are_414(client: TestClient, seeded: Seeded) -> None:
    r = client.get("/v1/api/job/result/" + "a" * 600, headers=auth(seeded.token))
    assert r.status_code == 414 and r.json()["error"]["code"] == "URI_TOO_LONG"
    r = client.get("/download?file=" + "a" * 9000, headers=auth(seeded.token))
    assert r.status_code == 414
    r = client.post(f"/v1/api/projects/{PROJECT}/segment_profiles/{'s' * 3000}/export_jobs", headers=auth(seeded.token))
    assert r.status_code == 414


def test_concurrent_identical_submits_make_one_job_and_the_cap_never_overshoots(app: App, seeded: Seeded) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from segport.domain.jobs import TargetKind
    from segport.errors import TooManyJobs
    from segport.services.exports import ExportRequest

    who = app.meta.authenticate(seeded.token)

    def go(props: list[str]) -> str:
        try:
            return app.exports.submit(who, PROJECT, TargetKind.SEGMENT, SEGMENT, ExportRequest(props)).id
        except TooManyJobs:
            return "429"

    with ThreadPoolExecutor(16) as pool:
        same = list(pool.map(go, [["usr_gender"]] * 16))
    assert len(set(same)) == 1 and "429" not in same
    keys = ["usr_city", "usr_age", "tag_rfm", "usr_score", "usr_since", "id_$basic_userId"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(go, [[k] for k in keys]))
    assert answers.count("429") == len(keys) - 1  # the cap is 2 and one job was already queued
    assert app.queue.count_active(PROJECT) == {Stage.NONE: 2}


def test_cancel_seen_by_the_heartbeat_interrupts_the_export(app: App, client: TestClient, seeded: Seeded) -> None:
    """A cancel recorded by another process (straight in the queue) reaches the worker through its heartbeat."""
    with export_being_written(app, client) as (token, job_id):
        app.queue.cancel(job_id, error_ttl_s=60, message="cancelled elsewhere")  # not through this service
    final = result(client, token, job_id)
    assert final["stage"] == "ERROR" and final["error"]["message"] == "cancelled elsewhere"
    assert not (app.settings.data_dir / "results" / final["name"]).exists()
