"""What several segments computed together share, and DuckDB's distinct days as bits: which measure conditions
share a pass (one event name, overlapping windows), what each aggregate of the pass still tests, and the count
of distinct days of a window up to 127 days long as the bits set in one integer (checked against the domain's
days, across a daylight-saving change). The members of shared passes are checked against the reference
evaluator in tests/test_behaviour_engines.py."""

from __future__ import annotations

import datetime as dt

import duckdb

from segport.domain.behaviour import (
    DAY_MS,
    HOUR_MS,
    BehaviourContext,
    EventCondition,
    EventSchema,
    Measure,
    Step,
    TimeSpec,
    Window,
    day_of,
)
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.engine.behaviour_sql import shared_groups
from segport.engine.duckdb.behaviour import DuckDBEventSQL
from segport.engine.duckdb.rules import DuckDBRules

NOW = int(dt.datetime(2026, 6, 30, 12, tzinfo=dt.UTC).timestamp() * 1000)
SCHEMA = EventSchema(["pay", "login"], Catalog([CatalogEntry("amount", KeyKind.PROPERTY, "amount", ValueType.DOUBLE)]))


def cond(event: str, measure: Measure, spec: TimeSpec | None, value: int = 1) -> EventCondition:
    return EventCondition(Step(event), measure, "gte", value, spec)


def event_sql(zone: str = "UTC", now: int = NOW) -> DuckDBEventSQL:
    ctx = BehaviourContext("P", SCHEMA, now, zone)
    rules = DuckDBRules(Catalog([]), "u", behaviour=ctx)
    return DuckDBEventSQL(ctx, rules, "ev", {"gio_id": "BIGINT", "amount": "DOUBLE"})


def test_measures_of_one_name_share_a_pass_when_their_windows_overlap() -> None:
    last = {n: TimeSpec("last_days", n) for n in (7, 30, 90)}
    january = TimeSpec("between", start="2026-01-01", end="2026-01-07")
    conds = [
        cond("pay", Measure("count"), last[7]),
        cond("pay", Measure("count"), last[90], 3),
        cond("pay", Measure("sum", "amount"), last[30], 500),
        cond("pay", Measure("count"), last[7], 2),  # the same measure as the first: one column
        cond("pay", Measure("max", "amount"), january),  # months before the others: its own statement
        cond("pay", Measure("distinct_days"), last[30]),  # a distinct count: its own statement
        cond("login", Measure("count"), last[30]),  # the only measure of its name
    ]
    groups = shared_groups(conds, NOW, "UTC")
    assert [[(c.measure.kind, c.time) for c in g] for g in groups] == [
        [("count", last[90]), ("sum", last[30]), ("count", last[7])]
    ]
    # windows chained by overlap share; one apart from them does not, however many there are
    chained = [
        cond("pay", Measure("count"), TimeSpec("between", start="2026-01-01", end="2026-01-10")),
        cond("pay", Measure("sum", "amount"), TimeSpec("between", start="2026-01-10", end="2026-01-20")),
        cond("pay", Measure("max", "amount"), TimeSpec("between", start="2026-01-15", end="2026-01-30")),
        cond("pay", Measure("min", "amount"), TimeSpec("between", start="2026-03-01", end="2026-03-02")),
        cond("pay", Measure("avg", "amount"), TimeSpec("since", start="2026-04-01")),
    ]
    assert [len(g) for g in shared_groups(chained, NOW, "UTC")] == [3]
    unbounded = [cond("pay", Measure("count"), None), cond("pay", Measure("sum", "amount"), january)]
    assert [len(g) for g in shared_groups(unbounded, NOW, "UTC")] == [2]


def test_a_pass_filters_each_aggregate_only_by_what_its_scan_does_not() -> None:
    ninety = cond("pay", Measure("count"), TimeSpec("last_days", 90))
    thirty = cond("pay", Measure("sum", "amount"), TimeSpec("last_days", 30))
    built = event_sql().shared_pass([ninety, thirty])
    assert built is not None
    select, where = built[0].split(" WHERE ", 1)[0], built[0].split(" FROM ", 1)[1]
    # the widest window's count is a plain count; the 30 days' sum tests its start only (its end is the pass's)
    assert "count(*) AS m0" in select and 'sum(e."amount") FILTER (WHERE e."$time" >= ' in select
    assert select.count('e."$time"') == 1 and "$event" not in select
    assert "\"$event\" IN ('pay')" in where and where.count('e."$time"') == 2

    # with an unbounded count of the big payments: the pass is unbounded, each aggregate tests its own bounds
    big = EventCondition(Step("pay", {"key": "amount", "op": "gt", "value": 9}), Measure("count"), "gte", 1)
    events = event_sql()
    built = events.shared_pass([ninety, thirty, big])
    assert built is not None
    sql, columns = built
    select, where = sql.split(" FROM ", 1)
    assert select.count('e."$time" >=') == 2 and select.count('e."$time" <') == 2
    assert 'count(*) FILTER (WHERE coalesce(e."amount" > CAST(? AS DOUBLE), false)) AS m2' in select
    assert '"$time"' not in where and len(columns) == 3 and events.rules.params == [9]


def test_distinct_days_of_up_to_127_days_are_bits_and_agree_with_the_domain() -> None:
    con = duckdb.connect()
    zone = "America/New_York"  # summer time ends on 2026-11-01: the window crosses it
    end = int(dt.datetime(2026, 12, 20, 12, tzinfo=dt.UTC).timestamp() * 1000)
    events = event_sql(zone, end)
    for days, bits in ((127, True), (128, False), (1, True)):
        first = dt.datetime.combine(day_of(end, zone) - dt.timedelta(days=days - 1), dt.time())
        start = int(first.replace(tzinfo=dt.UTC).timestamp() * 1000) + 5 * HOUR_MS  # 00:00 EST
        window = Window(start, end)
        expr = events.distinct_days("epoch_ms(t)", window)
        assert ("bit_or" in expr) == bits, days
        # one user every day of the window, at its first and last minute; another every third day at noon
        times = [(1, start), (1, end - 1)]
        times += [(1, t) for t in range(start, end, DAY_MS)] + [
            (2, t) for t in range(start + 7 * HOUR_MS, end, 3 * DAY_MS)
        ]
        got = dict(
            con.execute(
                f"SELECT g, {expr} FROM (SELECT unnest(?::BIGINT[]) AS g, unnest(?::BIGINT[]) AS t) GROUP BY g",
                [[g for g, _ in times], [t for _, t in times]],
            ).fetchall()
        )
        want = {g: len({day_of(t, zone) for h, t in times if h == g}) for g in {h for h, _ in times}}
        assert got == want, days
        assert got[1] == days
