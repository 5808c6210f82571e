"""The day of an event time in the project's zone, as DuckDB's SQL writes it for ``distinct_days``: a shift by the
zone's one UTC offset when the window has one (cheaper than ICU's time zone conversion), ICU's conversion when
the offset changes inside the window (DST) or the window is unbounded."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import duckdb

from segport.domain.behaviour import (
    DAY_MS,
    HOUR_MS,
    AggregatedTag,
    BehaviourContext,
    EventSchema,
    Measure,
    Step,
    TimeSpec,
    Window,
    day_of,
    resolve_window,
)
from segport.domain.keys import Catalog
from segport.engine.behaviour_sql import fixed_offset_ms
from segport.engine.duckdb.behaviour import DuckDBEventSQL
from segport.engine.duckdb.rules import DuckDBRules
from segport.engine.duckdb.tags import DuckDBTagSQL


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def test_one_offset_through_the_window_is_found() -> None:
    shanghai = Window(ms("2026-01-01T00:00:00+08:00"), ms("2026-12-31T00:00:00+08:00"))
    assert fixed_offset_ms("Asia/Shanghai", shanghai) == 8 * HOUR_MS
    summer = Window(ms("2026-04-01T00:00:00+02:00"), ms("2026-10-01T00:00:00+02:00"))
    assert fixed_offset_ms("Europe/Berlin", summer) == 2 * HOUR_MS
    assert (
        fixed_offset_ms("America/New_York", Window(ms("2026-01-05T00:00:00-05:00"), ms("2026-02-05T00:00:00-05:00")))
        == -5 * HOUR_MS
    )


def test_a_change_inside_the_window_or_no_bound_gives_none() -> None:
    # Berlin moves to summer time at 2026-03-29 01:00 UTC
    across = Window(ms("2026-03-28T12:00:00+00:00"), ms("2026-03-29T02:00:00+00:00"))
    assert fixed_offset_ms("Europe/Berlin", across) is None
    assert fixed_offset_ms("Asia/Shanghai", Window(None, ms("2026-01-01T00:00:00+00:00"))) is None
    assert fixed_offset_ms("Asia/Shanghai", Window(0, None)) is None
    assert fixed_offset_ms("Asia/Shanghai", None) is None
    assert fixed_offset_ms("Asia/Shanghai", Window(0, 401 * DAY_MS)) is None  # too long to check


def test_duckdb_days_agree_with_the_domain_around_midnight_and_dst() -> None:
    con = duckdb.connect()
    for zone, window in (
        ("Asia/Shanghai", Window(ms("2026-05-01T00:00:00+08:00"), ms("2026-05-03T00:00:00+08:00"))),
        ("Europe/Berlin", Window(ms("2026-03-28T00:00:00+01:00"), ms("2026-03-31T00:00:00+02:00"))),
        ("America/New_York", Window(ms("2026-11-01T00:00:00-04:00"), ms("2026-11-02T12:00:00-05:00"))),
    ):
        sql = DuckDBEventSQL(
            BehaviourContext("P", EventSchema([], Catalog([])), window.end_ms, zone),
            DuckDBRules(Catalog([]), "u"),
            None,
            {},
        )
        expr = sql.day("epoch_ms(t)", window)
        times = list(range(window.start_ms, window.end_ms, 15 * 60_000)) + [window.end_ms - 1]
        got = con.execute(f"SELECT t, {expr} FROM unnest(?::BIGINT[]) AS x(t) ORDER BY t", [times]).fetchall()
        assert [d for _, d in got] == [day_of(t, zone) for t in times], zone
        assert ("to_milliseconds" in expr) == (zone == "Asia/Shanghai")
    assert ZoneInfo("Asia/Shanghai")  # the zone database is there


def test_an_aggregated_tags_distinct_days_shifts_by_the_one_offset_too() -> None:
    """The ``AGGREGATED`` tag's ``distinct_days`` takes its days as a segment's do: the shift when the window has
    one offset (Shanghai, the last 7 days), ICU's conversion when it has none (New York across the end of summer
    time; no window at all); the values agree with the domain's days either way."""
    con = duckdb.connect()
    con.execute('CREATE TABLE ev (gio_id BIGINT, "$time" TIMESTAMP, "$event" VARCHAR)')
    for zone, now, spec, shifted in (
        ("Asia/Shanghai", ms("2026-05-10T12:00:00+08:00"), TimeSpec("last_days", 7), True),
        ("America/New_York", ms("2026-11-03T12:00:00-05:00"), TimeSpec("last_days", 7), False),
        ("Asia/Shanghai", ms("2026-05-10T12:00:00+08:00"), None, False),
    ):
        # every 50 minutes over ten days before now: times on both sides of each local midnight
        times = list(range(now - 10 * DAY_MS, now, 50 * 60_000))
        con.execute("DELETE FROM ev")
        con.execute(
            "INSERT INTO ev SELECT 1 + (t // 60000) % 3, make_timestamp(t * 1000), 'buy' FROM unnest(?::BIGINT[]) AS x(t)",
            [times],
        )
        ctx = BehaviourContext("P", EventSchema(["buy"], Catalog([])), now, zone)
        events = DuckDBEventSQL(ctx, DuckDBRules(Catalog([]), "u", behaviour=ctx), "ev", {"gio_id": "BIGINT"})
        tag = AggregatedTag(Step("buy"), Measure("distinct_days"), spec)
        query, fill = DuckDBTagSQL(events, "users").values(tag)
        assert query is not None and fill == "0"
        assert ("to_milliseconds" in query) == shifted, (zone, spec)
        got = dict(con.execute(query).fetchall())
        start = resolve_window(spec, now, zone).start_ms or 0
        want: dict[int, set[dt.date]] = {}
        for t in times:
            if t >= start:
                want.setdefault(1 + (t // 60000) % 3, set()).add(day_of(t, zone))
        assert got == {g: len(days) for g, days in want.items()}, (zone, spec)
