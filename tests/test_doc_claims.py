"""Claims docs/api.md makes that no other test held: export options sent in the query string are a 400
rather than silently ignored, and a ``limit`` written as a whole float is read as that integer."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Seeded, auth
from tests.family_helpers import SEG_USERS, SEGMENTS
from tests.test_seed_api import EXPORT


def test_export_options_in_the_query_string_are_a_400_naming_them(client: TestClient, seeded: Seeded) -> None:
    r = client.post(EXPORT, headers=auth(seeded.token), params={"properties": "usr_gender"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_BODY"
    assert "not the query string (properties)" in r.json()["error"]["message"]


def test_limit_100_point_0_is_read_as_100(client: TestClient, seeded: Seeded) -> None:
    for url in (SEGMENTS, SEG_USERS):
        page = client.get(url, headers=auth(seeded.token), params={"limit": "100.0"})
        assert page.status_code == 200, page.text
        limit = page.json()["limit"]
        assert limit == 100 and type(limit) is int  # 100, not 100.0 echoed back
