"""Small strictness gaps (issue 23, item 7), over real HTTP (in-process): duplicates in ``properties`` are dropped
before they are counted; a body field given twice in two spellings is refused in segport's words; paging takes
only ASCII decimal integers (GrowingIO's ``100.0`` included)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from segport.worker import Worker
from tests.conftest import PROJECT, Seeded, auth
from tests.family_helpers import SEG_USERS, SEGMENTS, TAG_USERS
from tests.test_strict_input import error, post_json

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/seg_51activity/export_jobs"
TAG_EXPORT = f"/v1/api/projects/{PROJECT}/user_tags/tag_rfm/export_jobs"


# --- duplicates are dropped before counting ------------------------------------------------------------
@pytest.mark.parametrize("url", [EXPORT, TAG_EXPORT])
def test_100_copies_of_one_key_are_one_key(client: TestClient, worker: Worker, seeded: Seeded, url: str) -> None:
    keys = ["usr_gender"] * 50 + ["ids_$basic_userId", "id_$basic_userId"] * 25 + ["gio_id"] * 10
    r = client.post(url, headers=auth(seeded.token), json={"properties": keys})
    assert r.status_code == 200, r.text
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{r.json()['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "FINISH", result
    content = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token)).content
    assert content.splitlines()[0] == b'"gio_id","usr_gender","id_$basic_userId"'


def test_61_distinct_keys_are_still_too_many(client: TestClient, seeded: Seeded) -> None:
    keys = [f"usr_k{i}" for i in range(61)] + ["usr_k0"] * 10
    code, message = error(client.post(EXPORT, headers=auth(seeded.token), json={"properties": keys}))
    assert code == "TOO_MANY_PROPERTIES" and "61 distinct keys" in message


def test_a_page_counts_properties_after_dropping_duplicates_too(client: TestClient, seeded: Seeded) -> None:
    query = "&".join(["properties[]=usr_gender"] * 30 + ["properties[]=ids_$basic_userId"] * 5)
    r = client.get(f"{SEG_USERS}?{query}", headers=auth(seeded.token))
    assert r.status_code == 200, r.text
    assert set(r.json()["values"][0]["properties"]) == {"usr_gender"}
    many = "&".join(f"properties[]=usr_k{i}" for i in range(21))
    code, message = error(client.get(f"{SEG_USERS}?{many}", headers=auth(seeded.token)))
    assert code == "TOO_MANY_PROPERTIES" and "21 distinct keys" in message


# --- a field given twice, in two spellings -------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"bom": true, "BOM": false}', "bom"),
        ('{"fileFormat": "csv", "fileformat": "json"}', "fileFormat"),
        ('{"properties": ["usr_gender"], "Properties": []}', "properties"),
    ],
)
def test_a_field_given_twice_in_two_spellings_is_refused_in_our_words(
    client: TestClient, seeded: Seeded, raw: str, field: str
) -> None:
    code, message = error(post_json(client, EXPORT, seeded.token, raw))
    assert code == "INVALID_BODY"
    assert message == f"field {field!r} is given twice in the body (field names are case-insensitive)"


# --- paging: ASCII decimal integers only ---------------------------------------------------------------
@pytest.mark.parametrize("url", [SEGMENTS, SEG_USERS, TAG_USERS])
@pytest.mark.parametrize(
    "query",
    [
        "limit=1_0",
        "limit=%EF%BC%91",  # full-width 1
        "limit=%D9%A1",  # Arabic-Indic 1
        "limit=%2010",
        "limit=10%20",
        "limit=%0910",
        "limit=1e2",
        "limit=1E1",
        "limit=%2B10",
        "limit=10.",
        "limit=.0",
        "limit=0x10",
        "limit=%20",
        "offset=1_0",
        "offset=%EF%BC%90",
        "offset=%200",
        "offset=1e1",
        "offset=-0",
    ],
)
def test_paging_takes_only_ascii_decimal_integers(client: TestClient, seeded: Seeded, url: str, query: str) -> None:
    code, message = error(client.get(f"{url}?{query}", headers=auth(seeded.token)))
    name = query.partition("=")[0]
    assert code == "INVALID_PARAMETER" and name in message


@pytest.mark.parametrize(
    ("query", "limit", "offset"),
    [
        ("limit=10", 10, 0),
        ("limit=010", 10, 0),
        ("limit=100.0", 100, 0),
        ("limit=1000.00", 1000, 0),
        ("limit=&offset=", 1000, 0),
        ("offset=0003", 1000, 3),
        ("", 1000, 0),
    ],
)
def test_paging_still_takes_decimal_integers_and_growingios_floats(
    client: TestClient, seeded: Seeded, query: str, limit: int, offset: int
) -> None:
    r = client.get(f"{SEGMENTS}?{query}", headers=auth(seeded.token))
    assert r.status_code == 200, r.text
    assert (r.json()["limit"], r.json()["offset"]) == (limit, offset)


def test_an_enormous_limit_is_out_of_range_not_an_error_of_ours(client: TestClient, seeded: Seeded) -> None:
    code, message = error(client.get(f"{SEGMENTS}?limit={'9' * 5000}", headers=auth(seeded.token)))
    assert code == "INVALID_PARAMETER" and message.startswith("limit must be between 1 and 1000, not '9999")
