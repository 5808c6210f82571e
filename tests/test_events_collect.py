"""The collect endpoints over HTTP (in process): what each encoding and each bad input gets, what is stored.

The real SDK sends to a real served segport in tests/test_events_sdk.py; these tests build the bodies the way the
SDK's encoders do (JSON, snappy via cramjam, XOR, gzip, protobuf by hand) to cover every refusal.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import msgspec
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from segport.app import App
from segport.cli import cli
from segport.domain import events as ev_domain
from segport.domain.events import (
    MAX_ATTRIBUTES,
    MAX_DECODED_BYTES,
    MAX_EVENTS,
    check_events,
    check_json_events,
    decode_events,
    decode_items,
    encoding_of,
    json_is_clean,
    normalize_events,
    normalize_items,
)
from segport.errors import InvalidEvent, SegportError
from segport.roles.inline import create_app
from segport.services.collect import RESOLVE_TTL_S
from segport.store.events import DataSources, EventSpool
from tests.conftest import auth

P = "Evproj01"
NOW = int(time.time() * 1000)


@pytest.fixture
def setup(app: App) -> Iterator[tuple[TestClient, str, str]]:
    app.meta.create_project(P, "events")
    key, source = DataSources(app.db).add(P, "web")
    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as c:
        yield c, key, source


def event(source: str, key: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventType": "CUSTOM",
        "sdkVersion": "1.0.5",
        "platform": "python",
        "timestamp": NOW,
        "eventName": "buy",
        "deviceId": "dev-1",
        "userId": "u-1",
        "attributes": {"price": "9.5", "items": "a||b"},
        "dataSourceId": source,
        "projectKey": key,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not ...}


def post(c: TestClient, key: str, body: bytes, stm: int | None = NOW, **headers: str) -> Any:
    url = f"/v3/projects/{key}/collect" + (f"?stm={stm}" if stm is not None else "")
    sent = {"content-type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return c.post(url, content=body, headers=sent)


def pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return pb_varint(number << 3) + pb_varint(value)
    return pb_varint(number << 3 | 2) + pb_varint(len(value)) + value


def pb_event(source: str, key: str, name: str = "buy", ts: int = NOW, attrs: dict[str, str] | None = None) -> bytes:
    body = pb_field(1, b"dev-1") + pb_field(2, b"u-1") + pb_field(5, source.encode()) + pb_field(6, 1)
    body += pb_field(7, b"python") + pb_field(8, ts) + pb_field(22, name.encode()) + pb_field(53, key.encode())
    for k, v in (attrs or {"price": "9.5"}).items():
        body += pb_field(24, pb_field(1, k.encode()) + pb_field(2, v.encode()))
    return body


def stored(app: App) -> list[list[dict[str, Any]]]:
    return [b.events for b in EventSpool(app.db).pending(1000)]


# --- what is accepted ------------------------------------------------------------------------------------
def test_json_batch_is_stored_normalized(app: App, setup: tuple[TestClient, str, str]) -> None:
    c, key, source = setup
    batch = [
        event(source, key, attributes={"price": 9.5, "n": 3, "ok": True, "tags": ["a", "b"], "gone": None}),
        event(source, key, eventType="PAGE", eventName=..., userId=..., path="/home", title="首页", index=2),
        event(source, key, eventType="LOGIN_USER_ATTRIBUTES", eventName=..., userKey="$email", userId="a@b.c"),
    ]
    r = post(c, key, json.dumps(batch).encode())
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "duplicate": False}
    [events] = stored(app)
    assert events[0] == {
        "t": NOW,
        "type": "CUSTOM",
        "event": "buy",
        "user_id": "u-1",
        "user_key": None,
        "device_id": "dev-1",
        "attrs": {"price": "9.5", "n": "3", "ok": "true", "tags": "a||b"},
        "std": {"platform": "python", "sdkVersion": "1.0.5"},
    }
    assert events[1]["type"] == "PAGE" and events[1]["event"] is None and events[1]["user_id"] is None
    assert events[1]["std"] == {
        "platform": "python",
        "sdkVersion": "1.0.5",
        "path": "/home",
        "title": "首页",
        "index": 2,
    }
    assert events[2]["type"] == "LOGIN_USER_ATTRIBUTES" and events[2]["user_key"] == "$email"


@pytest.mark.parametrize("codec", ["snappy", "snappy+xor", "gzip", "snappy+xor+gzip", "protobuf", "protobuf+gzip"])
def test_every_encoding_gives_the_same_events(app: App, setup: tuple[TestClient, str, str], codec: str) -> None:
    c, key, source = setup
    headers: dict[str, str] = {}
    if codec.startswith("protobuf"):
        body = pb_field(1, pb_event(source, key)) + pb_field(1, pb_event(source, key, name="pay"))
        headers["content-type"] = "application/protobuf"
        stm = None
    else:
        body = json.dumps(
            [
                event(source, key, attributes={"price": "9.5"}),
                event(source, key, eventName="pay", attributes={"price": "9.5"}),
            ]
        )
        body = body.encode()
        stm = NOW + 7
        if "snappy" in codec:
            body = bytes(cramjam.snappy.compress_raw(body))
            headers["x-compress-codec"] = "2"
        if "xor" in codec:
            body = bytes(b ^ (stm & 0xFF) for b in body)
            headers["x-crypt-codec"] = "1"
    if "gzip" in codec:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    r = post(c, key, body, stm=stm, **headers)
    assert r.status_code == 200, r.text
    [events] = stored(app)
    assert [(e["event"], e["user_id"], e["device_id"], e["attrs"]) for e in events] == [
        ("buy", "u-1", "dev-1", {"price": "9.5"}),
        ("pay", "u-1", "dev-1", {"price": "9.5"}),
    ]
    assert events[0]["std"]["platform"] == "python"


def test_the_same_request_twice_is_stored_once_and_a_new_stm_is_a_new_batch(
    app: App, setup: tuple[TestClient, str, str]
) -> None:
    c, key, source = setup
    body = json.dumps([event(source, key)]).encode()
    assert post(c, key, body).json() == {"accepted": 1, "duplicate": False}
    assert post(c, key, body).json() == {"accepted": 1, "duplicate": True}
    assert post(c, key, body, stm=NOW + 1).json() == {"accepted": 1, "duplicate": False}
    pb = pb_field(1, pb_event(source, key))
    assert post(c, key, pb, stm=None, content_type="application/protobuf").json()["duplicate"] is False
    assert post(c, key, pb, stm=None, content_type="application/protobuf").json()["duplicate"] is True
    assert len(stored(app)) == 3


def test_items_json_and_protobuf(app: App, setup: tuple[TestClient, str, str]) -> None:
    c, key, source = setup
    items = [{"key": "product", "id": "p1", "attributes": {"color": "red"}, "dataSourceId": source, "projectKey": key}]
    r = c.post(f"/projects/{key}/collect/item?stm={NOW}", json=items)
    assert r.status_code == 200, r.text
    pb = pb_field(2, pb_field(1, b"p2") + pb_field(2, b"product") + pb_field(4, source.encode()))
    r = c.post(f"/projects/{key}/collect/item", content=pb, headers={"content-type": "application/protobuf"})
    assert r.status_code == 200, r.text
    first, second = stored(app)
    assert first[0]["type"] == "ITEM" and first[0]["std"] == {"itemKey": "product", "itemId": "p1"}
    assert first[0]["attrs"] == {"color": "red"}
    assert second[0]["std"] == {"itemKey": "product", "itemId": "p2"} and second[0]["attrs"] == {}


# --- what is refused --------------------------------------------------------------------------------------
def _bad_cases(key: str, source: str) -> list[tuple[str, bytes, dict[str, Any], int, str, str]]:
    """(id, body, request options, status, code, words in the message)"""

    def j(*events: Any) -> bytes:
        return json.dumps(list(events)).encode()

    ok = event(source, key)
    big_attrs = {f"k{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}
    return [
        ("malformed-json", b'[{"eventType": "CUSTOM",', {}, 400, "INVALID_BODY", "not valid JSON"),
        ("not-an-array", b'{"eventType": "CUSTOM"}', {}, 400, "INVALID_BODY", "JSON array"),
        ("empty", b"[]", {}, 400, "INVALID_BODY", "no events"),
        ("not-an-object", j(ok, 5), {}, 400, "INVALID_EVENT", "event 1: must be a JSON object"),
        ("malformed-protobuf", b"\x0a\xff\xff", {"ct": "application/protobuf"}, 400, "INVALID_BODY", "protobuf"),
        ("protobuf-bad-utf8", pb_field(1, pb_field(22, b"\xff\xfe")), {"ct": "application/protobuf"}, 400,
         "INVALID_BODY", "UTF-8"),
        ("malformed-snappy", b"\x20\xff\xff\xff\xffxx", {"snappy": True}, 400, "INVALID_BODY", "snappy"),
        ("wrong-xor", bytes(b ^ 0x55 for b in bytes(cramjam.snappy.compress_raw(j(ok)))), {"snappy": True, "xor": True},
         400, "INVALID_BODY", "XOR"),
        ("xor-without-stm", j(ok), {"xor": True, "stm": None}, 400, "INVALID_BODY", "stm"),
        ("malformed-gzip", b"\x1f\x8b\x08\x00garbage", {"gzip": True}, 400, "INVALID_BODY", "gzip"),
        ("unknown-codec", j(ok), {"codec": "7"}, 400, "INVALID_BODY", "X-Compress-Codec"),
        ("content-type", j(ok), {"ct": "text/csv"}, 400, "INVALID_BODY", "Content-Type"),
        ("bad-stm", j(ok), {"stm": "soon"}, 400, "INVALID_BODY", "stm"),
        ("gzip-bomb", gzip.compress(b"[" + b" " * (MAX_DECODED_BYTES + 10) + b"]"), {"gzip": True}, 413,
         "PAYLOAD_TOO_LARGE", "decompressed"),
        ("snappy-bomb", bytes(cramjam.snappy.compress_raw(b" " * (MAX_DECODED_BYTES + 10))), {"snappy": True}, 413,
         "PAYLOAD_TOO_LARGE", "decompressed"),
        ("too-many-events", j(*[ok] * (MAX_EVENTS + 1)), {}, 413, "PAYLOAD_TOO_LARGE", str(MAX_EVENTS)),
        ("too-many-attributes", j(ok, event(source, key, attributes=big_attrs)), {}, 400, "INVALID_EVENT",
         f"event 1: attributes holds {MAX_ATTRIBUTES + 1} keys"),
        ("before-2000", j(ok, event(source, key, timestamp=946684799999)), {}, 400, "INVALID_EVENT",
         "event 1: timestamp 946684799999 is before 2000"),
        ("seconds-not-ms", j(event(source, key, timestamp=NOW // 1000)), {}, 400, "INVALID_EVENT", "before 2000"),
        ("future", j(event(source, key, timestamp=NOW + 25 * 3600 * 1000)), {}, 400, "INVALID_EVENT", "future"),
        ("timestamp-text", j(event(source, key, timestamp="now")), {}, 400, "INVALID_EVENT", "timestamp"),
        ("no-timestamp", j(event(source, key, timestamp=...)), {}, 400, "INVALID_EVENT", "timestamp"),
        ("nul-in-name", j(event(source, key, eventName="buy\x00")), {}, 400, "INVALID_EVENT", "control character"),
        ("control-in-key", j(event(source, key, attributes={"a\x07": "1"})), {}, 400, "INVALID_EVENT",
         "control character"),
        ("nul-in-value", j(event(source, key, attributes={"a": "x\x00y"})), {}, 400, "INVALID_EVENT",
         "attribute 'a' holds a control character"),
        ("name-grammar", j(ok, ok, event(source, key, eventName="1buy")), {}, 400, "INVALID_EVENT",
         "event 2: eventName '1buy' is outside the grammar"),
        ("key-grammar", j(event(source, key, attributes={"a-b": "1"})), {}, 400, "INVALID_EVENT",
         "attribute key 'a-b' is outside the grammar"),
        ("long-name", j(event(source, key, eventName="e" * 101)), {}, 400, "INVALID_EVENT", "grammar"),
        ("unknown-type", j(event(source, key, eventType="CLICK")), {}, 400, "INVALID_EVENT", "eventType 'CLICK'"),
        ("custom-without-name", j(event(source, key, eventName=...)), {}, 400, "INVALID_EVENT", "eventName"),
        ("nobody", j(event(source, key, userId=..., deviceId=...)), {}, 400, "INVALID_EVENT", "userId or deviceId"),
        ("no-source", j(event(source, key, dataSourceId=...)), {}, 400, "INVALID_EVENT", "dataSourceId is missing"),
        ("mixed-sources", j(ok, event(source, key, dataSourceId="other")), {}, 400, "INVALID_EVENT", "differs"),
        ("other-project-key", j(event(source, key, projectKey="x")), {}, 400, "INVALID_EVENT", "projectKey"),
        ("unknown-source", j(event("feedfeedfeedfeed", key)), {}, 403, "DATA_SOURCE_REFUSED", "not a data source"),
        ("unknown-key", j(event(source, key, projectKey=...)), {"key": "0000000000000000"}, 404, "COLLECT_KEY_NOT_FOUND", "collection key"),
    ]  # fmt: skip


def _send(c: TestClient, key: str, body: bytes, opts: dict[str, Any]) -> Any:
    headers = {"content-type": opts.get("ct", "application/json")}
    stm = opts.get("stm", NOW)
    if opts.get("snappy"):
        headers["x-compress-codec"] = "2"
    if opts.get("codec"):
        headers["x-compress-codec"] = opts["codec"]
    if opts.get("xor"):
        headers["x-crypt-codec"] = "1"
    if opts.get("gzip"):
        headers["content-encoding"] = "gzip"
    url = f"/v3/projects/{opts.get('key', key)}/collect" + ("" if stm is None else f"?stm={stm}")
    return c.post(url, content=body, headers=headers)


def test_bad_input_is_a_4xx_naming_the_reason_and_nothing_is_stored(
    app: App, setup: tuple[TestClient, str, str]
) -> None:
    c, key, source = setup
    failures = []
    for name, body, opts, status, code, words in _bad_cases(key, source):
        r = _send(c, key, body, opts)
        got = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != status or got.get("code") != code or words not in got.get("message", ""):
            failures.append(f"{name}: {r.status_code} {r.text[:300]}")
    assert not failures, "\n".join(failures)
    assert stored(app) == []
    r = post(c, key, json.dumps([event(source, key)]).encode())  # the server keeps serving
    assert r.status_code == 200 and len(stored(app)) == 1


def test_a_body_over_the_limit_is_413(app: App, setup: tuple[TestClient, str, str]) -> None:
    c, key, _ = setup
    r = post(c, key, b"[" + b" " * app.settings.max_body_bytes + b"]")
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_a_revoked_data_source_is_refused(app: App, setup: tuple[TestClient, str, str]) -> None:
    c, key, source = setup
    body = json.dumps([event(source, key)]).encode()
    assert post(c, key, body).status_code == 200
    DataSources(app.db).revoke(source)
    time.sleep(RESOLVE_TTL_S + 0.1)  # an API process looks an accepted data source up again after this long
    r = post(c, key, body, stm=NOW + 1)
    assert r.status_code == 403 and "revoked" in r.json()["error"]["message"]
    assert len(stored(app)) == 1


def test_a_source_of_another_project_is_refused(app: App, setup: tuple[TestClient, str, str]) -> None:
    c, key, _ = setup
    app.meta.create_project("Evproj02", "other")
    other_key, other_source = DataSources(app.db).add("Evproj02")
    assert post(c, key, json.dumps([event(other_source, key)]).encode()).status_code == 403
    assert post(c, other_key, json.dumps([event(other_source, other_key)]).encode()).status_code == 200


# --- the admin API ------------------------------------------------------------------------------------------
def test_admin_api_adds_lists_and_revokes_data_sources(app: App, setup: tuple[TestClient, str, str]) -> None:
    c, key, first = setup
    _, admin = app.meta.create_token([], admin=True)
    _, project_token = app.meta.create_token([P])
    base = f"/admin/v1/projects/{P}/datasources"
    r = c.post(base, json={"name": "app"}, headers=auth(admin))
    assert r.status_code == 201, r.text
    assert r.json()["projectKey"] == key
    new = r.json()["dataSourceId"]
    listed = c.get(base, headers=auth(admin)).json()
    assert listed["projectKey"] == key
    assert [(s["dataSourceId"], s["name"], s["revokedAt"]) for s in listed["dataSources"]] == [
        (first, "web", None),
        (new, "app", None),
    ]
    r = c.post(f"{base}/{new}/revoke", headers=auth(admin))
    assert r.status_code == 200 and r.json()["revokedAt"] is not None
    assert c.post(f"{base}/nope/revoke", headers=auth(admin)).status_code == 404
    assert c.get(base, headers=auth(project_token)).status_code == 403
    assert c.get(base).status_code == 401
    assert c.get("/admin/v1/projects/Nope0000/datasources", headers=auth(admin)).status_code == 404
    assert c.post(base, json={"name": "a\x00"}, headers=auth(admin)).status_code == 400
    assert c.post(base, json={"nope": 1}, headers=auth(admin)).status_code == 400


# --- the CLI ----------------------------------------------------------------------------------------------
def test_cli_datasources_add_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "data")

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["--data-dir", data, *args])

    assert run("project", "create", P, "--name", "events").exit_code == 0
    listed = json.loads(run("datasources", "list", "--project", P, "--json").stdout)
    assert listed == {"projectKey": None, "dataSources": []}
    made = json.loads(run("datasources", "add", "--project", P, "--json").stdout)
    assert set(made) == {"projectKey", "dataSourceId"} and len(made["projectKey"]) == 16
    plain = run("datasources", "add", "--project", P, "--name", "web").stdout
    assert f"projectKey:   {made['projectKey']}" in plain and "dataSourceId: " in plain
    second = plain.split("dataSourceId: ")[1].split()[0]
    assert run("datasources", "revoke", made["dataSourceId"]).exit_code == 0
    table = run("datasources", "list", "--project", P).stdout
    assert f"projectKey: {made['projectKey']}" in table
    assert f"{made['dataSourceId']}\t\t" in table and "revoked" in table
    assert f"{second}\tweb\t" in table and "active" in table
    missing = run("datasources", "revoke", "nope")
    assert missing.exit_code == 4 and "not found" in missing.stderr
    assert run("datasources", "add", "--project", "Nope0000").exit_code == 4


# --- any shape ---------------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)
FIELDS = ["eventType", "eventName", "timestamp", "userId", "userKey", "deviceId", "attributes", "dataSourceId",
          "projectKey", "path", "index", "latitude", "resourceItem", "key", "id"]  # fmt: skip
EVENTS = st.lists(
    st.fixed_dictionaries(
        {
            "eventType": st.sampled_from(["CUSTOM", "PAGE", "LOGIN_USER_ATTRIBUTES"]) | JSON_VALUES,
            "dataSourceId": st.just("ds") | JSON_VALUES,  # mostly right, so that the checks after it run
            "deviceId": st.just("d1") | JSON_VALUES,
            "timestamp": st.just(NOW) | JSON_VALUES,
        },
        optional={f: JSON_VALUES for f in FIELDS[1:] if f not in ("dataSourceId", "deviceId", "timestamp")},
    )
    | JSON_VALUES,
    max_size=4,
)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(events=EVENTS)
def test_events_of_any_shape_are_accepted_or_refused_by_a_segport_error(events: list[Any]) -> None:
    for normalize in (normalize_events, normalize_items):
        for clean in (True, False):
            try:
                if normalize is normalize_events:
                    normalize_events(events, "k", clean=clean)
                else:
                    normalize_items(events, "k")
            except SegportError as exc:
                assert 400 <= exc.status < 500


def _outcome(check: Any) -> Any:
    try:
        return ("ok", check())
    except SegportError as exc:
        return (type(exc).__name__, exc.message)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(events=EVENTS)
def test_the_fast_check_accepts_and_refuses_exactly_as_normalizing_does(events: list[Any]) -> None:
    # the collect path checks JSON batches with check_events (the loader normalizes them later): the same
    # batches must pass, and a refused one must be refused with the same error
    for clean in (True, False):
        for _ in range(2):  # the second time, the names of the first are known (the fast path's cache)
            fast = _outcome(lambda c=clean: check_events(events, "k", NOW, clean=c))
            full = _outcome(lambda c=clean: normalize_events(events, "k", NOW, clean=c).datasource_id)
            assert fast == full


def test_the_fast_check_passes_a_typical_batch_and_names_the_first_bad_event() -> None:
    good = [
        {"eventType": "CUSTOM", "eventName": "buy", "timestamp": NOW - i, "deviceId": f"d{i}", "userId": "u1",
         "attributes": {"price": "9.5"}, "dataSourceId": "ds", "platform": "python", "sendTime": NOW}
        for i in range(3)
    ]  # fmt: skip
    assert check_events(good, "k", NOW, clean=True) == "ds"
    assert check_events(good, "k", NOW, clean=True) == "ds"  # names known now: the fast path alone
    bad = [*good[:2], {**good[2], "attributes": {"price": "9\x01"}}]
    with pytest.raises(InvalidEvent, match="^event 2: attribute 'price' holds a control character"):
        check_events(bad, "k", NOW, clean=False)


def _mostly(good: Any, *bad: Any) -> Any:
    """``good`` most of the time, else one of ``bad``: most events of a batch then pass, so that a batch is
    often entirely right, or wrong in one place."""
    return st.sampled_from([good] * (4 * len(bad) + 4) + list(bad))


# events near the common shape: each field right, or wrong in one of the ways normalizing refuses or converts
NEAR = st.lists(
    st.fixed_dictionaries(
        {
            "eventType": _mostly("CUSTOM", "PAGE", "VISITOR_ATTRIBUTES", "LOGIN_USER_ATTRIBUTES", "X", None),
            "dataSourceId": _mostly("ds", "ds2", "", None, 5),
            "timestamp": _mostly(NOW, NOW - 1, 5, NOW + 10**11, "1", 1.5, True, 2**70, None),
            "eventName": _mostly("buy", "view", "1bad", "", None, 5),
            "deviceId": _mostly("d1", "", None, 7, "\u00e9" * 4097),
        },
        optional={
            "userId": _mostly("u1", "", None, 7, "x" * 4097),
            "userKey": _mostly("$basic_userId", "", None, "1bad", 3),
            "projectKey": _mostly("k", "", "other", 5, None),
            "attributes": _mostly(
                {"price": "9.5"}, None, {}, {"price": 9.5}, {"1bad": "x"}, {"k": "x" * 4097}, "s", {"a": None}
            ),
            "platform": _mostly("python", "", 5, None),
            "index": _mostly(1, 2**63, -(2**63), "1", None, True),
            "latitude": _mostly(None, 1.5),
            "resourceItem": _mostly(None, {"id": "a"}),
        },
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(events=NEAR)
def test_the_one_pass_json_check_accepts_only_what_normalizing_accepts(events: list[Any]) -> None:
    # the collect path tries check_json_events on the request's text first and takes the full path whenever it
    # answers None: what it accepts, normalizing the same text must accept, with the same dataSourceId
    text = json.dumps(events).encode()
    for _ in range(2):  # the second time, the names normalizing accepted are known (the fast path's cache)
        fast = check_json_events(text, "k", NOW) if json_is_clean(text) else None
        full = _outcome(lambda: normalize_events(json.loads(text), "k", NOW, clean=json_is_clean(text)).datasource_id)
        if fast is not None:
            assert full == ("ok", fast[0]) and fast[1] == len(events)


def test_the_one_pass_json_check_takes_a_typical_batch_and_leaves_the_rest_to_the_full_path() -> None:
    good = [event("ds", "k", timestamp=NOW - i, deviceId=f"d{i}", sendTime=NOW) for i in range(3)]
    text = json.dumps(good).encode()
    normalize_events(good, "k", NOW)  # the names are known now
    assert check_json_events(text, "k", NOW) == ("ds", 3)
    for other in (
        [{**good[0], "gioId": 5}],  # a field normalizing does not read: the full path parses it
        [{**good[0], "zzz": [[[[1]]]]}],
        [{**good[0], "attributes": {"price": 9.5}}],  # converted by normalizing
        [{**good[0], "latitude": 31.2}],
        [{**good[0], "eventName": "never_seen"}],
        [{**good[0], "timestamp": NOW + 10**11}],
        [good[0], {**good[1], "dataSourceId": "other"}],
        [],
    ):
        assert check_json_events(json.dumps(other).encode(), "k", NOW) is None
    assert check_json_events(b"[1, 2", "k", NOW) is None
    assert check_json_events(b'{"a": 1}', "k", NOW) is None


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(events=NEAR, sdk_version=_mostly("1.0.5", "", 5, None, "v" * 4097), send_time=_mostly(NOW, 2**63, "1", None))
def test_the_sdk_shaped_decode_gives_what_the_wide_decode_gives(
    events: list[Any], sdk_version: Any, send_time: Any
) -> None:
    # the one-pass check decodes with a struct of growingio-tracker's 12 keys first, and with the struct of every
    # field normalizing reads when that fails: what the narrow one decodes, the wide one decodes to the same
    events = [{**e, "sdkVersion": sdk_version, "sendTime": send_time} for e in events]
    text = json.dumps(events).encode()
    narrow, wide = _decoded(ev_domain._SDK_BATCH, text), _decoded(ev_domain._WIRE_BATCH, text)
    sdk_keys = all(set(e) <= set(ev_domain.SDK_JSON_ORDER) for e in events)
    assert (narrow is not None) == (sdk_keys and wide is not None)
    if narrow is not None:
        assert msgspec.to_builtins(narrow) == msgspec.to_builtins(wide)
        # and the loader's rows, read from the narrow structs' slots, are those of the wide structs' dicts (for
        # events with the type and time the one-pass check requires before either is read)
        if all(e.eventType is not None and e.timestamp is not None for e in narrow):
            assert ev_domain._sdk_event_rows(narrow) == ev_domain._wire_event_rows(wide)


def _decoded(decoder: Any, text: bytes) -> Any:
    try:
        return decoder.decode(text)
    except msgspec.ValidationError:
        return None


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(body=st.binary(max_size=200) | st.builds(lambda e: pb_field(1, e), st.binary(max_size=120)))
def test_bodies_of_any_bytes_are_decoded_or_refused_by_a_segport_error(body: bytes) -> None:
    encodings = [
        encoding_of("application/protobuf", None, None, None, None),
        encoding_of("application/json", None, None, None, None),
        encoding_of("application/json", "2", "1", None, "1234"),
        encoding_of("application/json", None, None, "gzip", None),
    ]
    for enc in encodings:
        for decode in (decode_events, decode_items):
            try:
                decoded = decode(body, enc)
                events = decoded[0] if isinstance(decoded, tuple) else decoded
                normalize_events(events, "k") if decode is decode_events else normalize_items(events, "k")
            except SegportError as exc:
                assert 400 <= exc.status < 500
