"""Leases in-process: a job whose worker died is run again, up to max_attempts, then ERROR with a clear
message; a worker that lost its lease never publishes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.settings import Settings
from segport.store.queue import LeaseLost
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, Seeded, auth
from tests.expected import expected_csv

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
DEAD_LEASE_S = 0.05  # a worker that claims and then dies: its lease lapses almost at once


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", serve_workers=False, heartbeat_s=0.1, lease_s=5, max_attempts=3)


def submit(client: TestClient, token: str) -> dict:
    r = client.post(EXPORT, headers=auth(token), json={"properties": ["usr_gender"]})
    assert r.status_code == 200, r.text
    return r.json()


def die_holding(app: App, job_id: str) -> None:
    """Claim the job like a worker, start writing, and die (no heartbeat, no cleanup)."""
    row = app.queue.claim("dead-worker", DEAD_LEASE_S)
    assert row is not None and row.id == job_id
    (app.results.staging(row.id, row.attempts) / "partial_UserList.csv").write_text('"gio_id"\n"1"\n')
    time.sleep(DEAD_LEASE_S * 2)


def test_job_of_a_dead_worker_is_retried_and_finishes(
    app: App, client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    job = submit(client, seeded.token)
    die_holding(app, job["id"])
    during = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    assert during["stage"] == "RUNNING" and during["uris"] == []
    assert worker.run_until_empty() == 1
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "FINISH" and result["attempts"] == 2
    content = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token)).content
    assert content == expected_csv(["usr_gender"])
    assert app.exports.cleanup()["staging"] == 1  # the dead attempt's partial file


def test_job_whose_workers_keep_dying_is_error_after_max_attempts(
    app: App, client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    job = submit(client, seeded.token)
    for _ in range(app.settings.max_attempts):
        die_holding(app, job["id"])
    assert worker.run_until_empty() == 0
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "ERROR" and result["uris"] == []
    assert result["attempts"] == 3
    assert result["error"]["code"] == "EXPORT_FAILED"
    assert "stopped 3 times" in result["error"]["message"]
    assert "expiresAt" in result
    assert app.exports.cleanup()["staging"] == 3


def test_worker_that_lost_its_lease_does_not_publish(app: App, client: TestClient, seeded: Seeded) -> None:
    job = submit(client, seeded.token)
    slow = app.queue.claim("slow-worker", DEAD_LEASE_S)
    time.sleep(DEAD_LEASE_S * 2)
    fresh = app.queue.claim("fresh-worker", 30)
    assert slow is not None and fresh is not None and fresh.id == slow.id == job["id"]
    with pytest.raises(LeaseLost):
        app.runner.run(slow, "slow-worker")
    assert not (app.settings.data_dir / "results" / fresh.name).exists()
    assert client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()["stage"] == "RUNNING"
    app.runner.run(fresh, "fresh-worker")
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "FINISH" and result["attempts"] == 2
    assert not any((app.settings.data_dir / "results" / ".staging").iterdir())


def test_jobs_and_tokens_survive_a_restart(app: App, client: TestClient, seeded: Seeded, settings: Settings) -> None:
    from segport.roles.inline import build

    job = submit(client, seeded.token)
    app.close()
    again = build(settings)
    try:
        assert again.queue.get(job["id"]).stage == "NONE"
        assert again.meta.authenticate(seeded.token).projects == {PROJECT}
        assert Worker(again, threads=1).run_until_empty() == 1
        assert again.queue.get(job["id"]).stage == "FINISH"
    finally:
        again.close()
