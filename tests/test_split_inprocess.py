"""The API half without its own engine, in-process: engine calls through the internal API over a real Unix
socket (uvicorn in a thread), or no engine at all (503); and which data snapshot a job's file holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from segport.app import App
from segport.roles import api
from segport.roles.engine import create_engine_app
from segport.roles.inline import create_app
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, USERS, Seeded, auth, write_users_csv

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
USERS_PAGE = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/users"


def api_client(app: App, **overrides: object) -> TestClient:
    """An API process's App on the same data dir (it never opens the DuckDB file)."""
    api_app = api.build(app.settings.model_copy(update=overrides))
    return TestClient(api.create_app(api_app), raise_server_exceptions=False)


@pytest.fixture
def engine_socket(seeded: Seeded, tmp_path: Path) -> Iterator[str]:
    """The seeded App's engine served on a Unix socket, as the engine process serves it."""
    path = tmp_path / "engine.sock"
    config = uvicorn.Config(
        create_engine_app(seeded.app, run_workers=False, run_daily=False), uds=str(path), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"unix:{path}"
    server.should_exit = True
    thread.join(10)


def test_without_an_engine_pages_answer_503_and_submits_polls_cancels_still_work(seeded: Seeded) -> None:
    with api_client(seeded.app, engine_url="") as c:
        page = c.get(USERS_PAGE, headers=auth(seeded.token))
        assert page.status_code == 503
        assert page.json()["error"]["code"] == "ENGINE_UNAVAILABLE"
        assert page.headers["Retry-After"]
        job = c.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_gender"]})
        assert job.status_code == 200, job.text
        result = c.get(f"/v1/api/job/result/{job.json()['id']}", headers=auth(seeded.token)).json()
        assert result["stage"] == "NONE" and result["submitDataVersion"] >= 1
        cancelled = c.post(f"/v1/api/job/{job.json()['id']}/cancel", headers=auth(seeded.token))
        assert cancelled.status_code == 200 and cancelled.json()["error"]["code"] == "JOB_CANCELLED"


def test_an_unreachable_engine_is_503_not_500(seeded: Seeded, tmp_path: Path) -> None:
    with api_client(seeded.app, engine_url=f"unix:{tmp_path / 'nobody.sock'}") as c:
        page = c.get(USERS_PAGE, headers=auth(seeded.token))
        assert page.status_code == 503, page.text
        assert page.json()["error"]["code"] == "ENGINE_UNAVAILABLE"


def test_through_the_engine_socket_answers_equal_the_in_process_ones(seeded: Seeded, engine_socket: str) -> None:
    with (
        api_client(seeded.app, engine_url=engine_socket) as remote,
        TestClient(create_app(seeded.app, run_workers=False)) as local,
    ):
        for path in (
            USERS_PAGE + "?limit=3",
            f"/v1/api/projects/{PROJECT}/user_tags/tag_rfm/users?limit=2",
            f"/v1/api/projects/{PROJECT}/segment_profiles/no_such/users",  # an error comes back as the same error
            f"/v1/api/projects/{PROJECT}/users/$basic_userId/{USERS[0]['id_$basic_userId']}",
            f"/v1/api/projects/{PROJECT}/users/$basic_userId/nobody",
        ):
            a, b = remote.get(path, headers=auth(seeded.token)), local.get(path, headers=auth(seeded.token))
            assert (a.status_code, a.json()) == (b.status_code, b.json()), path
        tags = f"/v1/api/projects/{PROJECT}/user_tags"  # counted per request (detectedAt is now)
        counts = [
            [v["detector"]["totalUsers"] for v in c.get(tags, headers=auth(seeded.token)).json()["values"]]
            for c in (remote, local)
        ]
        assert counts[0] == counts[1] and counts[0][0] > 0


def test_an_admin_import_through_the_engine_socket_runs_in_the_engine_and_bumps_the_data_version(
    seeded: Seeded, engine_socket: str, tmp_path: Path
) -> None:
    before = seeded.app.meta.project(PROJECT).data_version
    users = write_users_csv(tmp_path / "more.csv", [{**USERS[0], "usr_gender": "女"}])
    with api_client(seeded.app, engine_url=engine_socket) as c:
        r = c.post(
            f"/admin/v1/projects/{PROJECT}/users/import",
            params={"filename": "more.csv"},
            content=users.read_bytes(),
            headers=auth(seeded.admin_token),
        )
        assert r.status_code == 200, r.text
        assert r.json()["updated"] == 1
        bad = c.post(
            f"/admin/v1/projects/{PROJECT}/users/import",
            params={"filename": "bad.csv", "match": "id_$nope"},
            content=users.read_bytes(),
            headers=auth(seeded.admin_token),
        )
        assert 400 <= bad.status_code < 500, bad.text
    assert seeded.app.meta.project(PROJECT).data_version > before


def test_a_job_run_after_an_import_says_its_file_holds_newer_data_than_its_submit(
    seeded: Seeded, client: TestClient, worker: Worker, tmp_path: Path
) -> None:
    job = client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_gender"]}).json()
    seeded.app.data.import_users(PROJECT, write_users_csv(tmp_path / "more.csv", [{**USERS[0], "usr_gender": "女"}]))
    assert worker.run_until_empty() == 1
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "FINISH"
    assert result["dataVersion"] == result["submitDataVersion"] + 1
    assert result["dataVersionAt"] > result["createdAt"]
    assert str(result["dataVersion"]) in result["dataNote"] and str(result["submitDataVersion"]) in result["dataNote"]
    again = client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_gender"]}).json()
    assert again["id"] != job["id"]  # the data changed since the first submit: a new job
    assert worker.run_until_empty() == 1
    fresh = client.get(f"/v1/api/job/result/{again['id']}", headers=auth(seeded.token)).json()
    assert fresh["dataVersion"] == fresh["submitDataVersion"] == result["dataVersion"] and "dataNote" not in fresh
