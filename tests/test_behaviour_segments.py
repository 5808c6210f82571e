"""Segments with event conditions through a running `segport serve`: created with the admin API and with
`segport segment create --rule`, checked against the project's event catalogue (a 400 naming the part at fault,
nothing stored), computed in the project's time zone, and recomputed when the events change."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from segport.roles.inline import build
from segport.services.events import EventService
from segport.settings import Settings
from tests.conftest import LiveServer, auth, start_server, stop_server

P = "Behave01"
A = f"/admin/v1/projects/{P}"
DAY_MS = 86_400_000


def cli(data: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def events_csv(path: Path, rows: list[tuple[str, int, str, str]]) -> Path:
    """``(event, time ms, userId, amount)`` rows as an event file."""
    lines = ["event,time,userId,amount"] + [f"{e},{t},{u},{a}" for e, t, u, a in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def error(r: httpx.Response) -> str:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["code"] == "INVALID_RULE", body
    return str(body["error"]["message"])


BAD_RULES: list[tuple[Any, str]] = [
    ({"event": "refund"}, "rule.event: unknown event 'refund' (not in the project's event catalogue)"),
    (
        {"and": [{"key": "usr_x", "op": "is_null"}], "or": []},
        "rule: expected exactly one of 'and', 'or', 'not', or a key/op/value leaf",
    ),
    (
        {
            "or": [
                {"event": "pay"},
                {"sequence": [{"event": "pay", "where": {"key": "amt", "op": "gt", "value": 1}}, {"event": "login"}]},
            ]
        },
        "rule.or[1].sequence[0].where: unknown attribute 'amt'",
    ),
    (
        {"event": "login", "measure": {"sum": "city"}},
        "rule.measure.sum: sum needs a numeric attribute; 'city' is string (count its distinct values with 'distinct')",
    ),
    (
        {"not": {"event": "pay", "time": {"between": ["2026-05-07", "2026-05-01"]}}},
        "rule.not.time.between: the window ends (2026-05-01) before it starts (2026-05-07)",
    ),
    ({"sequence": [{"event": "pay"}]}, "rule.sequence: a sequence is a list of 2 to 10 steps; got 1 step(s)"),
    (
        {"sequence": [{"event": "pay"}] * 11},
        "rule.sequence: a sequence is a list of 2 to 10 steps; got 11 step(s)",
    ),
    (
        {"event": "pay", "where": {"or": [{"key": "amount", "op": "gt", "value": i} for i in range(1000)]}},
        "rule is too large (at most 32 levels and 1000 nodes)",
    ),
]


H = 3_600_000
NAMES = ("U1", "U2", "U3", "U4", "U5")


def history(now: int) -> list[tuple[str, int, str, str]]:
    return [
        ("pay", now - DAY_MS, "U1", "10"),
        ("pay", now - 3 * DAY_MS, "U1", "5"),
        ("login", now - DAY_MS, "U1", ""),
        ("pay", now - 2 * DAY_MS, "U2", "100"),
        ("login", now - 10 * DAY_MS, "U2", ""),
        ("pay", now - 40 * DAY_MS, "U3", "1"),
        ("pay", now - 2 * DAY_MS, "U3", "1"),
        ("add_to_cart", now - 5 * DAY_MS, "U3", ""),
        ("add_to_cart", now - 3 * DAY_MS, "U4", ""),
        ("pay", now - 3 * DAY_MS + H, "U4", "20"),
        ("login", now - 2 * DAY_MS, "U5", ""),
        # 20:00 on May 1 in Los Angeles: May 2 in UTC and in Shanghai
        ("pay", 1777690800000, "U5", "1"),
    ]


def setup_project(data: Path, tmp_path: Path, now: int) -> str:
    """Project P (time zone America/Los_Angeles) with the events of :func:`history` (amount: double) and a login
    with a string attribute, city; returns an admin token."""
    app = build(Settings(data_dir=data, serve_workers=False))
    try:
        app.meta.create_project(P, "行为", "America/Los_Angeles")
        events = EventService(app.meta, app.engine, app.data)
        events.declare(P, "amount", "金额", "double")
        events.import_events(P, events_csv(tmp_path / "e.csv", history(now)))
        (tmp_path / "city.csv").write_text(
            f"event,time,userId,city\nlogin,{now - 20 * DAY_MS},U5,北京\n", encoding="utf-8"
        )
        events.import_events(P, tmp_path / "city.csv")
        return app.meta.create_token([], admin=True)[1]
    finally:
        app.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    tmp_path = tmp_path_factory.mktemp("behaviour")
    admin = setup_project(tmp_path / "data", tmp_path, int(time.time() * 1000))
    server = start_server(tmp_path / "data", tmp_path / "server.log")
    try:
        yield server, admin
    finally:
        stop_server(server)


def segment_keys(server: LiveServer, admin: str) -> list[str]:
    return [s["key"] for s in httpx.get(server.base_url + A + "/segments", headers=auth(admin)).json()]


def test_event_rules_are_checked_against_the_event_catalogue_and_nothing_is_stored(
    served: tuple[LiveServer, str],
) -> None:
    server, admin = served
    h = auth(admin)
    before = segment_keys(server, admin)
    for rule, message in BAD_RULES:
        body = {"key": "seg_bad", "name": "坏", "rule": rule}
        assert error(httpx.post(server.base_url + A + "/segments", headers=h, json=body)) == message
        # the rule as a JSON string takes the same path
        body["rule"] = json.dumps(rule)
        assert error(httpx.post(server.base_url + A + "/segments", headers=h, json=body)) == message
    assert segment_keys(server, admin) == before
    # the command line, through the running server
    bad = cli(
        server.data_dir, "segment", "create", "--project", P, "--key", "seg_bad", "--name", "坏",
        "--rule", json.dumps(BAD_RULES[2][0]), ok=False,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == f"error: {BAD_RULES[2][1]}"
    assert segment_keys(server, admin) == before


def members(server: LiveServer, admin: str, key: str) -> set[str]:
    r = httpx.get(
        f"{server.base_url}/v1/api/projects/{P}/segment_profiles/{key}/users",
        headers=auth(admin),
        params={"properties": "id_$basic_userId", "limit": 100},
    )
    assert r.status_code == 200, r.text
    return {v["identifications"]["id_$basic_userId"][0] for v in r.json()["values"]}


RULES: dict[str, tuple[Any, set[str]]] = {
    "seg_pay2": ({"event": "pay", "op": "gte", "value": 2, "time": {"last_days": 30}}, {"U1"}),
    "seg_nologin": ({"not": {"event": "login", "time": {"last_days": 7}}}, {"U2", "U3", "U4"}),
    "seg_dropoff": (
        {"event": "add_to_cart", "time": {"last_days": 30}, "not_followed_by": {"event": "pay", "within": {"days": 1}}},
        {"U3"},
    ),
    "seg_spent": (
        {
            "and": [
                {"event": "pay", "measure": {"sum": "amount"}, "op": "gte", "value": 15, "time": {"last_days": 30}},
                {"key": "id_$basic_userId", "op": "ne", "value": "U2"},
            ]
        },
        {"U1", "U4"},
    ),
    "seg_cities": ({"event": "login", "measure": {"distinct": "city"}, "op": "eq", "value": 1}, {"U5"}),
    # dates are days in the project's time zone
    "seg_may1": ({"event": "pay", "time": {"between": ["2026-05-01", "2026-05-01"]}}, {"U5"}),
    "seg_may2": ({"event": "pay", "time": {"since": "2026-05-02"}}, {"U1", "U2", "U3", "U4"}),
    "seg_domain": ({"event": "pay", "where": {"key": "$domain", "op": "eq", "value": "x"}}, set()),
}


def test_event_segments_are_computed_and_recomputed_with_new_events(served: tuple[LiveServer, str]) -> None:
    server, admin = served
    h = auth(admin)
    for key, (rule, expected) in RULES.items():
        r = httpx.post(server.base_url + A + "/segments", headers=h, json={"key": key, "name": key, "rule": rule})
        assert r.status_code == 201, r.text
        assert r.json()["rule"] == rule and r.json()["detector"]["totalUsers"] == len(expected), (key, r.json())
        assert members(server, admin, key) == expected, key
    # a sequence, created with the command line through the server
    seq = {
        "sequence": [{"event": "add_to_cart"}, {"event": "pay", "where": {"key": "amount", "op": "gte", "value": 1}}],
        "time": {"last_days": 30},
        "max_gap": {"days": 1},
    }
    done = cli(server.data_dir, "segment", "create", "--project", P, "--key", "seg_seq", "--name", "加购后付款",
               "--rule", json.dumps(seq))  # fmt: skip
    assert "seg_seq (加购后付款): 1 users" in done.stdout
    assert members(server, admin, "seg_seq") == {"U4"}
    # new events: U2 pays again, U4 logs in; a recompute reflects them
    now = int(time.time() * 1000)
    body = f"event,time,userId,amount\npay,{now - H},U2,3\nlogin,{now - H},U4,\n".encode()
    r = httpx.post(server.base_url + A + "/events/import", headers=h, params={"format": "csv"}, content=body)
    assert r.status_code == 200, r.text
    for key in ("seg_pay2", "seg_nologin"):
        r = httpx.post(f"{server.base_url}{A}/segments/{key}/recompute", headers=h)
        assert r.status_code == 200, r.text
    assert members(server, admin, "seg_pay2") == {"U1", "U2"}
    assert members(server, admin, "seg_nologin") == {"U2", "U3"}
    # a users import recomputes the DAILY segments in its transaction, event conditions included: U9 has no
    # events, so it has not logged in lately
    r = httpx.post(
        server.base_url + A + "/users/import", headers=h, params={"format": "csv"}, content=b"id_$basic_userId\nU9\n"
    )
    assert r.status_code == 200, r.text
    assert r.json()["segments"]["seg_nologin"] == 3 and r.json()["segments"]["seg_pay2"] == 2
    assert members(server, admin, "seg_nologin") == {"U2", "U3", "U9"}


def test_the_command_line_refuses_a_bad_event_rule_on_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    setup_project(data, tmp_path, int(time.time() * 1000))
    bad = cli(
        data, "segment", "create", "--project", P, "--key", "seg_bad", "--name", "坏",
        "--rule", '{"not": {"event": "pay", "time": {"last_days": 0}}}', ok=False,
    )  # fmt: skip
    assert bad.stderr.strip() == "error: rule.not.time.last_days: expected a whole number of days from 1 to 3660; got 0"
    made = cli(data, "project", "create", "Tz000001", "--name", "柏林", "--time-zone", "Europe/Berlin")
    assert made.stdout.strip() == "created project Tz000001 (柏林, Europe/Berlin)"
    app = build(Settings(data_dir=data, serve_workers=False))
    try:
        assert app.meta.segments(P)[0] == []
        assert app.meta.project("Tz000001").timezone == "Europe/Berlin"
    finally:
        app.close()
