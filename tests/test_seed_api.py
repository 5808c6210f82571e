"""The seed's examples replayed as written, and the downloaded bytes checked against an independent writer."""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote

import pytest
from fastapi.testclient import TestClient

from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, SEGMENT_NAME, Seeded, auth
from tests.expected import expected_csv, expected_jsonl, parse_jsonl

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
SEED_EXAMPLE_1 = """{
"properties": [
"ids_$basic_userId",
"usr_gender",
"tag_rfm"
]
,"fileFormat":"csv"
,"csvHeaderType":"key"
}"""
SEED_EXAMPLE_2 = '{\n"properties": []\n}'


def run_export(client: TestClient, worker: Worker, token: str, body: str | dict | None) -> tuple[dict, dict, bytes]:
    """Submit, run the queue, poll, download: (submit answer, job result, file bytes)."""
    headers = {**auth(token), "Content-Type": "application/json"}
    content = body if isinstance(body, str) or body is None else json.dumps(body)
    created = client.post(EXPORT, headers=headers, content=content)
    assert created.status_code == 200, created.text
    job = created.json()
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(token))
    assert result.status_code == 200, result.text
    data = result.json()
    assert data["stage"] == "FINISH", data
    download = client.get("/download?file=" + data["uris"][0], headers=auth(token))
    assert download.status_code == 200, download.text
    return job, data, download.content


def test_seed_example_1_csv_by_key(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job, result, content = run_export(client, worker, seeded.token, SEED_EXAMPLE_1)
    assert re.fullmatch(r"[A-Za-z0-9]{8}", job["id"])
    assert re.fullmatch(r"DES-\d{12}-\d+", job["name"])
    assert set(job) == {"id", "name"}
    assert content == expected_csv(["id_$basic_userId", "usr_gender", "tag_rfm"])
    assert content.startswith(b'"gio_id","id_$basic_userId","usr_gender","tag_rfm"\n')


def test_seed_example_2_empty_properties(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    _, _, content = run_export(client, worker, seeded.token, SEED_EXAMPLE_2)
    assert content == expected_csv([])
    assert content.splitlines()[:2] == [b'"gio_id"', b'"1"']


def test_uri_is_the_whole_result_path_percent_encoded(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job, result, _ = run_export(client, worker, seeded.token, SEED_EXAMPLE_1)
    (uri,) = result["uris"]
    assert uri.startswith("%2Fjobs%2Fresults%2F")
    assert "/" not in uri
    day = re.search(r"\d{4}-\d{2}-\d{2}", unquote(uri)).group(0)  # type: ignore[union-attr]
    expected_path = f"/jobs/results/{job['name']}/{SEGMENT_NAME}_{day}_UserList.csv"
    assert unquote(uri) == expected_path
    assert uri == quote(expected_path, safe="")


def test_csv_with_display_name_header(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    keys = ["id_$basic_userId", "usr_gender", "tag_rfm", "usr_city"]
    body = {"properties": keys, "csvHeaderType": "name"}
    _, _, content = run_export(client, worker, seeded.token, body)
    assert content == expected_csv(keys, header=["用户ID", "性别", "会员等级", "城市"])


def test_csv_holds_awkward_values_byte_exact(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    keys = ["usr_city", "usr_gender", "usr_age", "usr_score", "usr_since", "id_$anonymous_user", "tag_rfm"]
    _, _, content = run_export(client, worker, seeded.token, {"properties": keys})
    assert content == expected_csv(keys)
    # the cases spelled out: empty string, null, comma, quotes, newline, spaces, formula, multi-value
    assert b'"line1\nline2"' in content
    assert b'"say ""hi"""' in content
    assert b'"  spaced  "' in content
    assert b'"=SUM(A1:A2)"' in content
    assert b'"d1||d2"' in content
    assert b'"4","line1\nline2","","41",,,,"\xe4\xb8\xad"' in content


def test_json_lines(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    keys = ["id_$basic_userId", "usr_gender", "tag_rfm", "usr_city", "id_$anonymous_user", "usr_age"]
    job, result, content = run_export(client, worker, seeded.token, {"properties": keys, "fileFormat": "json"})
    assert unquote(result["uris"][0]).endswith("_UserList.json")
    assert parse_jsonl(content) == expected_jsonl(keys)
    assert "男".encode() in content  # UTF-8, not \u escapes
    # a multi-valued identity is a list in JSON Lines (as the API family answers it); CSV joins it with ||
    assert b'"id_$anonymous_user":["d1","d2"]' in content
    assert b'"id_$anonymous_user":null' in content


def test_json_lines_without_properties_is_just_gio_id(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    _, _, content = run_export(client, worker, seeded.token, {"properties": [], "fileFormat": "json"})
    assert content.splitlines()[0] == b'{"gio_id":"1"}'
    assert parse_jsonl(content) == expected_jsonl([])


def test_duplicate_and_gio_id_keys_are_dropped(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    body = {"properties": ["usr_gender", "gio_id", "usr_gender", "ids_$basic_userId", "id_$basic_userId"]}
    _, _, content = run_export(client, worker, seeded.token, body)
    assert content == expected_csv(["usr_gender", "id_$basic_userId"])


def test_no_body_means_defaults(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    _, _, content = run_export(client, worker, seeded.token, None)
    assert content == expected_csv([])


def test_job_result_stays_none_until_a_worker_runs(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    created = client.post(EXPORT, headers=auth(seeded.token), json={"properties": ["usr_gender"]}).json()
    before = client.get(f"/v1/api/job/result/{created['id']}", headers=auth(seeded.token)).json()
    assert before["stage"] == "NONE"
    assert before["uris"] == []
    worker.run_until_empty()
    after = client.get(f"/v1/api/job/result/{created['id']}", headers=auth(seeded.token)).json()
    assert after["stage"] == "FINISH"
    assert after["rows"] == 6
    assert after["bytes"] > 0
    assert after["expiresAt"].endswith("Z")


def test_bare_token_without_bearer_is_accepted(client: TestClient, seeded: Seeded) -> None:
    r = client.post(EXPORT, headers={"Authorization": seeded.token}, json={"properties": []})
    assert r.status_code == 200


def test_body_without_json_content_type_is_parsed(client: TestClient, seeded: Seeded) -> None:
    r = client.post(
        EXPORT,
        headers={**auth(seeded.token), "Content-Type": "application/x-www-form-urlencoded"},
        content='{"properties": ["usr_gender"], "fileFormat": "json"}',
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_download_headers(client: TestClient, worker: Worker, seeded: Seeded, fmt: str) -> None:
    _, result, _ = run_export(client, worker, seeded.token, {"fileFormat": fmt})
    r = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token))
    assert r.headers["content-disposition"].startswith("attachment; filename*=utf-8''")
    assert r.headers["content-type"].startswith("text/csv" if fmt == "csv" else "application/x-ndjson")


def test_openapi_page_is_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/api/projects/{project_ID}/segment_profiles/{segment_key}/export_jobs" in spec["paths"]
