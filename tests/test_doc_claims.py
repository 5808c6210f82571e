"""A claim docs/api.md makes that no other test held: a ``limit`` written as a whole float is read as that
integer. (Export options in the query string are a 400: tests/test_seed_errors.py holds that one.)"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Seeded, auth
from tests.family_helpers import SEG_USERS, SEGMENTS


def test_limit_100_point_0_is_read_as_100(client: TestClient, seeded: Seeded) -> None:
    for url in (SEGMENTS, SEG_USERS):
        page = client.get(url, headers=auth(seeded.token), params={"limit": "100.0"})
        assert page.status_code == 200, page.text
        limit = page.json()["limit"]
        assert limit == 100 and type(limit) is int  # 100, not 100.0 echoed back
