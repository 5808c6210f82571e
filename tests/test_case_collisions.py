"""Ids that differ only in case: DuckDB table and column names ignore case, so the second one is refused.

Before this was checked, ``seg_X`` silently overwrote the membership snapshot of ``seg_x`` (an export of
``seg_x`` then held ``seg_X``'s users), and a catalogue key or project id differing only in case left the
project unusable (every later import failed with a DuckDB traceback).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.errors import AlreadyExists, InvalidParameter
from segport.services.data import SegmentSpec, catalog_entry
from segport.worker import Worker
from tests.conftest import PROJECT, USERS, Seeded, auth, csv_rows, write_users_csv


def _export_gio_ids(client: TestClient, worker: Worker, token: str, segment: str) -> list[str]:
    url = f"/v1/api/projects/{PROJECT}/segment_profiles/{segment}/export_jobs"
    job = client.post(url, json={"properties": []}, headers=auth(token)).json()
    worker.run_until_empty()
    uri = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(token)).json()["uris"][0]
    body = client.get("/download?file=" + uri, headers=auth(token)).content
    return [row[0] for row in csv_rows(body)[1:]]


def test_segment_key_differing_only_in_case_is_refused_and_the_first_keeps_its_members(
    app: App, client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    young = {"key": "usr_age", "op": "lt", "value": 26}
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_young", name="young", rule=young))
    before = _export_gio_ids(client, worker, seeded.token, "seg_young")
    with pytest.raises(AlreadyExists, match="seg_young"):
        app.data.create_segment(
            PROJECT, SegmentSpec(key="seg_YOUNG", name="everyone", rule={"key": "usr_age", "op": "gt", "value": 0})
        )
    assert [s.key for s in app.meta.segments(PROJECT)[0]].count("seg_YOUNG") == 0
    assert _export_gio_ids(client, worker, seeded.token, "seg_young") == before == ["2", "5"]


def test_catalogue_key_differing_only_in_case_is_refused_and_changes_nothing(
    app: App, seeded: Seeded, tmp_path: Path
) -> None:
    keys_before = list(app.meta.catalog(PROJECT).entries)
    with pytest.raises(InvalidParameter, match="usr_city"):
        app.data.add_catalog_entries(PROJECT, [catalog_entry("usr_City", "城市2", "string")])
    with pytest.raises(InvalidParameter, match="usr_Level"):
        app.data.add_catalog_entries(
            PROJECT, [catalog_entry("usr_level", "等级", "string"), catalog_entry("usr_Level", "等级2", "string")]
        )
    assert list(app.meta.catalog(PROJECT).entries) == keys_before
    report = app.data.import_users(PROJECT, write_users_csv(tmp_path / "again.csv", USERS[:1]))  # still usable
    assert report.rows_read == 1


def test_project_id_differing_only_in_case_is_refused(app: App, seeded: Seeded) -> None:
    with pytest.raises(AlreadyExists, match=PROJECT):
        app.meta.create_project(PROJECT.lower(), "twin")
    assert PROJECT.lower() not in {p.id for p in app.meta.projects()}
