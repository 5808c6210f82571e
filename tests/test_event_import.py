"""History from files (`segport events import`), on both engines: all or nothing, bad files refused with the line
that is wrong, identities resolved to gio_id as profile imports do, the attribute catalogue recorded, a
time-bounded scan that reads only its time, and events read back through E18 and the metadata endpoints.
On DuckDB here; tests/test_event_import_clickhouse.py runs the same tests on ClickHouse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.domain.keys import CatalogEntry, KeyKind
from segport.errors import ImportRejected, KeyInUse
from segport.services.events import EventService
from tests.conftest import PROJECT, auth

T0 = 1777593600000  # 2026-05-01T00:00:00Z = 2026-05-01T08:00:00+08:00
T_2025 = 1735689600000  # 2025-01-01T00:00:00Z


def events(app: App) -> EventService:
    return EventService(app.meta, app.engine, app.data)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


CAMPAIGN = """event,time,userId,userKey,deviceId,amount,city
signup,2026-05-01T08:00:00+08:00,C001,,,,北京
buy,2026-05-01T09:30:00+08:00,C001,,,120,北京
view,1777600000000,,,d-77,,上海
buy,2026-05-02T10:00:00Z,C002,,,35,
"""


def test_import_stores_every_row_resolves_identities_and_records_the_catalogue(
    seeded: Any, tmp_path: Path, client: TestClient
) -> None:
    app = seeded.app
    ev = events(app)
    ev.declare(PROJECT, "amount", "金额", "int")
    report = ev.import_events(PROJECT, write(tmp_path / "e.csv", CAMPAIGN))
    assert (report.rows_read, report.stored) == (4, 4)
    # C001 and C002 are known users (the seed's profiles); the device d-77 is new: one user created
    assert report.users_created == 1
    assert {a.key: a.type.value for a in ev.catalog.attributes(PROJECT)} == {"amount": "int", "city": "string"}
    assert report.events == {"buy": ["amount", "city"], "signup": ["city"], "view": ["city"]}

    known = client.get(f"/v1/api/projects/{PROJECT}/users/$basic_userId/C001", headers=auth(seeded.token)).json()
    page = client.get(
        f"/cdp/api/v2/spaces/{PROJECT}/users/$basic_userId/C001/events?order=asc", headers=auth(seeded.token)
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["gioId"] == known["gioId"] != "0"
    assert [(v["event"], v["timestamp"], v["attributes"]) for v in body["values"]] == [
        ("signup", T0, {"city": "北京"}),
        ("buy", T0 + 5_400_000, {"amount": "120", "city": "北京"}),
    ]
    assert body["values"][0]["time"] == "2026-05-01T00:00:00.000Z" and body["values"][0]["eventType"] == "CUSTOM"
    device = client.get(
        f"/v1/api/projects/{PROJECT}/users/$anonymous_user/d-77/events", headers=auth(seeded.token)
    ).json()
    assert [v["event"] for v in device["values"]] == ["view"] and int(device["gioId"]) > 7


def test_the_same_file_twice_is_stored_twice_and_new_users_are_made_once(seeded: Any, tmp_path: Path) -> None:
    ev = events(seeded.app)
    f = write(tmp_path / "e.csv", CAMPAIGN)
    first, second = ev.import_events(PROJECT, f), ev.import_events(PROJECT, f)
    assert (first.users_created, second.users_created) == (1, 0)
    assert seeded.app.engine.count_events(PROJECT, 0, 2 * T0).events == 8


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "no-offset.csv",
            "event,time,userId\nbuy,1777600000000,C001\nbuy,2026-05-01T10:00:00,C001\n",
            "line 3 (row 2): time '2026-05-01T10:00:00' is not ISO 8601 with an offset",
        ),
        (
            "no-identity.csv",
            "event,time,userId,deviceId\nbuy,1777600000000,C001,\nbuy,1777600000000,,\n",
            "line 3 (row 2): no identity",
        ),
        (
            "bad-name.jsonl",
            '{"event":"buy","time":1777600000000,"userId":"C1"}\n{"event":"9x","time":1,"userId":"C1"}\n',
            "line 2: event name '9x' is not valid",
        ),
        (
            "bad-int.csv",
            "event,time,userId,amount\nbuy,1777600000000,C001,3\nbuy,1777600000000,C001,3.5\n",
            "line 3 (row 2): attribute amount: value '3.5' is not a valid int",
        ),
        ("old.csv", "event,time,userId\nbuy,1999-12-31T23:59:59Z,C001\n", "line 2 (row 1): time is before 2000-01-01"),
        ("future.csv", "event,time,userId\nbuy,2286-01-01T00:00:00Z,C001\n", "more than 24 hours in the future"),
        (
            "bad-key.csv",
            "event,time,userId,userKey\nbuy,1777600000000,C001,$nokey\n",
            "identity '$nokey' is not an identity in the catalogue",
        ),
        ("bad-gio.csv", "event,time,gio_id\nbuy,1777600000000,999999\n", "gio_id 999999 is not a user"),
        ("bad-column.csv", "event,time,userId,a-b\nbuy,1777600000000,C001,x\n", "not a valid event attribute key"),
        ("no-time.csv", "event,userId\nbuy,C001\n", "has no column 'time'"),
        (
            "control.csv",
            'event,time,userId,note\nbuy,1777600000000,C001,"a\x01b"\n',
            "line 2 (row 1): attribute note holds a control character",
        ),
    ],
)
def test_a_bad_file_is_refused_whole_naming_its_line(
    seeded: Any, tmp_path: Path, name: str, text: str, message: str
) -> None:
    ev = events(seeded.app)
    ev.declare(PROJECT, "amount", "", "int")
    ev.import_events(PROJECT, write(tmp_path / "ok.csv", CAMPAIGN))
    before = seeded.app.engine.count_events(PROJECT, 0, 2 * T0).events
    with pytest.raises(ImportRejected) as err:
        ev.import_events(PROJECT, write(tmp_path / name, text))
    assert message in err.value.message and name in err.value.message
    assert seeded.app.engine.count_events(PROJECT, 0, 2 * T0).events == before
    assert not any(a.key in ("note", "a-b") for a in ev.catalog.attributes(PROJECT))


def test_a_declared_type_never_changes(seeded: Any) -> None:
    ev = events(seeded.app)
    ev.declare(PROJECT, "amount", "金额", "int")
    ev.declare(PROJECT, "amount", "订单金额", "int")  # a new display name is fine
    with pytest.raises(KeyInUse):
        ev.declare(PROJECT, "amount", "", "string")


def test_parquet_types_are_kept_and_a_time_bounded_scan_reads_only_its_time(seeded: Any, tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    # 400,000 events over 400,000 minutes (about 9 months), 2,000 users
    duckdb.sql(
        f"COPY (SELECT 'e' || (i % 7) AS event, {T_2025} + i * 60000 AS time, 'C' || (i % 2000) AS userId, "
        f"i AS n, i / 4 AS price FROM range(400000) r(i)) TO '{path}' (FORMAT PARQUET)"
    )
    ev = events(seeded.app)
    report = ev.import_events(PROJECT, path)
    assert report.stored == 400000
    assert {a.key: a.type.value for a in report.new_attributes} == {"n": "int", "price": "double"}
    scan = seeded.app.engine.count_events(PROJECT, T_2025 + 86_400_000, T_2025 + 2 * 86_400_000)
    assert scan.events == 1440
    # one day of nine months: the scan reads a small part of the store (DuckDB: its row groups of 122,880
    # rows; ClickHouse: the granules of 8,192 rows in that month's partition)
    assert 1440 <= scan.rows_read <= 130_000, scan
    whole = seeded.app.engine.count_events(PROJECT, 0, 2 * T0)
    assert whole.events == 400000


def test_user_events_pages_orders_and_bounds(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    rows = ["event,time,userId,k"] + [f"e{i % 3},{T0 + (i // 2) * 1000},C003,{i}" for i in range(10)]
    events(seeded.app).import_events(PROJECT, write(tmp_path / "e.csv", "\n".join(rows) + "\n"))
    base = f"/v1/api/projects/{PROJECT}/users/$basic_userId/C003/events"

    def get(query: str) -> dict[str, Any]:
        r = client.get(base + query, headers=auth(seeded.token))
        assert r.status_code == 200, r.text
        return dict(r.json())

    everything = get("?order=asc&limit=100")
    times = [v["timestamp"] for v in everything["values"]]
    assert len(times) == 10 and times == sorted(times) and everything["hasNextPage"] is False
    newest = get("?limit=3")  # desc by default
    assert [v["timestamp"] for v in newest["values"]] == sorted(times, reverse=True)[:3]
    assert newest["hasNextPage"] is True
    paged: list[Any] = []
    for offset in range(0, 10, 4):
        paged += get(f"?order=asc&limit=4&offset={offset}")["values"]
    assert paged == everything["values"]
    bounded = get(f"?order=asc&startTime={T0 + 1000}&endTime={T0 + 3000}")
    assert [v["timestamp"] for v in bounded["values"]] == [T0 + 1000] * 2 + [T0 + 2000] * 2
    cdp = client.get(
        f"/cdp/api/v2/spaces/{PROJECT}/users/$basic_userId/C003/events?order=asc&limit=100", headers=auth(seeded.token)
    )
    assert cdp.json() == everything
    unknown = client.get(f"/v1/api/projects/{PROJECT}/users/$basic_userId/NOBODY/events", headers=auth(seeded.token))
    assert unknown.status_code == 200 and unknown.json()["gioId"] == "0" and unknown.json()["values"] == []


@pytest.mark.parametrize(
    "query",
    ["?order=sideways", "?limit=0", "?limit=1001", "?startTime=-1", "?startTime=5&endTime=5", "?limit=x"],
)
def test_user_events_bad_parameters_are_400s(seeded: Any, client: TestClient, query: str) -> None:
    r = client.get(f"/v1/api/projects/{PROJECT}/users/$basic_userId/C001/events{query}", headers=auth(seeded.token))
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) >= {"code", "message"}


def test_user_events_of_an_unknown_identity_or_another_project(seeded: Any, client: TestClient) -> None:
    r = client.get(f"/v1/api/projects/{PROJECT}/users/$nope/C001/events", headers=auth(seeded.token))
    assert r.status_code == 400 and r.json()["error"]["code"] == "UNKNOWN_KEY"
    r = client.get(f"/v1/api/projects/{PROJECT}/users/$basic_userId/C001/events", headers=auth(seeded.other_token))
    assert r.status_code == 404


def test_user_events_of_a_project_with_no_identities_yet_is_an_unknown_user(seeded: Any, client: TestClient) -> None:
    app = seeded.app
    app.meta.create_project("Fresh001", "没有用户的项目")
    _, token = app.meta.create_token(["Fresh001"])
    h = auth(token)
    assert app.meta.catalog("Fresh001").identities() == []
    # the identities events resolve on, and any other key while the project has no identity at all: nobody
    for key in ("$basic_userId", "$anonymous_user", "memberId"):
        for base in ("/v1/api/projects/Fresh001", "/cdp/api/v2/spaces/Fresh001"):
            r = client.get(f"{base}/users/{key}/C001/events?order=asc", headers=h)
            assert r.status_code == 200, r.text
            assert r.json() == {
                "gioId": "0", "limit": 100, "offset": 0, "order": "asc", "hasNextPage": False, "values": []
            }  # fmt: skip
    # the parameters are still checked
    r = client.get("/v1/api/projects/Fresh001/users/$basic_userId/C001/events?order=sideways", headers=h)
    assert r.status_code == 400
    # identities of its own but no events yet: the event identities are an unknown user, another key is not
    app.data.add_catalog_entries("Fresh001", [CatalogEntry("id_memberId", KeyKind.IDENTITY, "会员号")])
    r = client.get("/v1/api/projects/Fresh001/users/$anonymous_user/d-1/events", headers=h)
    assert r.status_code == 200 and r.json()["gioId"] == "0" and r.json()["values"] == []
    r = client.get("/v1/api/projects/Fresh001/users/$nope/C001/events", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "UNKNOWN_KEY"


def test_metadata_endpoints_list_events_and_variables(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    ev = events(seeded.app)
    ev.declare(PROJECT, "amount", "金额", "int", "order amount")
    ev.import_events(PROJECT, write(tmp_path / "e.csv", CAMPAIGN))
    h = auth(seeded.token)
    dim = client.get(f"/v1/api/projects/{PROJECT}/dim/events", headers=h).json()
    buy = next(e for e in dim if e["key"] == "buy")
    assert [a["key"] for a in buy["attrs"]] == ["amount", "city"] and buy["attrs"][0]["name"] == "金额"
    variables = client.get(f"/v1/api/projects/{PROJECT}/vars/events", headers=h).json()
    assert {v["key"]: v["type"] for v in variables} == {"amount": "Int", "city": "String"}
    peoples = client.get(f"/v1/api/projects/{PROJECT}/vars/peoples", headers=h).json()
    assert {"gender", "city", "age"} <= {p["key"] for p in peoples}
    assert client.get(f"/v1/api/projects/{PROJECT}/vars/visitors", headers=h).json() == []
    for payload in (dim, variables, peoples):  # gio-importer strips every string it reads: no nulls
        assert "null" not in json.dumps(payload)
    assert client.get(f"/v1/api/projects/{PROJECT}/dim/events", headers=auth(seeded.other_token)).status_code == 404


@pytest.mark.parametrize(
    ("filename", "body"),
    [
        ("garbage.csv", bytes(range(256)) * 4),
        ("garbage.parquet", b"PAR1" + bytes(range(200)) + b"PAR1"),
        ("garbage.jsonl", b'{"event": "buy", "time": [1, 2], "userId": {"a": 1}}\n{not json\n'),
        ("ragged.csv", b"event,time,userId\nbuy,1777600000000,C001,extra,cells\n"),
        ("nested.jsonl", b'{"event": "buy", "time": 1777600000000, "userId": "C001", "obj": {"a": 1}}\n'),
        ("dup.csv", b"event,time,userId,a,a\nbuy,1777600000000,C001,1,2\n"),
        ("empty.csv", b""),
        ("header-only.csv", b"event,time,userId\n"),
    ],
)
def test_any_file_through_the_admin_api_is_stored_or_refused_with_a_4xx(
    seeded: Any, client: TestClient, filename: str, body: bytes
) -> None:
    r = client.post(
        f"/admin/v1/projects/{PROJECT}/events/import?filename={filename}",
        content=body,
        headers={**auth(seeded.admin_token), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "IMPORT_REJECTED" and filename in r.json()["error"]["message"]
    else:
        assert r.json()["stored"] == 0
