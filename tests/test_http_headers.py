"""HTTP edges every endpoint shares (docs/limits.md): HEAD on every GET, a trailing slash answers the same as
without one, security and caching headers on every answer, ``WWW-Authenticate`` on a 401, and a metadata
connection pool sized from the settings."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from segport.app import App, open_stores
from segport.errors import MetadataBusy
from segport.roles.inline import build
from segport.settings import Settings
from segport.store.db import DEFAULT_POOL_SIZE
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, Seeded, auth
from tests.test_seed_api import run_export

IDENTITY = "id_$basic_userId"


def get_paths(client: TestClient) -> list[str]:
    """Every GET operation the app documents, with its parameters filled from the seeded project."""
    return [path for path, ops in client.get("/openapi.json").json()["paths"].items() if "get" in ops]


def concrete(path: str, job_id: str, uri: str) -> str:
    values = {
        "{project_ID}": PROJECT,
        "{project_id}": PROJECT,
        "{segment_key}": SEGMENT,
        "{key}": SEGMENT,
        "{tag_key}": "tag_rfm",
        "{id}": job_id,
        "{identityKey}": IDENTITY,
        "{value}": "C001",
    }
    for name, value in values.items():
        path = path.replace(name, value)
    if path == "/download":
        path += "?file=" + uri
    if path.startswith("/v1/api/user_tags") or path.startswith("/v1/api/users/"):
        path += ("&" if "?" in path else "?") + "project_ID=" + PROJECT
    return path


def without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if not k.endswith("At")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


@pytest.fixture
def finished(client: TestClient, worker: Worker, seeded: Seeded) -> tuple[str, str]:
    job, result, _ = run_export(client, worker, seeded.token, {"properties": ["usr_city"]})
    return job["id"], result["uris"][0]


def test_head_answers_every_get_endpoint_like_get_without_a_body(
    client: TestClient, seeded: Seeded, finished: tuple[str, str]
) -> None:
    paths = get_paths(client)
    assert len(paths) >= 10
    for template in paths:
        token = seeded.admin_token if template.startswith("/admin/") else seeded.token
        url = concrete(template, *finished)
        get = client.get(url, headers=auth(token))
        head = client.head(url, headers=auth(token))
        assert get.status_code == 200, (url, get.text)
        assert head.status_code == 200, (url, head.text)
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"], url
        assert head.headers.get("content-length") == get.headers.get("content-length"), url
    for page in ("/docs", "/redoc", "/openapi.json"):
        assert client.head(page).status_code == 200


def test_head_keeps_the_rules_of_get(client: TestClient, seeded: Seeded, finished: tuple[str, str]) -> None:
    url = f"/v1/api/job/result/{finished[0]}"
    assert client.head(url).status_code == 401
    assert client.head(url, headers=auth(seeded.other_token)).status_code == 404
    assert client.head("/v1/api/job/result/nojob123", headers=auth(seeded.token)).status_code == 404
    assert "HEAD" not in str(client.get("/openapi.json").json())  # documented once, as GET


@pytest.mark.parametrize("suffix", ["/", "//"])
def test_a_trailing_slash_answers_the_same_as_without_it(
    client: TestClient, seeded: Seeded, finished: tuple[str, str], suffix: str
) -> None:
    for template in get_paths(client):
        token = seeded.admin_token if template.startswith("/admin/") else seeded.token
        url = concrete(template, *finished)
        path, _, query = url.partition("?")
        slashed = path + suffix + ("?" + query if query else "")
        plain, other = client.get(url, headers=auth(token)), client.get(slashed, headers=auth(token))
        assert other.status_code == plain.status_code == 200, (slashed, other.status_code, other.headers)
        if other.headers["content-type"] == "application/json":  # a tag's detectedAt is the time of the request
            assert without_times(other.json()) == without_times(plain.json()), slashed
        else:
            assert other.content == plain.content, slashed
    r = client.post(f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs/", headers=auth(seeded.token))
    assert r.status_code == 200 and "location" not in r.headers  # no 307 to another URL


def test_every_answer_carries_nosniff_no_store_and_a_policy(
    client: TestClient, seeded: Seeded, finished: tuple[str, str]
) -> None:
    job_id, uri = finished
    answers = {
        "job result": client.get(f"/v1/api/job/result/{job_id}", headers=auth(seeded.token)),
        "download": client.get("/download?file=" + uri, headers=auth(seeded.token)),
        "users page": client.get(
            f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/users", headers=auth(seeded.token)
        ),
        "lookup": client.get(f"/v1/api/projects/{PROJECT}/users/{IDENTITY}/C001", headers=auth(seeded.token)),
        "400": client.post(
            f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs",
            headers=auth(seeded.token),
            content=b"{",
        ),
        "401": client.get(f"/v1/api/job/result/{job_id}"),
        "404": client.get("/nowhere"),
        "413": client.post("/v1/api/job/x/cancel", headers=auth(seeded.token), content=b" " * (1 << 21)),
        "414": client.get("/v1/api/job/result/" + "x" * 600),
        "openapi": client.get("/openapi.json"),
    }
    for name, r in answers.items():
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["cache-control"] == "no-store", name
        assert r.headers["content-security-policy"].startswith("default-src 'none'"), name
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.headers["content-type"].startswith("text/html")
        policy = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        assert "http" not in policy  # every asset of the docs pages is served by segport (works offline)
        assert r.headers["x-content-type-options"] == "nosniff"


def test_a_401_says_how_to_authenticate(client: TestClient, seeded: Seeded) -> None:
    for r in (
        client.get("/v1/api/job/result/abcdefgh"),
        client.get("/v1/api/job/result/abcdefgh", headers=auth("not-a-token")),
        client.get(f"/admin/v1/projects/{PROJECT}/catalog"),
    ):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert "www-authenticate" not in client.get("/nowhere").headers


def test_the_download_keeps_its_own_headers_besides(
    client: TestClient, seeded: Seeded, finished: tuple[str, str]
) -> None:
    r = client.get("/download?file=" + finished[1], headers=auth(seeded.token))
    assert r.headers["content-disposition"].startswith("attachment")
    assert unquote(finished[1]).endswith(".csv") and r.headers["etag"]


# --- the metadata pool -------------------------------------------------------------------------------------
def test_the_pool_is_sized_by_the_documented_formula(tmp_path) -> None:  # noqa: ANN001
    s = Settings(data_dir=tmp_path, api_threads=7, max_running_jobs=3)
    assert s.resolved_pool_size() == 7 + 2 * 3 + 3
    assert Settings(data_dir=tmp_path, metadata_pool_size=5).resolved_pool_size() == 5
    assert Settings(data_dir=tmp_path).resolved_pool_size() == DEFAULT_POOL_SIZE
    stores = open_stores(s)
    try:
        assert stores.db.engine.pool.size() == 16
        assert stores.db.engine.pool._max_overflow == 0  # type: ignore[attr-defined]
    finally:
        stores.close()


def test_a_full_pool_is_a_503_with_retry_after_not_a_500_or_a_new_connection(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("segport.store.db.POOL_TIMEOUT_S", 0.5)
    app: App = build(Settings(data_dir=tmp_path / "d", metadata_pool_size=2, serve_workers=False))
    try:
        app.meta.create_project(PROJECT, "p")
        _, token = app.meta.create_token([PROJECT])
        release = threading.Event()
        held = threading.Barrier(3)

        def hold() -> None:
            with app.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                held.wait()
                release.wait(10)

        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
        held.wait()
        try:
            from segport.roles.inline import create_app

            with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as client:
                r = client.get(f"/v1/api/projects/{PROJECT}/segment_profiles", headers=auth(token))
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == MetadataBusy.code
            assert r.headers["retry-after"] == "5"
            assert app.db.engine.pool.checkedout() == 2  # no third connection was opened
        finally:
            release.set()
            for t in threads:
                t.join()
    finally:
        app.close()
