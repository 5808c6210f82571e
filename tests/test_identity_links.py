"""Identity links: an event carrying both a userId and a deviceId links the device to the user, and the device's
anonymous history moves to the user (docs/events.md, "Identity links"). Through the spool and the loader (the
path the collect endpoints feed), and through an event file; read back with E18. On DuckDB here;
tests/test_identity_links_clickhouse.py runs them on ClickHouse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from segport.errors import ImportRejected
from segport.services.events import EventService
from segport.store.events import EventSpool
from tests.conftest import PROJECT, auth
from tests.test_event_loader import T, loader

E18 = f"/v1/api/projects/{PROJECT}/users"


def event(t: int, name: str, user: str | None, device: str | None) -> dict[str, Any]:
    return {
        "t": T + t * 1000,
        "type": "CUSTOM",
        "event": name,
        "user_id": user,
        "user_key": None,
        "device_id": device,
        "attrs": {},
        "std": {},
    }


def history(client: TestClient, token: str, identity: str, value: str) -> list[str]:
    page = client.get(f"{E18}/{identity}/{value}/events?order=asc&limit=100", headers=auth(token))
    assert page.status_code == 200, page.text
    return [v["event"] for v in page.json()["values"]]


def gio_of(client: TestClient, token: str, identity: str, value: str) -> int:
    page = client.get(f"{E18}/{identity}/{value}/events?limit=1", headers=auth(token))
    return int(page.json().get("gioId") or 0) if page.status_code == 200 else 0


def test_login_links_the_devices_anonymous_history_to_the_user(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    app, token = seeded.app, seeded.token
    spool = EventSpool(app.meta)
    load = loader(app, tmp_path)
    # an anonymous visitor browses on device anon-7 (a new anonymous user), then logs in as C002 on it
    assert spool.append(PROJECT, "ds1", "a", [event(1, "view_a", None, "anon-7"), event(2, "view_b", None, "anon-7")])
    load.run_once()
    assert history(client, token, "$anonymous_user", "anon-7") == ["view_a", "view_b"]
    assert history(client, token, "$basic_userId", "C002") == []
    assert spool.append(PROJECT, "ds1", "b", [event(3, "login", "C002", "anon-7")])
    load.run_once()
    # the anonymous history is now the user's, and the device resolves to the user from now on
    assert history(client, token, "$basic_userId", "C002") == ["view_a", "view_b", "login"]
    assert history(client, token, "$anonymous_user", "anon-7") == ["view_a", "view_b", "login"]
    assert spool.append(PROJECT, "ds1", "c", [event(4, "after", None, "anon-7")])
    load.run_once()
    assert history(client, token, "$basic_userId", "C002") == ["view_a", "view_b", "login", "after"]
    assert app.engine.count_events(PROJECT, 0, 2 * T).events == 4  # moved, not copied


def test_a_device_links_once_and_a_login_users_device_is_not_taken(
    seeded: Any, tmp_path: Path, client: TestClient
) -> None:
    app, token = seeded.app, seeded.token
    spool = EventSpool(app.meta)
    load = loader(app, tmp_path)
    # shared-7 is first seen with C003, then with C004: it stays C003's; C004's event is C004's all the same
    assert spool.append(PROJECT, "ds1", "a", [event(1, "pre", None, "shared-7")])
    assert spool.append(PROJECT, "ds1", "b", [event(2, "login3", "C003", "shared-7")])
    load.run_once()
    assert spool.append(
        PROJECT, "ds1", "c", [event(3, "login4", "C004", "shared-7"), event(4, "anon", None, "shared-7")]
    )
    load.run_once()
    assert history(client, token, "$basic_userId", "C003") == ["pre", "login3", "anon"]
    assert history(client, token, "$basic_userId", "C004") == ["login4"]
    # d1 is a device of the login user C001 (seeded profile): C005 logging in on it does not take C001's history
    assert spool.append(PROJECT, "ds1", "d", [event(5, "on_d1", None, "d1"), event(6, "login5", "C005", "d1")])
    load.run_once()
    assert history(client, token, "$basic_userId", "C001") == ["on_d1"]
    assert history(client, token, "$basic_userId", "C005") == ["login5"]


def test_an_event_file_links_too(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    app, token = seeded.app, seeded.token
    service = EventService(app.meta, app.engine, app.data)
    first = tmp_path / "first.csv"
    first.write_text(
        "event,time,userId,deviceId\n"
        "browse,2026-05-01T10:00:00+08:00,,dev-f\n"
        "browse,2026-05-01T10:01:00+08:00,,dev-f\n"
        "browse,2026-05-01T10:02:00+08:00,,dev-g\n"
    )
    service.import_events(PROJECT, first)
    anonymous = gio_of(client, token, "$anonymous_user", "dev-f")
    second = tmp_path / "second.csv"
    second.write_text(
        "event,time,userId,deviceId\n"
        "buy,2026-05-01T10:05:00+08:00,NEWU1,dev-f\n"
        "buy,2026-05-01T10:06:00+08:00,NEWU1,dev-g\n"
    )
    report = service.import_events(PROJECT, second)
    assert report.stored == 2
    user = gio_of(client, token, "$basic_userId", "NEWU1")
    assert user and user != anonymous
    assert history(client, token, "$basic_userId", "NEWU1") == ["browse", "browse", "browse", "buy", "buy"]
    assert gio_of(client, token, "$anonymous_user", "dev-g") == user


def test_a_refused_file_links_nothing(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    app, token = seeded.app, seeded.token
    service = EventService(app.meta, app.engine, app.data)
    first = tmp_path / "first.csv"
    first.write_text("event,time,deviceId\nbrowse,2026-05-01T10:00:00+08:00,dev-r\n")
    service.import_events(PROJECT, first)
    anonymous = gio_of(client, token, "$anonymous_user", "dev-r")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "event,time,userId,deviceId\n"
        "buy,2026-05-01T10:05:00+08:00,NEWU2,dev-r\n"
        "buy,2026-05-01T10:06:00+08:00,NEWU2,dev\x01x\n"
    )
    with pytest.raises(ImportRejected, match=r"line 3 \(row 2\): event, userId, userKey or deviceId holds a control"):
        service.import_events(PROJECT, bad)
    assert gio_of(client, token, "$anonymous_user", "dev-r") == anonymous
    assert history(client, token, "$anonymous_user", "dev-r") == ["browse"]
    assert gio_of(client, token, "$basic_userId", "NEWU2") == 0


def lookup(client: TestClient, token: str, path: str) -> dict[str, Any]:
    page = client.get(path, headers=auth(token))
    assert page.status_code == 200, page.text
    return dict(page.json())


def test_the_single_user_lookup_resolves_a_device_as_events_do(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    """E11 (and E10) by ``$anonymous_user``: a linked device is its login user, as E18 and the loader resolve it;
    a device no link names is the lowest gio_id holding it, as before."""
    app, token = seeded.app, seeded.token
    service = EventService(app.meta, app.engine, app.data)
    first = tmp_path / "first.csv"
    first.write_text("event,time,deviceId\nbrowse,2026-05-01T10:00:00+08:00,dev-e11\n")
    service.import_events(PROJECT, first)
    anonymous = gio_of(client, token, "$anonymous_user", "dev-e11")
    assert lookup(client, token, f"{E18}/$anonymous_user/dev-e11")["gioId"] == str(anonymous)
    second = tmp_path / "second.csv"
    second.write_text(
        "event,time,userId,deviceId\n"
        "login,2026-05-01T10:05:00+08:00,NEWU3,dev-e11\n"  # the anonymous user's device: merged into NEWU3
        "login,2026-05-01T10:06:00+08:00,C002,dev-nobody\n"  # a device no user holds: simply linked to C002
    )
    service.import_events(PROJECT, second)
    for device, login in [("dev-e11", "NEWU3"), ("dev-nobody", "C002")]:
        resolved = gio_of(client, token, "$anonymous_user", device)
        assert resolved == gio_of(client, token, "$basic_userId", login) and resolved != anonymous
        for path in (f"{E18}/$anonymous_user/{device}", f"/v1/api/users/ids_$anonymous_user/{device}"):
            user = lookup(client, token, path)
            assert user["gioId"] == str(resolved), (path, user)
            assert user["identifications"]["ids_$basic_userId"] == [login], (path, user)
    # a device a profile import gave a login user (C001's d1), which no link names, is that user as before
    assert lookup(client, token, f"{E18}/$anonymous_user/d1")["identifications"]["ids_$basic_userId"] == ["C001"]
