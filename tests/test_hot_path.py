"""The request hot path (authenticate, poll, submit) reads through Core statements, one-statement reads in
autocommit: what it reads is always current, it leaves no transaction open, and a submit's checks still hold."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.domain.jobs import Stage
from segport.errors import InvalidParameter
from segport.store.models import JobRow, utcnow
from tests.conftest import PROJECT, SEGMENT, Seeded, auth

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"


def _sqlite(app: App) -> sqlite3.Connection:
    return sqlite3.connect(app.settings.data_dir / "meta.sqlite", isolation_level=None)


def test_a_token_revoked_by_another_process_fails_on_the_next_poll(
    app: App, client: TestClient, seeded: Seeded
) -> None:
    job = client.post(EXPORT, headers=auth(seeded.token), json={}).json()["id"]
    assert client.get(f"/v1/api/job/result/{job}", headers=auth(seeded.token)).status_code == 200
    con = _sqlite(app)  # as the CLI does: straight into the database file, not through the server
    con.execute(
        "UPDATE tokens SET revoked_at = '2026-01-01 00:00:00.000000' WHERE id = ?",
        [app.meta.authenticate(seeded.token).token_id],
    )
    con.close()
    r = client.get(f"/v1/api/job/result/{job}", headers=auth(seeded.token))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED"


def test_a_poll_sees_a_stage_written_by_another_process_at_once(app: App, client: TestClient, seeded: Seeded) -> None:
    job = client.post(EXPORT, headers=auth(seeded.token), json={}).json()["id"]
    assert client.get(f"/v1/api/job/result/{job}", headers=auth(seeded.token)).json()["stage"] == "NONE"
    con = _sqlite(app)
    con.execute("UPDATE jobs SET stage = 'RUNNING' WHERE id = ?", [job])
    con.close()
    assert client.get(f"/v1/api/job/result/{job}", headers=auth(seeded.token)).json()["stage"] == "RUNNING"


def test_a_submit_names_the_job_after_the_segment_as_it_is_now(app: App, client: TestClient, seeded: Seeded) -> None:
    app.meta.update_segment(PROJECT, SEGMENT, name="新名字")
    r = client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_city"]})
    assert r.status_code == 200, r.text
    assert app.queue.get(r.json()["id"]).target_name == "新名字"


def test_hot_path_reads_leave_no_transaction_open(app: App, client: TestClient, seeded: Seeded) -> None:
    job = client.post(EXPORT, headers=auth(seeded.token), json={}).json()["id"]
    for _ in range(3):
        assert client.get(f"/v1/api/job/result/{job}", headers=auth(seeded.token)).status_code == 200
    # a reader still inside a transaction would keep the WAL from being checkpointed to its end
    con = _sqlite(app)
    busy, _log, _done = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    con.close()
    assert busy == 0


def _job_row(job_id: str, name: str, fingerprint: str) -> JobRow:
    """A queued job of the seeded segment, as ExportService.submit would make it."""
    return JobRow(
        id=job_id,
        name=name,
        project_id=PROJECT,
        target_kind="segment",
        target_key=SEGMENT,
        target_name="x",
        spec="{}",
        fingerprint=fingerprint,
        stage=Stage.NONE.value,
        files="[]",
        attempts=0,
        created_at=utcnow(),
        file_day="2026-01-01",
    )


def test_a_submit_refuses_a_job_field_longer_than_its_column(app: App, seeded: Seeded) -> None:
    def make_row() -> JobRow:
        return _job_row("LongName", "n" * 65, "f")

    with pytest.raises(InvalidParameter, match="job name is too long"):
        app.queue.submit(make_row)
    with pytest.raises(Exception, match="not found"):
        app.queue.get("LongName")


def test_a_finished_identical_job_is_reused_until_it_expires(app: App, seeded: Seeded) -> None:
    def make_row() -> JobRow:
        now = utcnow()
        return _job_row(f"J{now.microsecond:07d}", f"job-{now.timestamp()}", "same")

    first, created = app.queue.submit(make_row)
    assert created
    now = utcnow()
    con = _sqlite(app)
    expires = (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    con.execute("UPDATE jobs SET stage = 'FINISH', expires_at = ? WHERE id = ?", [expires, first.id])
    again, created = app.queue.submit(make_row)
    assert (again.id, created) == (first.id, False)
    assert again.stage == "FINISH"
    past = (now - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    con.execute("UPDATE jobs SET expires_at = ? WHERE id = ?", [past, first.id])
    con.close()
    fresh, created = app.queue.submit(make_row)
    assert created and fresh.id != first.id
