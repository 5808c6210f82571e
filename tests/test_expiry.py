"""Expiry: results are kept result_ttl_s, then the janitor deletes them and the API answers 410 JOB_EXPIRED."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.settings import Settings
from segport.store.models import JobRow, utcnow
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, Seeded, auth

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
TTL_S = 3600  # a result never expires while a test looks at it: tests that need expiry move expires_at


@pytest.fixture
def ttl_s() -> int:
    return TTL_S


def expire_now(app: App, job_id: str) -> None:
    """Move the job's expiry a second into the past: what a wait of result_ttl_s would do, without the wait
    (a 1 s TTL let a loaded machine expire results before the test had seen them finish)."""
    with app.db.write() as s:
        s.get(JobRow, job_id).expires_at = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]


@pytest.fixture
def settings(tmp_path: Path, ttl_s: int) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        serve_workers=False,
        heartbeat_s=0.1,
        lease_s=5,
        poll_interval_s=0.1,
        result_ttl_s=ttl_s,
        cleanup_interval_s=0.1,
    )


def finished_job(client: TestClient, worker: Worker, token: str, body: dict | None = None) -> dict:
    job = client.post(EXPORT, headers=auth(token), json=body or {"properties": ["usr_gender"]}).json()
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(token)).json()
    assert result["stage"] == "FINISH", result
    return result


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_job_result_shows_expires_at_ttl_after_finish(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    result = finished_job(client, worker, seeded.token)
    assert parse_iso(result["expiresAt"]) - parse_iso(result["finishedAt"]) == timedelta(seconds=TTL_S)


def test_janitor_deletes_expired_results_and_api_answers_410(
    app: App, client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    result = finished_job(client, worker, seeded.token)
    folder = app.settings.data_dir / "results" / result["name"]
    assert folder.is_dir()
    expire_now(app, result["id"])
    janitor = Worker(app, threads=1)
    janitor.start()  # its janitor runs every cleanup_interval_s
    try:
        deadline = time.monotonic() + 10
        while folder.exists():
            assert time.monotonic() < deadline, "the janitor did not delete the expired result"
            time.sleep(0.05)
    finally:
        janitor.stop()
    assert app.queue.get(result["id"]).stage == "EXPIRED"
    r = client.get(f"/v1/api/job/result/{result['id']}", headers=auth(seeded.token))
    assert r.status_code == 410
    assert r.json()["error"]["code"] == "JOB_EXPIRED"
    expired_at = app.queue.get(result["id"]).expires_at
    assert expired_at is not None
    assert expired_at.isoformat(timespec="milliseconds").replace("+00:00", "Z") in r.json()["error"]["message"]
    d = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token))
    assert d.status_code == 410
    assert d.json()["error"]["code"] == "JOB_EXPIRED"


def test_past_expiry_is_410_even_before_the_janitor_runs(
    app: App, client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    result = finished_job(client, worker, seeded.token)
    expire_now(app, result["id"])
    assert (app.settings.data_dir / "results" / result["name"]).is_dir()  # not deleted yet
    assert client.get(f"/v1/api/job/result/{result['id']}", headers=auth(seeded.token)).status_code == 410
    assert client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token)).status_code == 410
    assert app.exports.expire() == 1
    assert not (app.settings.data_dir / "results" / result["name"]).exists()


def test_expired_job_of_another_project_is_still_404(
    app: App, client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    result = finished_job(client, worker, seeded.token)
    app.exports.expire(now=parse_iso(result["expiresAt"]) + timedelta(seconds=1))
    r = client.get(f"/v1/api/job/result/{result['id']}", headers=auth(seeded.other_token))
    assert r.status_code == 404


def test_cleanup_removes_files_no_job_owns(app: App, client: TestClient, worker: Worker, seeded: Seeded) -> None:
    kept = finished_job(client, worker, seeded.token, {"properties": ["usr_city"]})
    root = app.settings.data_dir / "results"
    orphan = root / "DES-202601010000-1234"  # a crash between publish and FINISH, job since failed or gone
    orphan.mkdir()
    (orphan / "x_UserList.csv").write_text("partial")
    stale = root / ".staging" / "deadbeef-1"  # a killed worker's attempt
    stale.mkdir()
    (stale / "x_UserList.csv").write_text("partial")
    assert app.exports.cleanup() == {"expired": 0, "staging": 1, "orphans": 1}
    assert not orphan.exists() and not stale.exists()
    assert (root / kept["name"]).is_dir()
