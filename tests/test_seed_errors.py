"""Every bad input to the seed's endpoints gets a 4xx with the one JSON error shape."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from segport.worker import Worker
from tests.conftest import OTHER_PROJECT, PROJECT, SEGMENT, Seeded, auth

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"


def assert_error(r: Response, status: int, code: str, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    for fragment in fragments:
        assert fragment in body["error"]["message"]


def submit(client: TestClient, token: str, body: str, path: str = EXPORT) -> Response:
    return client.post(path, headers={**auth(token), "Content-Type": "application/json"}, content=body)


def test_missing_token_is_401(client: TestClient, seeded: Seeded) -> None:
    assert_error(client.post(EXPORT, json={}), 401, "UNAUTHORIZED", "Bearer")


@pytest.mark.parametrize("header", ["Bearer nope", "nope", "Bearer ", "Basic abc"])
def test_invalid_token_is_401(client: TestClient, seeded: Seeded, header: str) -> None:
    assert_error(client.post(EXPORT, headers={"Authorization": header}, json={}), 401, "UNAUTHORIZED")


def test_revoked_token_is_401(client: TestClient, seeded: Seeded) -> None:
    seeded.app.meta.revoke_token(seeded.token)
    assert_error(submit(client, seeded.token, "{}"), 401, "UNAUTHORIZED")


def test_export_rejects_61_properties(client: TestClient, seeded: Seeded) -> None:
    body = json.dumps({"properties": [f"usr_k{i}" for i in range(61)]})  # counted before they are looked up
    assert_error(submit(client, seeded.token, body), 400, "TOO_MANY_PROPERTIES", "61", "60")


def test_export_accepts_60_properties(client: TestClient, seeded: Seeded) -> None:
    body = json.dumps({"properties": ["usr_gender"] * 60})
    assert submit(client, seeded.token, body).status_code == 200


def test_unknown_keys_are_named(client: TestClient, seeded: Seeded) -> None:
    body = json.dumps({"properties": ["usr_gender", "usr_nope", "tag_missing"]})
    assert_error(submit(client, seeded.token, body), 400, "UNKNOWN_KEY", "usr_nope", "tag_missing")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"fileFormat": "xml"}', "fileFormat"),
        ('{"csvHeaderType": "label"}', "csvHeaderType"),
        ('{"properties": "usr_gender"}', "properties"),
        ('{"properties": [1, 2]}', "properties"),
        ('{"nope": 1}', "nope"),
        ("[]", "object"),
        ('{"properties": [', "JSON"),
        ("not json", "JSON"),
    ],
)
def test_bad_bodies_are_400(client: TestClient, seeded: Seeded, body: str, fragment: str) -> None:
    assert_error(submit(client, seeded.token, body), 400, "INVALID_BODY", fragment)


def test_unknown_project_is_404(client: TestClient, seeded: Seeded) -> None:
    path = f"/v1/api/projects/Nope0000/segment_profiles/{SEGMENT}/export_jobs"
    assert_error(submit(client, seeded.token, "{}", path), 404, "PROJECT_NOT_FOUND")


def test_other_projects_segment_is_404(client: TestClient, seeded: Seeded) -> None:
    path = f"/v1/api/projects/{OTHER_PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
    assert_error(submit(client, seeded.token, "{}", path), 404, "PROJECT_NOT_FOUND")


def test_unknown_segment_is_404(client: TestClient, seeded: Seeded) -> None:
    path = f"/v1/api/projects/{PROJECT}/segment_profiles/seg_nope/export_jobs"
    assert_error(submit(client, seeded.token, "{}", path), 404, "SEGMENT_NOT_FOUND", "seg_nope")


def test_unknown_job_is_404(client: TestClient, seeded: Seeded) -> None:
    assert_error(client.get("/v1/api/job/result/AAAAAAAA", headers=auth(seeded.token)), 404, "JOB_NOT_FOUND")


def test_other_projects_job_and_file_are_404(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, '{"properties": ["usr_gender"]}').json()
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    uri = result["uris"][0]
    assert client.get("/download?file=" + uri, headers=auth(seeded.token)).status_code == 200
    assert_error(client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.other_token)), 404, "JOB_NOT_FOUND")
    assert_error(client.get("/download?file=" + uri, headers=auth(seeded.other_token)), 404, "FILE_NOT_FOUND")
    assert_error(client.get("/download?file=" + uri), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "file",
    [
        "",
        "%2Fetc%2Fpasswd",
        "%2Fjobs%2Fresults%2F..%2F..%2Fmeta.sqlite",
        "%2Fjobs%2Fresults%2FDES-202605240136-1%2F..%2F..%2Fmeta.sqlite",
        "%2Fjobs%2Fresults%2FDES-202605240136-1%5C..%5Cx.csv",
        "..%2Fmeta.sqlite",
    ],
)
def test_download_refuses_paths_that_are_not_result_uris(client: TestClient, seeded: Seeded, file: str) -> None:
    assert_error(client.get("/download?file=" + file, headers=auth(seeded.token)), 404, "FILE_NOT_FOUND")


def test_download_path_with_a_nul_is_refused_before_any_lookup(client: TestClient, seeded: Seeded) -> None:
    r = client.get("/download?file=%2Fjobs%2Fresults%2FDES-202605240136-1%2Fx.csv%00", headers=auth(seeded.token))
    assert_error(r, 400, "INVALID_PARAMETER", "'file' holds a control character")


def test_download_of_unfinished_job_is_404(client: TestClient, seeded: Seeded) -> None:
    job = submit(client, seeded.token, "{}").json()
    uri = f"%2Fjobs%2Fresults%2F{job['name']}%2Fx_UserList.csv"
    assert_error(client.get("/download?file=" + uri, headers=auth(seeded.token)), 404, "FILE_NOT_FOUND")


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/v1/api/nothing"), 404, "NOT_FOUND")
    assert_error(client.delete("/download"), 405, "METHOD_NOT_ALLOWED")


def test_oversized_body_is_413(client: TestClient, seeded: Seeded) -> None:
    body = json.dumps({"properties": ["usr_gender" * 10] * 20000})
    assert_error(submit(client, seeded.token, body), 413, "PAYLOAD_TOO_LARGE")


def test_export_options_in_the_query_string_are_refused_not_ignored(client: TestClient, seeded: Seeded) -> None:
    r = client.post(EXPORT + "?properties=usr_gender&fileFormat=json", headers=auth(seeded.token))
    assert_error(r, 400, "INVALID_BODY", "JSON body", "fileFormat", "properties")
