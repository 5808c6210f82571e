"""``SEGPORT_EXCEL_SAFE=true`` on every engine (issue 23): OWASP's formula characters = + - @ TAB CR at the start of
a string cell or of a display name in a CSV header get a leading quote, and DuckDB and ClickHouse write the same
bytes. Real HTTP (in-process) against an app per engine; ClickHouse through chdb."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from segport.domain.export import excel_safe_text
from segport.roles.inline import build, create_app
from segport.services.data import SegmentSpec
from segport.settings import Settings
from segport.worker import Worker
from tests.conftest import ENGINES, auth, write_users_csv

P = "Excel001"
HYPERLINK = '=HYPERLINK("http://x","y")'
CATALOG = f'''key,name,type
id_$basic_userId,用户ID,string
usr_note,"{HYPERLINK.replace('"', '""')}",string
usr_plus,+plus,string
usr_tags,@tags,string[]
usr_n,-n,int
'''
COLS = ["id_$basic_userId", "usr_note", "usr_plus", "usr_tags", "usr_n"]
USERS: list[dict[str, str | None]] = [
    {"id_$basic_userId": "U1", "usr_note": "\t=1+1", "usr_plus": "\r=1+1", "usr_tags": "\t=a||b", "usr_n": "-5"},
    {"id_$basic_userId": "U2", "usr_note": "\tplain tab", "usr_plus": "\rcr", "usr_tags": "=x||\ty", "usr_n": "7"},
    {"id_$basic_userId": "U3", "usr_note": "a\t=b", "usr_plus": " =1", "usr_tags": None, "usr_n": None},
    {"id_$basic_userId": "U4", "usr_note": "=SUM(A1)", "usr_plus": "-1", "usr_tags": "@at", "usr_n": "0"},
    {"id_$basic_userId": "U5", "usr_note": "", "usr_plus": None, "usr_tags": "ok", "usr_n": "1"},
]
EXPORT = f"/v1/api/projects/{P}/segment_profiles/seg_all/export_jobs"


def _export_all(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> dict[str, bytes]:
    """An excel-safe app on ``engine``: each export's file, by request."""
    settings: dict[str, Any] = {"data_dir": tmp_path / engine, "serve_workers": False, "excel_safe": True}
    if engine == "clickhouse":
        folder = request.getfixturevalue("chdb_dir")
        settings |= {"engine": "clickhouse", "clickhouse_url": f"chdb://{folder}?database=x_{uuid.uuid4().hex[:12]}"}
    app = build(Settings(**settings))
    try:
        app.meta.create_project(P, "excel")
        app.data.import_catalog_csv(P, CATALOG)
        app.data.import_users(P, write_users_csv(tmp_path / f"{engine}.csv", USERS, COLS))
        rule = {"key": "id_$basic_userId", "op": "not_null"}
        app.data.create_segment(P, SegmentSpec(key="seg_all", name="all", rule=rule))
        _, token = app.meta.create_token([P])
        files = {}
        with TestClient(create_app(app, run_workers=False)) as client:
            for label, body in {
                "csv-key": {"properties": COLS},
                "csv-name": {"properties": COLS, "csvHeaderType": "name"},
                "json": {"properties": COLS, "fileFormat": "json"},
            }.items():
                job = client.post(EXPORT, headers=auth(token), json=body)
                assert job.status_code == 200, job.text
                Worker(app, threads=1).run_until_empty()
                result = client.get(f"/v1/api/job/result/{job.json()['id']}", headers=auth(token)).json()
                assert result["stage"] == "FINISH", result
                files[label] = client.get("/download?file=" + result["uris"][0], headers=auth(token)).content
        return files
    finally:
        app.close()


def test_excel_safe_prefixes_tab_cr_and_display_names_alike_on_every_engine(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    files = {engine: _export_all(tmp_path, engine, request) for engine in ENGINES}
    assert files["clickhouse"] == files["duckdb"]  # byte for byte, every request
    got = files["duckdb"]

    by_name = list(csv.reader(io.StringIO(got["csv-name"].decode(), newline="")))
    assert by_name[0] == ["gio_id", "用户ID", "'" + HYPERLINK, "'+plus", "'@tags", "'-n"]
    assert list(csv.reader(io.StringIO(got["csv-key"].decode(), newline="")))[0] == ["gio_id", *COLS]
    rows = by_name[1:]
    assert [r[2] for r in rows] == ["'\t=1+1", "'\tplain tab", "a\t=b", "'=SUM(A1)", ""]
    assert [r[3] for r in rows] == ["'\r=1+1", "'\rcr", " =1", "'-1", ""]
    assert [r[4] for r in rows] == ["'\t=a||b", "'=x||\ty", "", "'@at", "ok"]
    assert [r[5] for r in rows] == ["-5", "7", "", "0", "1"]  # numbers are never formulas
    assert by_name[1:] == list(csv.reader(io.StringIO(got["csv-key"].decode(), newline="")))[1:]

    lines = [json.loads(line) for line in got["json"].decode().splitlines()]
    assert [x["properties"]["usr_plus"] for x in lines] == ["'\r=1+1", "'\rcr", " =1", "'-1", None]


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("=1", "'=1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@a", "'@a"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\t", "'\t"),
        ("a=1", "a=1"),
        (" =1", " =1"),
        ("\n=1", "\n=1"),
        ("", ""),
    ],
)
def test_excel_safe_text_knows_owasps_leading_characters(text: str, safe: str) -> None:
    assert excel_safe_text(text) == safe
