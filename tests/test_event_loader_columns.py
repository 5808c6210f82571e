"""The loader's direct path (a page of spool batches as Arrow columns, one Parquet file) stores what the event
file the loader used to write (one CSV row per event, every value text) stores, on both engines: the same rows,
types, nulls, values that do not fit their declared type, device links and user properties; and a page loaded
twice (a crash between the engine's commit and mark_loaded) is stored once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from segport.app import App
from segport.domain.event_files import BATCH_COLUMN, TYPE_COLUMN
from segport.domain.events import ITEM
from segport.domain.keys import ValueType
from segport.services.events import EventService, _columns, _fit, _user_properties
from segport.store.events import EventSpool
from tests.conftest import ENGINES

T = 1777593600000  # 2026-05-01T00:00:00Z
DIRECT, BY_FILE = "Direct01", "Byfile01"


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each test on each engine (the app fixture builds the one named here)."""
    return str(request.param)


def ev(i: int, kind: str, user: str | None, device: str | None, attrs: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "t": T + i * 1000,
        "type": kind,
        "event": more.get("event", "buy" if kind == "CUSTOM" else None),
        "user_id": user,
        "user_key": None,
        "device_id": device,
        "attrs": attrs,
        "std": more.get("std", {}),
    }


BATCHES = [
    [  # a device seen alone first, then with a login: its anonymous history moves to the user
        ev(0, "CUSTOM", None, "D1", {"n": "5", "price": "1.5", "day": "2026-05-01", "note": "first"}),
        ev(1, "CUSTOM", "U1", "D1", {"n": " 7 ", "price": "2e3", "note": ""}, std={"path": "/a", "platform": "py"}),
        ev(2, "PAGE", "U2", None, {}, std={"path": "/p", "title": "Home"}),
        ev(3, "LOGIN_USER_ATTRIBUTES", "U1", None, {"vip": "yes", "level": "3"}),
    ],
    [  # values that do not fit their declared type, a control character, a key never seen, an item, a visitor
        ev(4, "CUSTOM", None, "D2", {"n": "x1", "price": "abc", "day": "May 1", "note": "bad\x01value"}),
        ev(5, "CUSTOM", "U1", None, {"n": "99999999999999999999", "fresh": "new key"}, event="refund"),
        {"t": T + 6000, "type": ITEM, "event": None, "attrs": {"id": "sku-1"}},
        ev(7, "VISITOR_ATTRIBUTES", None, "D2", {"city": "sh"}),
        ev(8, "LOGIN_USER_ATTRIBUTES", "U1", None, {"vip": "no"}),
        ev(9, "CUSTOM", "U3", "D1||D9", {"note": "two devices"}),
    ],
]


def service(app: App) -> EventService:
    return EventService(app.meta, app.engine, app.data)


def prepare(app: App, project: str) -> EventService:
    app.meta.create_project(project, project)
    events = service(app)
    events.declare(project, "n", "n", "int")
    events.declare(project, "price", "price", "double")
    events.declare(project, "day", "day", "date")
    return events


def by_file(events: EventService, project: str, batches: list[Any], folder: Path) -> None:
    """The spool batches as the event file the loader used to write: one CSV row per event, each attribute value
    fitted to its declared type (None when it does not fit), imported as any event file is; then the user
    properties."""
    declared = {a.key: a.type for a in events.catalog.attributes(project)}
    rows: list[dict[str, Any]] = []
    profiles: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        for e in batch.events:
            kind = e["type"]
            if kind == ITEM:
                continue
            row = {
                "event": e.get("event") or "$" + kind.lower(),
                "time": e["t"],
                "userId": e.get("user_id"),
                "userKey": e.get("user_key"),
                "deviceId": e.get("device_id"),
                TYPE_COLUMN: kind,
                BATCH_COLUMN: batch.id,
            }
            row |= {"$" + k: str(v) for k, v in e["std"].items()}
            if kind in ("LOGIN_USER_ATTRIBUTES", "VISITOR_ATTRIBUTES"):
                _user_properties(kind, e["user_id"], e["user_key"], e["device_id"], e["attrs"], profiles)
            else:
                row |= {k: _fit(v, declared.get(k, ValueType.STRING)) for k, v in e["attrs"].items()}
            rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = folder / "events.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(map(_cell, columns)) + "\n")
        for row in rows:
            f.write(",".join(_cell(row.get(c)) for c in columns) + "\n")
    events.import_events(project, path, file_format="csv")
    events._set_user_properties(project, profiles, folder)  # noqa: SLF001 - the loader's own step, shared


def _cell(value: Any) -> str:
    """A CSV field: text quoted, a number bare, a missing value an empty unquoted field (read as null)."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('"', '""') + '"'


def stored(app: App, project: str) -> dict[str, Any]:
    """Every stored event row (all columns as text, in a fixed order), the users' identities and properties,
    and the device links, as one engine or the other holds them."""
    engine: Any = app.engine
    if app.settings.engine == "clickhouse":
        from segport.engine.clickhouse import events as ch

        table = ch.events_table(engine, project)
        cols = sorted(ch.store_columns(engine, project))
        shown = ", ".join(f"toString(`{c}`)" if c != "$time" else "toUnixTimestamp64Milli(`$time`)" for c in cols)
        client = engine.client()
        rows = client.query(f"SELECT {shown} FROM {table} ORDER BY `$time`").result_rows
        users = client.query(f"SELECT * FROM {engine.table(engine.current(project).users)} ORDER BY gio_id")
        user_cols, user_rows = list(users.column_names), users.result_rows
        links = client.query(f"SELECT device, gio_id FROM {ch.links_table(engine, project)} ORDER BY 1").result_rows
        types = ch.store_columns(engine, project)
    else:
        from segport.engine.duckdb import events as dk
        from segport.engine.duckdb.sql import users_table

        with engine._cursor() as cur:  # noqa: SLF001 - the test reads the engine's own tables
            types = dk.store_columns(cur, project)
            cols = sorted(types)
            shown = ", ".join(f'CAST("{c}" AS VARCHAR)' if c != "$time" else 'epoch_ms("$time")' for c in cols)
            rows = cur.execute(f'SELECT {shown} FROM {dk.events_table(project)} ORDER BY "$time"').fetchall()
            users = cur.execute(f"SELECT * FROM {users_table(project)} ORDER BY gio_id")
            user_cols = [d[0] for d in users.description]
            user_rows = users.fetchall()
            links = cur.execute(
                f"SELECT device, gio_id FROM {dk.LINKS} WHERE project = ? ORDER BY 1", [project]
            ).fetchall()
    keep = [i for i, c in enumerate(user_cols) if c.startswith(("id_", "usr_")) or c == "gio_id"]
    return {
        "types": types,
        "rows": [tuple(None if v in (None, "\\N") else str(v) for v in r) for r in (tuple(x) for x in rows)],
        "users": sorted(
            tuple((user_cols[i], _plain(r[i])) for i in keep if _plain(r[i]) not in (None, "", [])) for r in user_rows
        ),
        "links": [tuple(x) for x in links],
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def test_the_direct_path_stores_what_the_event_file_stored(engine_name: str, app: App, tmp_path: Path) -> None:
    direct, reference = prepare(app, DIRECT), prepare(app, BY_FILE)
    spool = EventSpool(app.meta)
    for n, events in enumerate(BATCHES):
        assert spool.append(DIRECT, "ds1", f"k{n}", events)
    batches = spool.pending()
    table, _ = _columns(batches, {"n": ValueType.INT})
    assert table is not None and table.num_rows == 9  # the item is not stored
    done = direct.load_pending(spool, tmp_path / "scratch")
    assert (done.batches, done.events, done.set_aside) == (2, 9, 0)
    by_file(reference, BY_FILE, batches, tmp_path)
    got, want = stored(app, DIRECT), stored(app, BY_FILE)
    assert got["types"] == want["types"]
    assert got["rows"] == want["rows"]
    assert got["users"] == want["users"] and got["links"] == want["links"]
    # what the comparison stands on: the values that do not fit are null, the others typed, D1's history is U1's
    cols = sorted(got["types"])
    rows = [dict(zip(cols, r, strict=True)) for r in got["rows"]]
    price = [None if r["price"] is None else float(r["price"]) for r in rows if r["$event"] == "buy"]
    assert price == [1.5, 2000.0, None, None]
    assert [(r["n"], r["day"], r["note"]) for r in rows if r["$event"] == "buy"] == [
        ("5", "2026-05-01", "first"),
        ("7", None, ""),
        (None, None, None),
        (None, None, "two devices"),
    ]
    assert rows[0]["gio_id"] == rows[1]["gio_id"] and [d for d, _ in got["links"]] == ["D1", "D1||D9"]
    assert rows[2]["$event"] == "$page" and rows[2]["$path"] == "/p" and rows[2]["$title"] == "Home"
    assert got["types"]["fresh"] in ("VARCHAR", "Nullable(String)")
    u1 = next(dict(u) for u in got["users"] if dict(u).get("id_$basic_userId") == "U1")
    assert (u1["usr_vip"], u1["usr_level"]) == ("no", "3")  # the later event wins key by key
    assert any(dict(u).get("usr_city") == "sh" for u in got["users"])


def test_a_page_loaded_twice_is_stored_once(engine_name: str, app: App, tmp_path: Path) -> None:
    events = prepare(app, DIRECT)
    spool = EventSpool(app.meta)
    for n, batch in enumerate(BATCHES):
        spool.append(DIRECT, "ds1", f"k{n}", batch)
    page = spool.pending()
    events._load(DIRECT, page, tmp_path)  # noqa: SLF001 - the engine committed, then the process died
    once = stored(app, DIRECT)
    done = events.load_pending(spool, tmp_path)  # the same page again, as the next round reads it
    assert (done.batches, done.set_aside) == (2, 0)
    assert stored(app, DIRECT) == once and len(once["rows"]) == 9
    assert spool.pending() == []


WIRE = [  # SDK-shaped events: the common shape (a standard field of each kind, "" ids, userKey with and without userId)
    {"eventType": "CUSTOM", "timestamp": T, "eventName": "buy", "userId": "U1", "userKey": "", "deviceId": "D1",
     "attributes": {"sku": "s1", "price": "1.5"}, "platform": "python", "sdkVersion": "1.0.5", "sendTime": 0},
    {"eventType": "PAGE", "timestamp": T + 1, "deviceId": "D2", "userId": "", "userKey": "email", "path": "/p",
     "title": "", "screenWidth": 390},
    {"eventType": "LOGIN_USER_ATTRIBUTES", "timestamp": T + 2, "userId": "U1", "userKey": "email", "attributes": {"vip": "y"}},
    {"eventType": "VISITOR_ATTRIBUTES", "timestamp": T + 3, "deviceId": "D3", "attributes": {}},
    {"eventType": "VISIT", "timestamp": T + 4, "deviceId": "D3", "attributes": None, "eventName": "ignored"},
]  # fmt: skip
SDK = [  # growingio-tracker's keys alone (its 12-key struct decodes them): "" and null values, sendTime 0
    {"eventType": "CUSTOM", "sdkVersion": "1.0.5", "platform": "python", "timestamp": T, "eventName": "buy",
     "deviceId": "D1", "userKey": "", "userId": "U1", "attributes": {"sku": "s1"}, "sendTime": 0},
    {"eventType": "CUSTOM", "sdkVersion": "", "platform": None, "timestamp": T + 1, "eventName": "buy",
     "deviceId": "", "userKey": "email", "userId": "U2", "attributes": None, "sendTime": T},
    {"eventType": "LOGIN_USER_ATTRIBUTES", "timestamp": T + 2, "userId": "U1", "attributes": {"vip": "y"}},
    {"eventType": "VISIT", "timestamp": T + 3, "deviceId": "D3", "userId": "", "userKey": "email",
     "eventName": "ignored", "attributes": {}},
]  # fmt: skip
OTHER = [  # shapes the tuples are not made for (normalizing converts or checks them): a number attribute, a double
    [{"eventType": "CUSTOM", "timestamp": T, "eventName": "buy", "userId": "U1", "attributes": {"n": 3}}],
    [{"eventType": "PAGE", "timestamp": T, "deviceId": "D1", "latitude": 31.2}],
    [{"eventType": "PAGE", "timestamp": T, "deviceId": "D1", "unknownField": 1}],
]


@pytest.mark.parametrize("engine_name", ["duckdb"])
def test_the_tuples_of_a_wire_batch_are_what_normalizing_gives(engine_name: str) -> None:
    import json

    from segport.domain.events import json_event_rows, normalize_events
    from segport.services.events import _as_row
    from segport.store.events import decode_rows, encode_wire_payload

    def wire(events: list[dict[str, Any]]) -> bytes:
        return json.dumps([{**e, "dataSourceId": "ds1", "projectKey": "k1"} for e in events]).encode()

    now = T + 10_000
    normalize_events(json.loads(wire(WIRE)), "k1", now)  # the names seen, as the intake saw them before
    rows = json_event_rows(wire(WIRE), "k1", now)
    assert rows is not None and len(rows) == len(WIRE)
    assert rows == [_as_row(e) for e in normalize_events(json.loads(wire(WIRE)), "k1", now).events]
    assert rows[1][3:6] == (None, None, "D2") and rows[1][7] == {"path": "/p", "screenWidth": 390}
    assert rows[0][7] == {"platform": "python", "sdkVersion": "1.0.5", "sendTime": 0} and rows[0][4] is None
    sdk = json_event_rows(wire(SDK), "k1", now)  # the 12-key struct's rows, read from its slots
    assert sdk == [_as_row(e) for e in normalize_events(json.loads(wire(SDK)), "k1", now).events]
    assert sdk[0][7] == {"sdkVersion": "1.0.5", "platform": "python", "sendTime": 0} and sdk[0][4] is None
    assert sdk[1][5:8] == (None, {}, {"sendTime": T}) and sdk[1][4] == "email"
    assert sdk[3][2:6] == (None, None, None, "D3")
    for events in OTHER:
        normalize_events(json.loads(wire(events)), "k1", now)  # accepted by normalizing ...
        assert json_event_rows(wire(events), "k1", now) is None  # ... which the loader then takes
    assert decode_rows(encode_wire_payload("k1", wire(WIRE))) is not None  # (far in the past: no future skew)
