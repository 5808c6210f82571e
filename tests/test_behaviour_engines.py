"""Event conditions on both engines agree with the reference evaluator (tests/behaviour_reference.py, plain
Python written from the semantics in segport/domain/behaviour.py): randomised event sets and conditions
(hypothesis), and the edge cases the semantics spell out — users without events, events exactly on a window's
edges, equal times in a sequence, days in a DST zone and in Asia/Shanghai, ``last_days`` just after midnight,
``max_gap`` where the earliest event is the wrong one to chain from, a project without an event table.

One DuckDB file and one ClickHouse database (chdb) serve the whole module; each case loads its events into both
event tables (the tables' own layout: engine/duckdb/events.py, engine/clickhouse/events.py) and asks each
engine's SQL for the members.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segport.domain.behaviour import (
    HOUR_MS,
    BehaviourContext,
    Condition,
    DropOffCondition,
    EventCondition,
    EventSchema,
    Measure,
    SequenceCondition,
    Step,
    TimeSpec,
)
from segport.domain.behaviour_parse import event_schema, parse_condition
from segport.domain.event_files import EventAttribute
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.domain.rules import is_event_condition
from segport.engine.base import SegmentDefinition, Target
from segport.engine.clickhouse import behaviour as ch_behaviour
from segport.engine.clickhouse import events as ch_events
from segport.engine.clickhouse.engine import ClickHouseEngine
from segport.engine.clickhouse.rules import ClickHouseRules, rule_parameters
from segport.engine.duckdb import behaviour as duck_behaviour
from segport.engine.duckdb import events as duck_events
from segport.engine.duckdb.engine import DuckDBEngine
from segport.engine.duckdb.rules import DuckDBRules
from tests.behaviour_reference import Ev, members, rule_members

MIN_MS = 60_000
DAY_MS = 24 * HOUR_MS
PROJECT = "p"
USERS = [1, 2, 3, 4, 5, 6]  # 5 and 6 never have events; gio_id 9 has events but is no user
STORED = {"amount": "BIGINT", "price": "DOUBLE", "city": "VARCHAR", "$path": "VARCHAR"}
ATTRIBUTES = Catalog(
    [
        CatalogEntry("amount", KeyKind.PROPERTY, "amount", ValueType.INT),
        CatalogEntry("price", KeyKind.PROPERTY, "price", ValueType.DOUBLE),
        CatalogEntry("city", KeyKind.PROPERTY, "city", ValueType.STRING),
        CatalogEntry("$path", KeyKind.PROPERTY, "$path", ValueType.STRING),
        CatalogEntry("coupon", KeyKind.PROPERTY, "coupon", ValueType.STRING),  # catalogued, never stored
    ]
)
SCHEMA = EventSchema(["a", "b", "c"], ATTRIBUTES)


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


class Rig:
    """Both engines, one project each, holding the events of the case at hand."""

    def __init__(self, folder: Path, chdb_dir: Path) -> None:
        self.duck = DuckDBEngine(folder / "profiles.duckdb")
        self.ch = ClickHouseEngine(f"chdb://{chdb_dir}?database=t_{uuid.uuid4().hex[:12]}", scratch=folder / "scratch")
        for engine in (self.duck, self.ch):
            engine.ensure_project(PROJECT, Catalog([]))
            engine.ensure_project("empty", Catalog([]))  # a project without an event table
        with self.duck._cursor() as cur:
            for project in (PROJECT, "empty"):
                cur.execute(f'INSERT INTO "users_{project}" (gio_id) SELECT unnest(?::BIGINT[])', [USERS])
            duck_events.ensure_store(cur, PROJECT, STORED)
        client = self.ch.client()
        for project in (PROJECT, "empty"):
            client.command(
                f"INSERT INTO {self.ch.table(self.ch.current(project).users)} (gio_id) SELECT arrayJoin({USERS})"
            )
        ch_events._ensure_store(self.ch, PROJECT, STORED)
        self.loaded: list[Ev] | None = None

    def close(self) -> None:
        self.duck.close()
        self.ch.close()

    def load(self, events: list[Ev]) -> None:
        if events == self.loaded:
            return
        cols = ["gio_id", "$time", "$event", "$type", *STORED]
        rows = [
            [e.gio_id, e.time_ms, e.event, "CUSTOM", *(e.attrs.get(c) for c in STORED)]
            for e in sorted(events, key=lambda e: e.time_ms)
        ]
        with self.duck._cursor() as cur:
            cur.execute(f"DELETE FROM {duck_events.events_table(PROJECT)}")
            if rows:
                names = ", ".join(duck_events.q(c) for c in cols)
                marks = ", ".join("epoch_ms(?::BIGINT)" if c == "$time" else "?" for c in cols)
                cur.executemany(f"INSERT INTO {duck_events.events_table(PROJECT)} ({names}) VALUES ({marks})", rows)
        client = self.ch.client()
        client.command(f"TRUNCATE TABLE {ch_events.events_table(self.ch, PROJECT)}")
        if rows:
            for row in rows:
                row[1] = dt.datetime.fromtimestamp(row[1] / 1000, dt.UTC)
            client.insert(f"events_{PROJECT}", rows, column_names=cols, database=self.ch.db_name)
        self.loaded = list(events)

    def members(self, cond: Condition, now_ms: int, tz: str, project: str = PROJECT) -> tuple[set[int], set[int]]:
        """(DuckDB's members, ClickHouse's members) of ``cond``."""
        ctx = BehaviourContext(project, SCHEMA, now_ms, tz)
        with self.duck._cursor() as cur:
            rules = DuckDBRules.on_events(*duck_behaviour.event_table(cur, project))(Catalog([]), "u", behaviour=ctx)
            sql = rules.event_condition(cond)  # the dialect's hook, as the rule compiler calls it
            found = cur.execute(f'SELECT u.gio_id FROM "users_{project}" u WHERE {sql}', rules.params).fetchall()
        duck = {int(r[0]) for r in found}
        dialect = ClickHouseRules.on_events(*ch_behaviour.event_table(self.ch, project))
        ch_rules = dialect(Catalog([]), "u", behaviour=ctx)
        sql = ch_rules.event_condition(cond)
        users = self.ch.table(self.ch.current(project).users)
        ch = {
            int(r[0])
            for r in self.ch.client()
            .query(f"SELECT u.gio_id FROM {users} AS u WHERE {sql}", parameters=rule_parameters(ch_rules.params))
            .result_rows
        }
        return duck, ch

    def check(self, cond: Condition, events: list[Ev], now_ms: int, tz: str, expected: set[int] | None = None) -> None:
        """Both engines' members == the reference's (== ``expected`` when the case states it)."""
        self.load(events)
        want = members(cond, events, USERS, now_ms, tz)
        if expected is not None:
            assert want == expected, f"the reference evaluator itself: {cond}"
        duck, ch = self.members(cond, now_ms, tz)
        assert duck == want, f"DuckDB: {cond}\nevents: {events}"
        assert ch == want, f"ClickHouse: {cond}\nevents: {events}"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, chdb_dir: Path) -> Iterator[Rig]:
    made = Rig(tmp_path_factory.mktemp("behaviour"), chdb_dir)
    yield made
    made.close()


# --- randomised ---------------------------------------------------------------------------------------------
NOW = ms("2026-03-29T12:00:00+02:00")  # Europe/Berlin went to summer time that night
ZONES = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"]
# event times on a coarse grid around NOW (equal times are frequent), some after NOW
times = st.integers(-4 * 48, 4).map(lambda k: NOW + k * 30 * MIN_MS + (7 * MIN_MS if k % 7 == 0 else 0))
attrs = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.integers(-1, 4),
        "price": st.integers(0, 8).map(lambda k: k / 2),
        "city": st.sampled_from(["bj", "sh", "bjx"]),
        "$path": st.sampled_from(["/", "/cart"]),
    },
)
events_st = st.lists(
    st.builds(Ev, st.sampled_from([1, 2, 3, 4, 9]), times, st.sampled_from(["a", "b", "c"]), attrs), max_size=30
)
leaves = st.one_of(
    st.builds(
        lambda op, v: {"key": "amount", "op": op, "value": v},
        st.sampled_from(["eq", "ne", "gte", "lt"]),
        st.integers(0, 3),
    ),
    st.builds(lambda v: {"key": "price", "op": "between", "value": [v, v + 1.5]}, st.integers(0, 3)),
    st.builds(
        lambda op, v: {"key": "city", "op": op, "value": v},
        st.sampled_from(["eq", "contains"]),
        st.sampled_from(["bj", "sh"]),
    ),
    st.builds(
        lambda v: {"key": "city", "op": "in", "value": v},
        st.lists(st.sampled_from(["bj", "sh", "x"]), min_size=1, max_size=2),
    ),
    st.builds(
        lambda k, op: {"key": k, "op": op},
        st.sampled_from(["amount", "$path", "coupon"]),
        st.sampled_from(["is_null", "not_null"]),
    ),
)
wheres = st.one_of(
    st.none(),
    leaves,
    st.builds(lambda x: {"not": x}, leaves),
    st.builds(lambda x, y: {"or": [x, y]}, leaves, leaves),
)
steps = st.builds(Step, st.sampled_from(["a", "b", "c"]), wheres)
time_specs = st.one_of(
    st.none(),
    st.builds(lambda n: TimeSpec("last_days", n), st.integers(1, 4)),
    st.builds(lambda n: TimeSpec("last_hours", n), st.integers(1, 30)),
    st.builds(
        lambda d, n: TimeSpec("between", start=f"2026-03-{d:02d}", end=f"2026-03-{d + n:02d}"),
        st.integers(25, 28),
        st.integers(0, 2),
    ),
    st.just(TimeSpec("between", start="2026-03-28T10:00:00+08:00", end="2026-03-29T01:30:00+01:00")),
    st.builds(lambda d: TimeSpec("since", start=f"2026-03-{d:02d}"), st.integers(26, 30)),
)
measures = st.one_of(
    st.sampled_from([Measure("count"), Measure("distinct_days")]),
    st.builds(Measure, st.sampled_from(["sum", "avg", "min", "max", "distinct"]), st.sampled_from(["amount", "price"])),
    st.just(Measure("distinct", "city")),
)
values = st.one_of(
    st.integers(-1, 4),
    st.integers(0, 8).map(lambda k: k / 2),
    st.tuples(st.integers(0, 3), st.integers(0, 3)).map(lambda p: [min(p), max(p)]),
)


@st.composite
def event_conditions(draw: st.DrawFn) -> EventCondition:
    value = draw(values)
    op = "between" if isinstance(value, list) else draw(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]))
    return EventCondition(draw(steps), draw(measures), op, value, draw(time_specs))


gaps = st.sampled_from([None, 0, 30 * MIN_MS, HOUR_MS, 90 * MIN_MS, DAY_MS])
sequences = st.builds(SequenceCondition, st.lists(steps, min_size=2, max_size=3).map(tuple), time_specs, gaps)
drop_offs = st.builds(
    DropOffCondition, steps, steps, st.sampled_from([30 * MIN_MS, HOUR_MS, 3 * HOUR_MS, DAY_MS]), time_specs
)
EXAMPLES = settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@EXAMPLES
@given(events=events_st, conds=st.lists(event_conditions(), min_size=1, max_size=4), tz=st.sampled_from(ZONES))
def test_measures_agree_with_the_reference(rig: Rig, events: list[Ev], conds: list[EventCondition], tz: str) -> None:
    for cond in conds:
        rig.check(cond, events, NOW, tz)


@EXAMPLES
@given(events=events_st, conds=st.lists(sequences, min_size=1, max_size=3), tz=st.sampled_from(ZONES))
def test_sequences_agree_with_the_reference(
    rig: Rig, events: list[Ev], conds: list[SequenceCondition], tz: str
) -> None:
    for cond in conds:
        rig.check(cond, events, NOW, tz)


@EXAMPLES
@given(events=events_st, conds=st.lists(drop_offs, min_size=1, max_size=3), tz=st.sampled_from(ZONES))
def test_drop_offs_agree_with_the_reference(rig: Rig, events: list[Ev], conds: list[DropOffCondition], tz: str) -> None:
    for cond in conds:
        rig.check(cond, events, NOW, tz)


# --- edge cases ---------------------------------------------------------------------------------------------
DID_A = EventCondition(Step("a"))


def test_users_without_events(rig: Rig) -> None:
    events = [Ev(1, NOW - HOUR_MS, "a", {"amount": 2}), Ev(2, NOW - HOUR_MS, "b"), Ev(9, NOW - HOUR_MS, "a")]
    rig.check(DID_A, events, NOW, "UTC", {1})
    rig.check(EventCondition(Step("a"), op="lt", value=1), events, NOW, "UTC", {2, 3, 4, 5, 6})
    rig.check(EventCondition(Step("a"), Measure("sum", "amount"), "eq", 0), events, NOW, "UTC", {2, 3, 4, 5, 6})
    rig.check(EventCondition(Step("a"), Measure("distinct_days"), "lte", 0), events, NOW, "UTC", {2, 3, 4, 5, 6})
    rig.check(EventCondition(Step("a"), Measure("max", "amount"), "lt", 5), events, NOW, "UTC", {1})
    rig.check(EventCondition(Step("a"), Measure("avg", "amount"), "ne", 7), events, NOW, "UTC", {1})
    rig.check(EventCondition(Step("a"), Measure("count"), "ne", 1), events, NOW, "UTC", {2, 3, 4, 5, 6})


def test_a_project_without_an_event_table_has_no_events(rig: Rig) -> None:
    for cond, want in [
        (DID_A, set()),
        (EventCondition(Step("a"), op="lt", value=1), set(USERS)),
        (
            EventCondition(Step("a", {"key": "amount", "op": "gt", "value": 1}), Measure("sum", "amount"), "lte", 3),
            set(USERS),
        ),
        (EventCondition(Step("a"), Measure("min", "amount"), "lt", 3), set()),
        (SequenceCondition((Step("a"), Step("b"))), set()),
        (DropOffCondition(Step("a"), Step("b"), HOUR_MS), set()),
    ]:
        assert members(cond, [], USERS, NOW, "UTC") == want
        assert rig.members(cond, NOW, "UTC", project="empty") == (want, want)


def test_an_attribute_no_event_carried_yet_is_null(rig: Rig) -> None:
    events = [Ev(1, NOW - HOUR_MS, "a", {"city": "bj"}), Ev(2, NOW - HOUR_MS, "a")]
    rig.check(EventCondition(Step("a", {"key": "coupon", "op": "is_null"})), events, NOW, "UTC", {1, 2})
    rig.check(EventCondition(Step("a", {"key": "coupon", "op": "eq", "value": "x"})), events, NOW, "UTC", set())
    rig.check(EventCondition(Step("a"), Measure("distinct", "coupon"), "eq", 0), events, NOW, "UTC", set(USERS))


def test_events_exactly_on_window_edges(rig: Rig) -> None:
    tz = "Asia/Shanghai"
    start, end = ms("2026-03-20T00:00:00+08:00"), ms("2026-03-23T00:00:00+08:00")
    between = TimeSpec("between", start="2026-03-20", end="2026-03-22")
    events = [
        Ev(1, start, "a"),  # the first instant of START's day: inside
        Ev(2, start - 1, "a"),  # the last instant before: outside
        Ev(3, end - 1, "a"),  # the last instant of END's day: inside
        Ev(4, end, "a"),  # the day after END: outside
    ]
    rig.check(EventCondition(Step("a"), time=between), events, NOW, tz, {1, 3})
    instants = TimeSpec("between", start="2026-03-20T00:00:00+08:00", end="2026-03-22T23:59:59.999+08:00")
    rig.check(EventCondition(Step("a"), time=instants), events, NOW, tz, {1, 3})
    rig.check(EventCondition(Step("a"), time=TimeSpec("since", start="2026-03-20")), events, NOW, tz, {1, 3, 4})
    hours = [Ev(1, NOW - 2 * HOUR_MS, "b"), Ev(2, NOW - 2 * HOUR_MS - 1, "b"), Ev(3, NOW, "b"), Ev(4, NOW + 1, "b")]
    rig.check(EventCondition(Step("b"), time=TimeSpec("last_hours", 2)), hours, NOW, tz, {1, 3})
    rig.check(EventCondition(Step("b")), hours, NOW, tz, {1, 2, 3, 4})  # no window: every event, later ones too


def test_last_days_just_after_midnight(rig: Rig) -> None:
    for tz in ("Asia/Shanghai", "America/New_York"):
        zone = ZoneInfo(tz)
        now = int(dt.datetime(2026, 5, 2, 0, 10, tzinfo=zone).timestamp() * 1000)
        midnight = int(dt.datetime(2026, 5, 2, tzinfo=zone).timestamp() * 1000)
        events = [
            Ev(1, midnight, "a"),
            Ev(2, midnight - 1, "a"),
            Ev(3, midnight - DAY_MS, "a"),
            Ev(4, midnight - DAY_MS - 1, "a"),
        ]
        rig.check(EventCondition(Step("a"), time=TimeSpec("last_days", 1)), events, now, tz, {1})
        rig.check(EventCondition(Step("a"), time=TimeSpec("last_days", 2)), events, now, tz, {1, 2, 3})
        rig.check(
            EventCondition(Step("a"), Measure("distinct_days"), "gte", 2, TimeSpec("last_days", 3)),
            [*events, Ev(1, midnight - 1, "a")],
            now,
            tz,
            {1},
        )


def test_distinct_days_in_the_project_time_zone(rig: Rig) -> None:
    # Europe/Berlin moved its clocks from 02:00 to 03:00 on 2026-03-29: that day has 23 hours
    berlin = [
        Ev(1, ms("2026-03-28T23:30:00+01:00"), "a"),
        Ev(1, ms("2026-03-29T00:30:00+01:00"), "a"),  # the next local day
        Ev(2, ms("2026-03-29T00:30:00+01:00"), "a"),
        Ev(2, ms("2026-03-29T23:30:00+02:00"), "a"),  # still 29 March there (21:30 UTC)
        Ev(3, ms("2026-03-29T01:59:00+01:00"), "a"),
        Ev(3, ms("2026-03-29T03:00:00+02:00"), "a"),  # one minute later, the same day
    ]
    two_days = EventCondition(Step("a"), Measure("distinct_days"), "eq", 2)
    rig.check(two_days, berlin, NOW, "Europe/Berlin", {1})
    rig.check(two_days, berlin, NOW, "UTC", {2})
    # Asia/Shanghai's days start at 16:00 UTC
    shanghai = [Ev(1, ms("2026-03-20T15:59:59+00:00"), "a"), Ev(1, ms("2026-03-20T16:00:00+00:00"), "a")]
    rig.check(two_days, shanghai, NOW, "Asia/Shanghai", {1})
    rig.check(two_days, shanghai, NOW, "UTC", set())


def test_equal_times_are_not_an_order(rig: Rig) -> None:
    t = NOW - 5 * HOUR_MS
    events = [
        Ev(1, t, "a"),
        Ev(1, t, "b"),  # the same instant: no sequence
        Ev(2, t, "a"),
        Ev(2, t, "b"),
        Ev(2, t + 1, "b"),  # one millisecond later: a sequence
        Ev(3, t, "a"),
        Ev(3, t + 1, "a"),  # a then a: two events, one step each
        Ev(4, t, "a"),  # one a cannot serve both steps
    ]
    rig.check(SequenceCondition((Step("a"), Step("b"))), events, NOW, "UTC", {2})
    rig.check(SequenceCondition((Step("a"), Step("a"))), events, NOW, "UTC", {3})
    rig.check(SequenceCondition((Step("a"), Step("b")), max_gap_ms=0), events, NOW, "UTC", set())
    rig.check(SequenceCondition((Step("a"), Step("b")), max_gap_ms=1), events, NOW, "UTC", {2})
    # a drop-off: a B at the same instant as A does not follow it
    rig.check(DropOffCondition(Step("a"), Step("b"), HOUR_MS), events, NOW, "UTC", {1, 3, 4})


def test_max_gap_chains_from_the_latest_step_not_the_earliest(rig: Rig) -> None:
    t = NOW - 20 * HOUR_MS
    events = [
        Ev(1, t, "a"),
        Ev(1, t + 10 * HOUR_MS, "a"),
        Ev(1, t + 11 * HOUR_MS, "b"),  # 1 h after the second a, 11 h after the first
        Ev(2, t, "a"),
        Ev(2, t + HOUR_MS, "b"),  # the earliest chain a -> b ...
        Ev(2, t + 5 * HOUR_MS, "a"),
        Ev(2, t + 6 * HOUR_MS, "b"),
        Ev(2, t + 7 * HOUR_MS, "c"),  # ... reaches c only through the later a -> b
        Ev(3, t, "a"),
        Ev(3, t + 3 * HOUR_MS, "b"),
        Ev(3, t + 4 * HOUR_MS, "c"),  # b too far from a
    ]
    gap = 2 * HOUR_MS
    rig.check(SequenceCondition((Step("a"), Step("b")), max_gap_ms=gap), events, NOW, "UTC", {1, 2})
    rig.check(SequenceCondition((Step("a"), Step("b"), Step("c")), max_gap_ms=gap), events, NOW, "UTC", {2})
    rig.check(SequenceCondition((Step("a"), Step("b"), Step("c"))), events, NOW, "UTC", {2, 3})
    # the window holds only the later events of user 2: the chain still exists inside it
    rig.check(
        SequenceCondition((Step("a"), Step("b"), Step("c")), TimeSpec("last_hours", 16), gap), events, NOW, "UTC", {2}
    )


def test_drop_off_followers_outside_the_window_count(rig: Rig) -> None:
    day = TimeSpec("between", start="2026-03-27", end="2026-03-27")
    late_a = ms("2026-03-27T23:30:00+00:00")
    events = [
        Ev(1, late_a, "a"),
        Ev(1, late_a + HOUR_MS, "b"),  # the next day, outside the window, within the hour after: followed
        Ev(2, late_a, "a"),
        Ev(2, late_a + 2 * HOUR_MS, "b"),  # too late: dropped off
        Ev(3, late_a, "a", {"amount": 1}),
        Ev(3, late_a + 1, "b", {"amount": 5}),
        Ev(4, late_a - 10 * HOUR_MS, "a"),
        Ev(4, late_a - 10 * HOUR_MS + HOUR_MS, "b"),  # exactly `within` later: followed
    ]
    cond = DropOffCondition(Step("a"), Step("b"), HOUR_MS, day)
    rig.check(cond, events, NOW, "UTC", {2})
    filtered = DropOffCondition(Step("a"), Step("b", {"key": "amount", "op": "lt", "value": 3}), HOUR_MS, day)
    rig.check(filtered, events, NOW, "UTC", {1, 2, 3, 4})  # a b without amount does not pass the where


def test_where_values_are_parameters_in_text_order(rig: Rig) -> None:
    """Several steps' ``where`` in one statement: DuckDB's positional parameters follow the text."""
    t = NOW - 3 * HOUR_MS
    events = [
        Ev(1, t, "a", {"city": "bj", "amount": 1}),
        Ev(1, t + MIN_MS, "b", {"price": 2.5, "amount": 2}),
        Ev(1, t + 2 * MIN_MS, "c", {"$path": "/cart"}),
        Ev(2, t, "a", {"city": "sh", "amount": 1}),
        Ev(2, t + MIN_MS, "b", {"price": 2.5}),
        Ev(2, t + 2 * MIN_MS, "c", {"$path": "/cart"}),
    ]
    seq = SequenceCondition(
        (
            Step(
                "a", {"and": [{"key": "city", "op": "eq", "value": "bj"}, {"key": "amount", "op": "gte", "value": 1}]}
            ),
            Step("b", {"key": "price", "op": "between", "value": [2, 3]}),
            Step("c", {"key": "$path", "op": "in", "value": ["/cart", "/pay"]}),
        ),
        max_gap_ms=HOUR_MS,
    )
    rig.check(seq, events, NOW, "UTC", {1})
    rig.check(seq.__class__(seq.steps, seq.time, None), events, NOW, "UTC", {1})


# --- through compute_segment: JSON rules (the parser), property leaves beside event conditions ---------------
E2E_CATALOG = Catalog(
    [
        CatalogEntry("id_$basic_userId", KeyKind.IDENTITY, "user id", ValueType.STRING),
        CatalogEntry("usr_vip", KeyKind.PROPERTY, "vip", ValueType.STRING),
    ]
)
E2E_ATTRIBUTES = [EventAttribute("amount", "amount", ValueType.INT)]
E2E_SCHEMA = event_schema(["pay", "view"], E2E_ATTRIBUTES)
E2E_RULES = [
    {"and": [{"key": "usr_vip", "op": "eq", "value": "y"}, {"not": {"event": "pay"}}]},
    {
        "or": [
            {"key": "usr_vip", "op": "eq", "value": "n"},
            {"event": "pay", "measure": {"sum": "amount"}, "op": "gte", "value": 5},
        ]
    },
    {
        "event": "pay",
        "where": {"key": "amount", "op": "gt", "value": 1},
        "op": "gte",
        "value": 2,
        "time": {"last_days": 3},
    },
    {
        "and": [
            {
                "sequence": [
                    {"event": "view", "where": {"key": "$path", "op": "eq", "value": "/cart"}},
                    {"event": "pay"},
                ],
                "max_gap": {"hours": 2},
            },
            {"not": {"key": "usr_vip", "op": "is_null"}},
        ]
    },
    {
        "event": "view",
        "time": {"last_hours": 30},
        "not_followed_by": {
            "event": "pay",
            "where": {"key": "amount", "op": "gte", "value": 2},
            "within": {"hours": 1},
        },
    },
    {"event": "view", "measure": "distinct_days", "op": "lt", "value": 2},
]


# measures of every kind for the shared pass: the same measure twice, zero values that match, no value
SHARED_RULES: list[Any] = [
    {"event": "pay", "measure": {"sum": "amount"}, "op": "lt", "value": 4},
    {"event": "pay", "measure": {"sum": "amount"}, "op": "gte", "value": 4, "time": {"last_hours": 4}},
    {
        "or": [
            {"event": "pay", "measure": {"avg": "amount"}, "op": "gt", "value": 2},
            {"event": "view", "op": "eq", "value": 0},
        ]
    },
    {"event": "pay", "measure": {"min": "amount"}, "op": "lte", "value": 2},
    {"event": "view", "measure": {"distinct": "$path"}, "op": "ne", "value": 2},
    {
        "not": {
            "event": "pay",
            "where": {"key": "amount", "op": "gte", "value": 3},
            "measure": "count",
            "op": "between",
            "value": [1, 1],
        }
    },
    {"event": "view", "measure": {"max": "amount"}, "op": "lt", "value": 100},
]


def _parsed(rule: Any) -> Any:
    """A JSON rule with its event conditions parsed (the reference evaluator's input)."""
    if is_event_condition(rule):
        return parse_condition(rule, "rule", E2E_SCHEMA)
    if "and" in rule or "or" in rule:
        name = "and" if "and" in rule else "or"
        return {name: [_parsed(r) for r in rule[name]]}
    if "not" in rule:
        return {"not": _parsed(rule["not"])}
    return rule


@pytest.mark.parametrize("engine_name", ["duckdb", "clickhouse"])
def test_compute_segment_with_event_conditions(rig: Rig, tmp_path: Path, engine_name: str) -> None:
    engine: Any = rig.duck if engine_name == "duckdb" else rig.ch
    project = f"e2e{engine_name[0]}"
    engine.ensure_project(project, E2E_CATALOG)
    users = tmp_path / "users.csv"
    users.write_text("id_$basic_userId,usr_vip\nU1,y\nU2,n\nU3,y\nU4,\n", encoding="utf-8")
    engine.import_users(project, E2E_CATALOG, users, "csv", "id_$basic_userId", [])
    now = int(time.time() * 1000)

    def compute(rule: Any, key: str) -> set[int]:
        ctx = BehaviourContext(project, E2E_SCHEMA, now, "Asia/Shanghai")
        result = engine.compute_segment(
            project, SegmentDefinition(key, rule_tree=rule, catalog=E2E_CATALOG, behaviour=ctx)
        )
        page = engine.members_page(project, Target("segment", key), [], 100, 0)
        assert result.total_users == page.total
        return {int(r["gio_id"]) for r in page.rows}

    # no event table yet: no events
    assert compute(E2E_RULES[0], "seg_none") == {1, 3}
    assert compute({"event": "pay"}, "seg_none") == set()

    hours = [30, 26, 5, 3.5, 3, 2, 1]
    rows = [
        ("view", "U1", hours[2], None, "/cart"),
        ("pay", "U1", hours[3], 3, None),
        ("pay", "U1", hours[6], 3, None),
        ("view", "U2", hours[0], None, "/"),
        ("view", "U2", hours[4], None, "/cart"),
        ("pay", "U2", hours[5], 1, None),
        ("view", "U3", hours[1], None, "/cart"),
        ("pay", "U3", hours[4], 9, None),
        ("pay", "U5", hours[5], 2, None),  # a new user, made by the event
    ]
    events_file = tmp_path / "events.jsonl"
    with open(events_file, "w", encoding="utf-8") as f:
        for name, uid, ago, amount, path in rows:
            record: dict[str, Any] = {"event": name, "time": now - int(ago * HOUR_MS), "userId": uid}
            if amount is not None:
                record["amount"] = amount
            if path is not None:
                record["$path"] = path
            f.write(json.dumps(record) + "\n")
    engine.import_events(project, E2E_CATALOG, E2E_ATTRIBUTES, events_file, "jsonl")
    gio = {"U1": 1, "U2": 2, "U3": 3, "U5": 5}
    events = [
        Ev(
            gio[uid],
            now - int(ago * HOUR_MS),
            name,
            {k: v for k, v in (("amount", amount), ("$path", path)) if v is not None},
        )
        for name, uid, ago, amount, path in rows
    ]
    props = {1: {"usr_vip": "y"}, 2: {"usr_vip": "n"}, 3: {"usr_vip": "y"}, 4: {}, 5: {}}
    # what the reference must find (the last one depends on the hour the test runs at)
    expected: list[set[int] | None] = [set(), {1, 2, 3}, {1}, {1, 2}, {1, 2, 3}, None]
    for i, rule in enumerate(E2E_RULES):
        want = rule_members(_parsed(rule), props, events, now, "Asia/Shanghai")
        assert expected[i] is None or want == expected[i], rule
        assert compute(rule, f"seg_{i}") == want, rule
    assert compute(E2E_RULES[0], "seg_none") == set()  # recomputed: U1 and U3 paid since

    # the DAILY recompute: all of them together, their measures read in one pass over the events
    ctx = BehaviourContext(project, E2E_SCHEMA, now, "Asia/Shanghai")
    together = [*E2E_RULES, *SHARED_RULES, {"key": "usr_vip", "op": "eq", "value": "y"}]
    definitions = [
        SegmentDefinition(f"seg_all{i}", rule_tree=rule, catalog=E2E_CATALOG, behaviour=ctx)
        for i, rule in enumerate(together)
    ]
    results = engine.compute_segments(project, definitions)
    for i, rule in enumerate(together):
        want = rule_members(_parsed(rule), props, events, now, "Asia/Shanghai")
        page = engine.members_page(project, Target("segment", f"seg_all{i}"), [], 100, 0)
        assert {int(r["gio_id"]) for r in page.rows} == want, rule
        assert results[f"seg_all{i}"].total_users == len(want)

    # a users import recomputes them in its transaction, sharing the passes the same way (U4 becomes a VIP)
    users.write_text("id_$basic_userId,usr_vip\nU4,y\n", encoding="utf-8")
    props[4] = {"usr_vip": "y"}
    report = engine.import_users(project, E2E_CATALOG, users, "csv", "id_$basic_userId", definitions)
    for i, rule in enumerate(together):
        want = rule_members(_parsed(rule), props, events, now, "Asia/Shanghai")
        assert report.segments[f"seg_all{i}"] == len(want), rule
        page = engine.members_page(project, Target("segment", f"seg_all{i}"), [], 100, 0)
        assert {int(r["gio_id"]) for r in page.rows} == want, rule


def _duck_rows_scanned(node: Any) -> int:
    if isinstance(node, dict):
        own = int(node.get("rows_scanned", 0)) if node.get("type") == "TABLE_SCAN" else 0
        return own + sum(_duck_rows_scanned(v) for k, v in node.items() if k in ("operator", "children"))
    if isinstance(node, list):
        return sum(_duck_rows_scanned(v) for v in node)
    return 0


def test_a_window_bounds_the_event_scan(rig: Rig) -> None:
    """600,000 events over 90 days: a 7-day condition reads about a tenth of them (DuckDB: the zone maps of
    its row groups; ClickHouse: its monthly partitions and its (time, gio_id) primary key)."""
    project, total, span = "big", 600_000, 90 * DAY_MS
    now = ms("2026-06-30T12:00:00+00:00")
    rows = f"{now - span} + i * {span // total}"
    cond = EventCondition(Step("pay"), op="gte", value=1, time=TimeSpec("last_days", 7))
    ctx = BehaviourContext(project, SCHEMA, now, "UTC")
    with rig.duck._cursor() as cur:
        cur.execute(f'CREATE TABLE IF NOT EXISTS "users_{project}" AS SELECT range AS gio_id FROM range(1, 1001)')
        duck_events.ensure_store(cur, project, {})
        cur.execute(
            f'INSERT INTO "events_{project}" (gio_id, "$time", "$event", "$type") SELECT 1 + i % 1000, '
            f"epoch_ms(({rows})::BIGINT), CASE WHEN i % 3 = 0 THEN 'pay' ELSE 'view' END, 'CUSTOM' FROM range({total}) t(i)"
        )
        rules = DuckDBRules.on_events(*duck_behaviour.event_table(cur, project))(Catalog([]), "u", behaviour=ctx)
        sql = rules.event_condition(cond)
        cur.execute("SET enable_profiling = 'no_output'")
        cur.execute("SET profiling_mode = 'detailed'")
        found = cur.execute(f'SELECT count(*) FROM "users_{project}" u WHERE {sql}', rules.params).fetchone()
        info = json.loads(cur.get_profiling_information(format="json"))
        cur.execute("RESET enable_profiling")
    assert found == (1000,)
    scanned = _duck_rows_scanned(info) - 1000  # the users table's rows
    assert 0 < scanned < total * 0.3, scanned

    client = rig.ch.client()
    rig.ch.ensure_project(project, Catalog([]))
    client.command(
        f"INSERT INTO {rig.ch.table(rig.ch.current(project).users)} (gio_id) SELECT number + 1 FROM numbers(1000)"
    )
    ch_events._ensure_store(rig.ch, project, {})
    client.command(
        f"INSERT INTO {ch_events.events_table(rig.ch, project)} (gio_id, `$time`, `$event`, `$type`) SELECT "
        f"1 + number % 1000, fromUnixTimestamp64Milli(toInt64({rows.replace('i', 'number')}), 'UTC'), "
        f"if(number % 3 = 0, 'pay', 'view'), 'CUSTOM' FROM numbers({total})"
    )
    rules = ClickHouseRules.on_events(*ch_behaviour.event_table(rig.ch, project))(Catalog([]), "u", behaviour=ctx)
    sql = rules.event_condition(cond)
    statement = f"SELECT count() FROM {rig.ch.table(rig.ch.current(project).users)} AS u WHERE {sql}"
    assert client.query(statement, parameters=rule_parameters(rules.params)).result_rows[0][0] == 1000
    assert sql.startswith("(u.gio_id IN (") and sql.endswith("))")
    inner = sql.removeprefix("(u.gio_id IN (").removesuffix("))")  # the semi-join's event scan
    plan = client.query(f"EXPLAIN ESTIMATE {inner}", parameters=rule_parameters(rules.params)).result_rows
    read = sum(int(r[3]) for r in plan if str(r[1]) == f"events_{project}")
    assert 0 < read < total * 0.3, plan
