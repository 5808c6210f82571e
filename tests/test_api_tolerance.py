"""Every variant GrowingIO's docs contradict themselves on is accepted, and the optional extensions
(``bom``, ``compression``, the job result's extra fields) do what docs/api.md says."""

from __future__ import annotations

import gzip
import json
import re
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, SEGMENT_NAME, Seeded, auth
from tests.expected import expected_csv, expected_jsonl, parse_jsonl
from tests.family_helpers import ISO_MS, SEG_USERS, SEGMENTS, TAG_USERS, TAGS, P, tag_members

SEED_EXPORT = f"{SEGMENTS}/{SEGMENT}/export_jobs"


def finish(client: TestClient, worker: Worker, token: str, job: dict) -> tuple[dict, bytes]:
    """Run the queue, poll the job, download its file: (job result, bytes)."""
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(token)).json()
    assert result["stage"] == "FINISH", result
    r = client.get("/download?file=" + result["uris"][0], headers=auth(token))
    assert r.status_code == 200, r.text
    return result, r.content


def submit(client: TestClient, token: str, url: str, body: dict | str | None = None) -> dict:
    content = body if isinstance(body, str) or body is None else json.dumps(body)
    r = client.post(url, headers={**auth(token), "Content-Type": "application/json"}, content=content)
    assert r.status_code == 200, r.text
    return r.json()


# --- identity prefixes -----------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["id_$basic_userId", "ids_$basic_userId"])
def test_page_properties_accept_id_and_ids_prefixes(client: TestClient, seeded: Seeded, spelling: str) -> None:
    page = client.get(SEG_USERS, headers=auth(seeded.token), params={"properties[]": [spelling], "limit": 1}).json()
    assert page["values"][0]["identifications"] == {"id_$basic_userId": ["C001"]}  # written canonically


@pytest.mark.parametrize("key", ["$basic_userId", "id_$basic_userId", "ids_$basic_userId", "%24basic_userId"])
def test_lookup_accepts_the_identity_key_with_or_without_prefix(client: TestClient, seeded: Seeded, key: str) -> None:
    r = client.get(f"{P}/users/{key}/C004", headers=auth(seeded.token))
    assert r.status_code == 200, r.text
    assert r.json()["gioId"] == "4"


def test_properties_without_brackets_mean_the_same(client: TestClient, seeded: Seeded) -> None:
    keys = ["usr_gender", "tag_rfm", "id_$basic_userId"]
    bracketed = client.get(SEG_USERS, headers=auth(seeded.token), params={"properties[]": keys}).json()
    plain = client.get(SEG_USERS, headers=auth(seeded.token), params={"properties": keys}).json()
    mixed = client.get(
        SEG_USERS + "?properties[]=usr_gender&properties=tag_rfm&properties[]=id_$basic_userId",
        headers=auth(seeded.token),
    ).json()
    assert bracketed == plain == mixed
    assert list(bracketed["values"][0]["properties"]) == ["usr_gender", "tag_rfm"]  # request order


# --- body keys, the address variant, the job result address ----------------------------------------
@pytest.mark.parametrize("url", [SEED_EXPORT, f"{SEGMENTS}/{SEGMENT}/users/export_jobs", f"{TAGS}/tag_rfm/export_jobs"])
def test_body_keys_match_case_insensitively(client: TestClient, worker: Worker, seeded: Seeded, url: str) -> None:
    job = submit(client, seeded.token, url, '{"PROPERTIES": ["usr_gender"], "fileformat": "json"}')
    result, content = finish(client, worker, seeded.token, job)
    assert unquote(result["uris"][0]).endswith("_UserList.json")
    assert parse_jsonl(content)[0]["properties"] == {"usr_gender": "男"}


def test_users_export_jobs_address_is_the_seed_endpoint(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    body = {"properties": ["ids_$basic_userId", "usr_gender", "tag_rfm"]}
    job = submit(client, seeded.token, f"{SEGMENTS}/{SEGMENT}/users/export_jobs", body)
    assert re.fullmatch(r"DES-\d{12}-\d+", job["name"])
    result, content = finish(client, worker, seeded.token, job)
    assert content == expected_csv(["id_$basic_userId", "usr_gender", "tag_rfm"])
    assert f"/{SEGMENT_NAME}_" in unquote(result["uris"][0])


@pytest.mark.parametrize("tag", ["tag_rfm", "rfm"])
def test_tag_export_is_named_det_and_after_the_tag(
    client: TestClient, worker: Worker, seeded: Seeded, tag: str
) -> None:
    job = submit(client, seeded.token, f"{TAGS}/{tag}/export_jobs", {"properties": ["id_$basic_userId", "tag_rfm"]})
    assert re.fullmatch(r"DET-\d{12}-\d+", job["name"])
    result, content = finish(client, worker, seeded.token, job)
    name = unquote(result["uris"][0]).rsplit("/", 1)[1]
    assert re.fullmatch(r"会员等级_\d{4}-\d{2}-\d{2}_UserList\.csv", name)
    assert content == expected_csv(["id_$basic_userId", "tag_rfm"], rows=tag_members())


def test_platform_tag_export_uses_the_tokens_one_project(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, "/v1/api/user_tags/tag_rfm/export_jobs", {"fileFormat": "json"})
    assert job["name"].startswith("DET-")
    _, content = finish(client, worker, seeded.token, job)
    assert parse_jsonl(content) == expected_jsonl([], rows=tag_members())


# --- numbers written as floats, tokens without Bearer, the language header --------------------------
@pytest.mark.parametrize("url", [SEGMENTS, SEG_USERS, TAGS, TAG_USERS])
def test_limit_and_offset_written_as_floats(client: TestClient, seeded: Seeded, url: str) -> None:
    as_int = client.get(url, headers=auth(seeded.token), params={"limit": "2", "offset": "1"})
    as_float = client.get(url, headers=auth(seeded.token), params={"limit": "2.0", "offset": "1.0"})
    assert as_float.status_code == 200, as_float.text
    assert (as_float.json()["limit"], as_float.json()["offset"]) == (2, 1)
    assert _timeless(as_float.json()) == _timeless(as_int.json())


@pytest.mark.parametrize(
    "url",
    [
        SEGMENTS,
        SEG_USERS,
        TAGS,
        TAG_USERS,
        f"{P}/users/$basic_userId/C001",
        "/v1/api/user_tags",
        "/v1/api/users/$basic_userId/C001",
    ],
)
def test_bare_token_and_language_header_are_accepted(client: TestClient, seeded: Seeded, url: str) -> None:
    reference = client.get(url, headers=auth(seeded.token))
    assert reference.status_code == 200, reference.text
    for headers in (
        {"Authorization": seeded.token},
        {**auth(seeded.token), "language": "CH"},
        {**auth(seeded.token), "language": "US"},
        {"Authorization": seeded.token, "Language": "us"},
    ):
        r = client.get(url, headers=headers)
        assert r.status_code == 200, (headers, r.text)
        assert _timeless(r.json()) == _timeless(reference.json())


def test_language_header_does_not_change_errors(client: TestClient, seeded: Seeded) -> None:
    answers = {
        client.get(f"{SEGMENTS}/seg_nope/users", headers={**auth(seeded.token), "language": lang}).text
        for lang in ("CH", "US")
    }
    assert len(answers) == 1 and "SEGMENT_NOT_FOUND" in answers.pop()


def _timeless(page: dict) -> dict:
    """A tag's detectedAt is the time of its count; everything else must be equal."""
    values = page.get("values")
    if values is None:
        return page
    return {
        **page,
        "values": [{**v, "detector": {**v["detector"], "detectedAt": None}} if "detector" in v else v for v in values],
    }


# --- extensions ------------------------------------------------------------------------------------
def test_bom_is_exactly_three_bytes_before_the_same_csv(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    keys = ["id_$basic_userId", "usr_city", "tag_rfm"]
    _, plain = finish(client, worker, seeded.token, submit(client, seeded.token, SEED_EXPORT, {"properties": keys}))
    job = submit(client, seeded.token, SEED_EXPORT, {"properties": keys, "bom": True})
    _, with_bom = finish(client, worker, seeded.token, job)
    assert plain == expected_csv(keys)
    assert with_bom[:3] == b"\xef\xbb\xbf"
    assert with_bom[3:] == plain
    off = submit(client, seeded.token, SEED_EXPORT, {"properties": keys, "bom": False})
    assert finish(client, worker, seeded.token, off)[1] == plain


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_gzip_decompresses_to_the_same_bytes(client: TestClient, worker: Worker, seeded: Seeded, fmt: str) -> None:
    keys = ["id_$anonymous_user", "usr_gender", "usr_city", "tag_rfm"]
    _, plain = finish(
        client, worker, seeded.token, submit(client, seeded.token, SEED_EXPORT, {"properties": keys, "fileFormat": fmt})
    )
    job = submit(client, seeded.token, SEED_EXPORT, {"properties": keys, "fileFormat": fmt, "compression": "gzip"})
    result, packed = finish(client, worker, seeded.token, job)
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == plain
    assert unquote(result["uris"][0]).endswith(f"_UserList.{fmt}.gz")
    r = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token))
    assert r.headers["content-type"] == "application/gzip"


def test_bom_with_gzip_decompresses_to_bom_and_csv(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, SEED_EXPORT, {"properties": ["usr_city"], "bom": True, "compression": "gzip"})
    _, packed = finish(client, worker, seeded.token, job)
    assert gzip.decompress(packed) == b"\xef\xbb\xbf" + expected_csv(["usr_city"])


def test_compression_none_is_the_default(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, SEED_EXPORT, {"properties": ["usr_age"], "compression": "none"})
    result, content = finish(client, worker, seeded.token, job)
    assert content == expected_csv(["usr_age"])
    assert unquote(result["uris"][0]).endswith("_UserList.csv")


def test_job_result_extra_fields(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, SEED_EXPORT, {"properties": ["usr_gender"]})
    queued = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    assert {"stage", "uris", "id", "name", "createdAt", "attempts"} <= set(queued)
    assert not {"finishedAt", "rows", "bytes", "error"} & set(queued)  # absent until known
    result, content = finish(client, worker, seeded.token, job)
    assert (result["id"], result["name"]) == (job["id"], job["name"])
    for field in ("createdAt", "startedAt", "finishedAt", "expiresAt"):
        assert ISO_MS.match(result[field]), (field, result[field])
    assert result["rows"] == 6 and result["bytes"] == len(content) and result["attempts"] == 1
    assert "error" not in result


def test_job_result_error_field(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    job = submit(client, seeded.token, SEED_EXPORT, {"properties": ["usr_gender"]})
    seeded.app.engine.drop_segment(PROJECT, SEGMENT)  # the snapshot vanishes before the job runs
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "ERROR" and result["uris"] == []
    assert set(result["error"]) == {"code", "message"}
    assert result["error"]["code"] == "SEGMENT_NOT_FOUND"
    assert "rows" not in result and "bytes" not in result
