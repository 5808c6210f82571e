"""Documented promises (docs/api.md) about export files that no other test held: parts (`max_file_rows`) and display-name
headers that collide."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.services.data import catalog_entry
from segport.settings import Settings
from segport.worker import Worker
from tests.conftest import PROJECT, Seeded, auth, engine_settings
from tests.expected import expected_csv, expected_jsonl, members, parse_jsonl
from tests.test_seed_api import EXPORT

KEYS = ["id_$basic_userId", "usr_city", "tag_rfm"]


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    return Settings(data_dir=tmp_path / "data", serve_workers=False, max_file_rows=4, **engine_settings(request))


def _export(client: TestClient, worker: Worker, token: str, body: dict) -> list[tuple[str, bytes]]:
    job = client.post(EXPORT, headers=auth(token), json=body).json()
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(token)).json()
    assert result["stage"] == "FINISH", result
    return [
        (unquote(uri).rsplit("/", 1)[1], client.get("/download?file=" + uri, headers=auth(token)).content)
        for uri in result["uris"]
    ]


def test_max_file_rows_splits_the_export_into_numbered_parts_each_with_its_header(
    client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    files = _export(client, worker, seeded.token, {"properties": KEYS})
    rows = members()  # 6 members, 4 a part
    assert [name.split("_", 2)[2] for name, _ in files] == ["UserList_1.csv", "UserList_2.csv"]
    assert [content for _, content in files] == [expected_csv(KEYS, rows=rows[:4]), expected_csv(KEYS, rows=rows[4:])]


def test_max_file_rows_splits_json_lines_too(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    files = _export(client, worker, seeded.token, {"properties": KEYS, "fileFormat": "json"})
    assert [name.endswith(f"_UserList_{i}.json") for i, (name, _) in enumerate(files, 1)] == [True, True]
    assert [line for _, content in files for line in parse_jsonl(content)] == expected_jsonl(KEYS)


def test_display_names_that_collide_get_their_key_appended(
    app: App, client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    app.data.add_catalog_entries(
        PROJECT, [catalog_entry("tag_city", "城市", "string"), catalog_entry("usr_x", "GIO_ID", "string")]
    )
    keys = ["usr_city", "tag_city", "usr_x", "usr_gender"]
    files = _export(client, worker, seeded.token, {"properties": keys, "csvHeaderType": "name"})
    header = b"".join(content for _, content in files[:1]).split(b"\n", 1)[0].decode()
    assert header == '"gio_id","城市 (usr_city)","城市 (tag_city)","GIO_ID (usr_x)","性别"'
