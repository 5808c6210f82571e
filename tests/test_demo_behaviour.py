"""The demo's seg_51activity is defined by behaviour over the events the demo sent: its members are exactly the
users of the big cities whose May-1 activity views fall in the holiday (checked in plain Python over the demo's
own files), and the console shows the rule, event condition included, and the segment's size."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
from fastapi.testclient import TestClient

from segport.app import App
from segport.console.rule_text import rule_lines
from segport.demo import (
    BIG_CITIES,
    CAMPAIGN,
    PROJECT,
    SEGMENT,
    TIME_ZONE,
    build_demo,
    campaign_days,
    generate_events,
    generate_users,
    segment_rule,
)
from segport.roles.inline import create_app
from tests.conftest import auth
from tests.test_console import sign_in

USERS = 3000


def expected_members(tmp_path: Path, now_ms: int) -> set[str]:
    """The users seg_51activity should hold, from the demo's generated files, in plain Python."""
    generate_users(tmp_path / "u.parquet", USERS)
    generate_events(tmp_path / "e.parquet", USERS, now_ms)
    con = duckdb.connect()
    try:
        cities = dict(con.execute(f"SELECT \"id_$basic_userId\", usr_city FROM '{tmp_path / 'u.parquet'}'").fetchall())
        events = con.execute(f"SELECT event, time, \"userId\", campaign FROM '{tmp_path / 'e.parquet'}'").fetchall()
    finally:
        con.close()
    first, last = (dt.date.fromisoformat(d) for d in campaign_days(now_ms))
    viewers = {
        user
        for event, t, user, campaign in events
        if event == "activity_view"
        and campaign == CAMPAIGN
        and first <= dt.datetime.fromtimestamp(t / 1000, ZoneInfo(TIME_ZONE)).date() <= last
    }
    return {u for u in viewers if cities.get(u) in BIG_CITIES}


def test_the_demo_segment_is_defined_by_the_events_the_demo_sent(app: App, tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    token = build_demo(app, users=USERS, now_ms=now_ms)
    row = app.meta.segment(PROJECT, SEGMENT)
    assert row.rule is not None and '"event": "activity_view"' in row.rule
    expected = expected_members(tmp_path, now_ms)
    assert 0.2 * USERS < len(expected) < 0.4 * USERS and row.total_users == len(expected)
    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as c:
        got: set[str] = set()
        for offset in range(0, USERS, 1000):
            page = c.get(
                f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/users",
                headers=auth(token),
                params={"properties": "id_$basic_userId", "limit": 1000, "offset": offset},
            ).json()
            got |= {v["identifications"]["id_$basic_userId"][0] for v in page["values"]}
        assert got == expected
        # the console shows the rule, its event condition in words, and the size
        sign_in(c, token)
        start, end = campaign_days(now_ms)
        page = c.get(f"/console/p/{PROJECT}/segments/{SEGMENT}", params={"lang": "en"}).text
        assert f"<strong>{len(expected)}</strong>" in page
        assert f"did activity_view (where campaign = &#34;51&#34;), from {start} to {end}" in page
        assert "usr_city in [&#34;北京&#34;" in page and '<li class="depth-1">' in page
        page = c.get(f"/console/p/{PROJECT}/segments/{SEGMENT}", params={"lang": "zh"}).text
        assert f"做过 activity_view (满足 campaign = &#34;51&#34;)，{start} 至 {end}" in page


def test_rule_lines_say_each_form() -> None:
    rule = {
        "and": [
            segment_rule(1_780_000_000_000),
            {"not": {"event": "login", "time": {"last_days": 7}}},
            {
                "event": "pay",
                "measure": {"sum": "amount"},
                "op": "between",
                "value": [1, 5],
                "time": {"since": "2026-01-01"},
            },
            {
                "sequence": [{"event": "add_to_cart"}, {"event": "pay"}],
                "max_gap": {"days": 1},
                "time": {"last_hours": 3},
            },
            {"event": "add_to_cart", "not_followed_by": {"event": "pay", "within": {"hours": 24}}},
            {"event": "$visit", "measure": "distinct_days", "op": "gte", "value": 3},
        ]
    }
    assert rule_lines(rule) == [
        (0, "all of"),
        (1, "all of"),
        (2, 'did activity_view (where campaign = "51"), from 2026-05-01 to 2026-05-05'),
        (2, 'usr_city in ["北京", "上海", "广州", "深圳", "杭州", "成都"]'),
        (1, "not"),
        (2, "did login, in the last 7 days"),
        (1, "did pay, sum of amount between 1 and 5, since 2026-01-01"),
        (1, "did in order: add_to_cart → pay, each within 1 days of the one before, in the last 3 hours"),
        (1, "did add_to_cart, not followed by pay within 24 hours"),
        (1, "did $visit, distinct days ≥ 3"),
    ]
    assert rule_lines({"key": "usr_age", "op": "is_null"}, "zh") == [(0, "usr_age is_null")]
    assert rule_lines({"weird": [1]}) == [(0, '{"weird": [1]}')]
