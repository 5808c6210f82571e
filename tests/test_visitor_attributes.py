"""VISITOR_ATTRIBUTES set the properties of the user a device id resolves to, and profile imports match on a
multi-valued identity (docs/events.md, "User properties"; docs/operations.md, "Profile imports"): events posted
through the real collect endpoint and loaded by the loader, read back with E11 and an export; the importer's
containment rule (the lowest gio_id) and its refusals directly, through the admin API and the CLI. On DuckDB
here; tests/test_visitor_attributes_clickhouse.py runs them on ClickHouse."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from segport.cli import cli
from segport.errors import ImportRejected
from segport.roles.inline import build
from segport.services.data import SegmentSpec
from segport.settings import Settings
from segport.store.events import DataSources
from segport.worker import Worker
from tests.conftest import PROJECT, Seeded, auth, csv_rows, write_users_csv
from tests.test_event_loader import loader

DEVICE = "id_$anonymous_user"
LOGIN = "id_$basic_userId"
NOW = int(time.time() * 1000) - 600_000


def post(client: TestClient, key: str, source: str, events: list[dict[str, Any]], stm: int) -> None:
    body = [{"dataSourceId": source, "projectKey": key, "platform": "web", **e} for e in events]
    r = client.post(
        f"/v3/projects/{key}/collect?stm={stm}", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text


def visitor(t: int, device: str, **attributes: str) -> dict[str, Any]:
    return {"eventType": "VISITOR_ATTRIBUTES", "timestamp": NOW + t, "deviceId": device, "attributes": attributes}


def custom(t: int, name: str, device: str, user: str | None = None) -> dict[str, Any]:
    event = {"eventType": "CUSTOM", "eventName": name, "timestamp": NOW + t, "deviceId": device}
    return {**event, "userId": user} if user else event


def profile(client: TestClient, token: str, identity: str, value: str) -> dict[str, Any]:
    r = client.get(f"/v1/api/projects/{PROJECT}/users/{identity}/{value}", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


def export(client: TestClient, worker: Worker, token: str, segment: str, keys: list[str]) -> list[dict[str, Any]]:
    url = f"/v1/api/projects/{PROJECT}/segment_profiles/{segment}/export_jobs"
    created = client.post(url, headers=auth(token), json={"properties": keys, "fileFormat": "csv"})
    assert created.status_code == 200, created.text
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{created.json()['id']}", headers=auth(token)).json()
    assert result["stage"] == "FINISH", result
    download = client.get("/download?file=" + result["uris"][0], headers=auth(token))
    assert download.status_code == 200, download.text
    header, *rows = csv_rows(download.content)
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_visitor_attributes_become_the_anonymous_users_properties(
    seeded: Seeded, tmp_path: Path, client: TestClient, worker: Worker
) -> None:
    app, token = seeded.app, seeded.token
    key, source = DataSources(app.db).add(PROJECT, "web")
    load = loader(app, tmp_path)
    # an anonymous visitor on vis-1 (a new user, made by its first event), with properties set twice in one batch
    post(
        client,
        key,
        source,
        [custom(1, "browse", "vis-1"), visitor(2, "vis-1", city="杭州", plan="free"), visitor(3, "vis-1", plan="pro")],
        NOW + 10,
    )
    # d2 is the second device of the seeded login user C001: its visitor properties are C001's
    post(client, key, source, [visitor(4, "d2", plan="team")], NOW + 11)
    load.run_once()
    anonymous = profile(client, token, "$anonymous_user", "vis-1")
    assert anonymous["properties"]["usr_city"] == "杭州"
    assert anonymous["properties"]["usr_plan"] == "pro"  # the later event wins
    assert anonymous["identifications"]["ids_$anonymous_user"] == ["vis-1"]  # the identity matched on is left as it was
    c001 = profile(client, token, "$basic_userId", "C001")
    assert c001["properties"]["usr_plan"] == "team" and c001["identifications"]["ids_$anonymous_user"] == ["d1", "d2"]
    assert c001["properties"]["usr_city"] == "北京"  # a key no event named keeps its value
    assert app.meta.catalog(PROJECT).get("usr_plan") is not None  # a new usr_ key, in the catalogue
    # a later round overrides key by key
    # (a device id holding "||", the profile file's list separator, sets nothing; its event is stored all the same)
    post(client, key, source, [visitor(5, "vis-1", city="苏州"), visitor(6, "x||y", plan="odd")], NOW + 12)
    assert load.run_once().events == 2
    again = profile(client, token, "$anonymous_user", "vis-1")
    assert again["gioId"] == anonymous["gioId"]
    assert (again["properties"]["usr_city"], again["properties"]["usr_plan"]) == ("苏州", "pro")
    odd = profile(client, token, "$anonymous_user", "x||y")
    assert odd["gioId"] != "0" and odd["properties"]["usr_plan"] is None
    # and an export shows them
    app.data.create_segment(
        PROJECT, SegmentSpec(key="seg_planned", name="有套餐", rule={"key": "usr_plan", "op": "not_null"})
    )
    rows = export(client, worker, token, "seg_planned", [DEVICE, "usr_city", "usr_plan"])
    assert sorted((r[DEVICE], r["usr_city"], r["usr_plan"]) for r in rows) == [
        ("d1||d2", "北京", "team"),
        ("vis-1", "苏州", "pro"),
    ]


def test_a_device_linked_to_a_login_user_sets_that_users_properties(
    seeded: Seeded, tmp_path: Path, client: TestClient
) -> None:
    app, token = seeded.app, seeded.token
    key, source = DataSources(app.db).add(PROJECT, "web")
    load = loader(app, tmp_path)
    post(client, key, source, [custom(1, "browse", "lnk-1"), visitor(2, "lnk-1", level="silver")], NOW + 10)
    load.run_once()
    anonymous = profile(client, token, "$anonymous_user", "lnk-1")
    assert anonymous["properties"]["usr_level"] == "silver"
    # VIP9 logs in on lnk-1 (the device is linked to VIP9), and the same batch sets the device's properties
    post(client, key, source, [custom(3, "login", "lnk-1", "VIP9"), visitor(4, "lnk-1", level="gold")], NOW + 11)
    load.run_once()
    vip = profile(client, token, "$basic_userId", "VIP9")
    assert vip["gioId"] != anonymous["gioId"]
    assert vip["properties"]["usr_level"] == "gold"  # the user the device resolves to, as its events do
    # a link does not put the device in the login user's list
    assert vip["identifications"]["ids_$anonymous_user"] is None
    # the device now answers its login user in a lookup too (docs/api.md, E10/E11), while the anonymous user's
    # row stays as it was (docs/events.md, "Identity links"): one user holds silver
    assert profile(client, token, "$anonymous_user", "lnk-1")["gioId"] == vip["gioId"]
    silver = {"key": "usr_level", "op": "eq", "value": "silver"}
    assert app.data.create_segment(PROJECT, SegmentSpec(key="seg_silver", name="银", rule=silver)).total_users == 1
    post(client, key, source, [visitor(5, "lnk-1", level="platinum")], NOW + 12)
    load.run_once()
    assert profile(client, token, "$basic_userId", "VIP9")["properties"]["usr_level"] == "platinum"


def lookup(seeded: Seeded, identity: str, value: str) -> dict[str, Any]:
    catalog = seeded.app.meta.catalog(PROJECT)
    found = seeded.app.engine.lookup_user(PROJECT, catalog, catalog.entries[identity], value)
    assert found is not None, value
    return found


def test_a_multi_valued_match_takes_the_lowest_gio_id_holding_the_value(seeded: Seeded, tmp_path: Path) -> None:
    app = seeded.app
    # C003 (gio_id 3) and C007 (gio_id 7) both hold dup: a value held by two users
    app.data.import_users(
        PROJECT,
        write_users_csv(
            tmp_path / "dup.csv", [{LOGIN: "C007", DEVICE: "dup"}, {LOGIN: "C003", DEVICE: "dup"}], [LOGIN, DEVICE]
        ),
    )
    rows = [
        {DEVICE: "dup", "usr_city": "甲"},
        {DEVICE: "d9", "usr_city": "乙"},  # C006's device
        {DEVICE: "d1", "usr_city": "丙"},  # C001's first device ...
        {DEVICE: "d2", "usr_city": "丁"},  # ... and its second: of two rows of one user, the later wins
        {DEVICE: "fresh-1", "usr_city": "戊"},  # no one holds it: a new user holding only it
    ]
    report = app.data.import_users(
        PROJECT, write_users_csv(tmp_path / "m.csv", rows, [DEVICE, "usr_city"]), match="$anonymous_user"
    )
    assert (report.rows_read, report.updated, report.inserted) == (5, 3, 1)
    assert (lookup(seeded, LOGIN, "C003")["usr_city"], lookup(seeded, LOGIN, "C007")["usr_city"]) == ("甲", "广州")
    assert lookup(seeded, LOGIN, "C006")["usr_city"] == "乙"
    c001 = lookup(seeded, LOGIN, "C001")
    assert (c001["usr_city"], c001[DEVICE]) == ("丁", ["d1", "d2"])
    new = lookup(seeded, DEVICE, "fresh-1")
    assert (str(new["gio_id"]), new["usr_city"], new[LOGIN]) == ("8", "戊", None)
    # most users matched (the DuckDB engine rewrites its table rather than update it): the same rule
    everyone = [{DEVICE: d, "usr_age": str(n)} for n, d in enumerate(["d1", "dup", "d9", "fresh-1", "fresh-2"])]
    report = app.data.import_users(
        PROJECT, write_users_csv(tmp_path / "all.csv", everyone, [DEVICE, "usr_age"]), match="$anonymous_user"
    )
    assert (report.updated, report.inserted) == (4, 1)
    ages = {u: str(lookup(seeded, LOGIN, u)["usr_age"]) for u in ("C001", "C003", "C006", "C007")}
    assert ages == {"C001": "0", "C003": "1", "C006": "2", "C007": "33"}
    assert lookup(seeded, LOGIN, "C003")[DEVICE] == ["dup"]
    fresh = (lookup(seeded, DEVICE, "fresh-1")["usr_age"], lookup(seeded, DEVICE, "fresh-2")["gio_id"])
    assert tuple(map(str, fresh)) == ("3", "9")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("a||b", "row 2: id_$anonymous_user must hold exactly one value: users are matched on it"),
        (None, "row 2: id_$anonymous_user must hold exactly one value: users are matched on it"),
        ("x\x01y", "row 2: key id_$anonymous_user: value 'x\\x01y' holds the control character U+0001"),
    ],
    ids=["two-values", "no-value", "control-character"],
)
def test_a_multi_valued_match_needs_one_value_per_row(
    seeded: Seeded, tmp_path: Path, value: str | None, why: str
) -> None:
    app = seeded.app
    rows = [{DEVICE: "d9", "usr_city": "x"}, {DEVICE: value, "usr_city": "y"}]
    with pytest.raises(ImportRejected) as refused:
        app.data.import_users(PROJECT, write_users_csv(tmp_path / "bad.csv", rows, [DEVICE, "usr_city"]), match=DEVICE)
    assert refused.value.message.startswith(why)
    assert lookup(seeded, LOGIN, "C006")["usr_city"] == "-1+2"  # all or nothing


def test_the_admin_api_refuses_a_second_value_with_the_error_shape(seeded: Seeded, client: TestClient) -> None:
    r = client.post(
        f"/admin/v1/projects/{PROJECT}/users/import",
        headers=auth(seeded.admin_token),
        params={"format": "csv", "match": "$anonymous_user"},
        content=b"id_$anonymous_user,usr_city\nd9,x\n",
    )
    assert r.status_code == 200, r.text
    assert (r.json()["rowsRead"], r.json()["updated"], r.json()["inserted"]) == (1, 1, 0)
    r = client.post(
        f"/admin/v1/projects/{PROJECT}/users/import",
        headers=auth(seeded.admin_token),
        params={"format": "csv", "match": "$anonymous_user"},
        content=b"id_$anonymous_user,usr_city\nd9,x\nd1||d2,y\n",
    )
    assert r.status_code == 400, r.text
    assert r.json() == {
        "error": {
            "code": "IMPORT_REJECTED",
            "message": "row 2: id_$anonymous_user must hold exactly one value: users are matched on it",
        }
    }


def test_the_cli_imports_a_parquet_file_matched_on_the_device_id(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--data-dir", str(data), *args])
        assert result.exit_code == 0, result.stderr
        return result.stdout

    run("project", "create", PROJECT, "--name", "p")
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("key,name,type\nid_$basic_userId,u,string\nid_$anonymous_user,d,string[]\nusr_city,c,string\n")
    run("catalog", "import", "--project", PROJECT, str(catalog))
    first = write_users_csv(
        tmp_path / "u.csv", [{LOGIN: "U1", DEVICE: "a||b"}, {LOGIN: "U2", DEVICE: "b"}], [LOGIN, DEVICE]
    )
    run("users", "import", "--project", PROJECT, str(first))
    table = pa.table({DEVICE: [["b"], ["c"]], "usr_city": ["北京", "上海"]})
    pq.write_table(table, tmp_path / "by_device.parquet")
    out = run(
        "users", "import", "--project", PROJECT, str(tmp_path / "by_device.parquet"), "--match", "$anonymous_user"
    )
    assert "2 rows read, 1 users inserted, 1 updated" in out
    app = build(Settings(data_dir=data))
    try:
        catalog = app.meta.catalog(PROJECT)
        u1 = app.engine.lookup_user(PROJECT, catalog, catalog.entries[LOGIN], "U1")
        u2 = app.engine.lookup_user(PROJECT, catalog, catalog.entries[LOGIN], "U2")
        c = app.engine.lookup_user(PROJECT, catalog, catalog.entries[DEVICE], "c")
    finally:
        app.close()
    assert u1 is not None and u2 is not None and c is not None
    assert (u1["usr_city"], u1[DEVICE], u2["usr_city"]) == ("北京", ["a", "b"], None)  # b: U1, the lowest gio_id
    assert (str(c["gio_id"]), c["usr_city"], c[DEVICE]) == ("3", "上海", ["c"])
