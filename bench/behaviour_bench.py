"""Behaviour segments and tags: segport's computation against a hand-written SQL statement on the same engine.

    .venv/bin/python bench/behaviour_bench.py                                    # 10M users, 100M events
    .venv/bin/python bench/behaviour_bench.py --users 1000000 --events 10000000  # quicker
    .venv/bin/python bench/behaviour_bench.py --only pay2_30d,no_login_7d --repeat 5

What it does, in one run:

1. **Data** (cached in ``bench/out/behaviour-<engine>-<users>-<events>/``; ``--fresh`` rebuilds): a project
   made through segport (project, catalogue, declared event attributes and event names in the metadata store;
   the users table and the event table created by segport's own code), then filled with the engine's own SQL:
   ``--users`` users (``gio_id`` 1..N and a city) and ``--events`` events over the 90 days before the data's
   clock, inserted in time order as segport stores them. 30% of the users have no events; among the others
   activity is skewed (user ``1 + floor(0.7 N u²)`` for a uniform ``u``: the lowest ids are the heaviest).
   Events: page_view 40% (``$path``), login 15%, view_item 15%, add_to_cart 10%, search 8%, logout 5%, pay 4%
   (``amount``, a double, skewed towards small sums), share 3%; every event has a ``channel`` (12 values).
   Event times are distinct (one every 90 days / M), so "first"/"last" never meet a tie.
2. **Cases**, each computed by segport and by a hand-written statement, ``--repeat`` times alternating (each
   run a fresh process of its own, one at a time, on the same file, the same DuckDB ``memory_limit`` and
   threads): segport opens the engine as the engine process does (``segport.roles.engine.build``: the engine
   behind its memory admission) and calls ``compute_segment`` (a segment's membership table, sorted by
   ``gio_id``) or its tag computation (the tag's column of the users table); the hand-written side runs one
   ``CREATE OR REPLACE TABLE hand_<case> AS SELECT … ORDER BY gio_id`` in a transaction. Both sides use the
   same clock (the data's), so relative windows resolve to the same bounds. After the runs the two outputs
   are compared row by row (a difference stops the bench). Printed per case: wall and CPU seconds (medians),
   their ratios (target ≤ 1.25×), and the peak RSS of each side's process tree (sampled every 20 ms).
3. **Ten segments together**: the ten segments of ``TEN`` recomputed by segport together, in one
   ``compute_segments`` (what the DAILY scheduler calls: one snapshot, the measures of one event name with
   overlapping windows read in one pass over the events), against the ten hand-written statements run one after
   another in one process; the ten memberships are compared with the ten hand-written tables (target: faster).

Results are printed and written as JSON to ``bench/out/behaviour-results-<engine>-<users>-<events>.json``.
The machine this runs on may be shared: ratios are taken within one run, from alternating runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
P = "Behave01"
TZ = "Asia/Shanghai"
DAY_MS = 86_400_000
SPAN_DAYS = 90
TARGET = 1.25
# event name -> share in percent (cumulative buckets of hash % 100)
EVENTS = [
    ("page_view", 40),
    ("login", 15),
    ("view_item", 15),
    ("add_to_cart", 10),
    ("search", 8),
    ("logout", 5),
    ("pay", 4),
    ("share", 3),
]
ATTRIBUTES = [("amount", "金额", "double"), ("channel", "渠道", "string")]
STANDARD = {"$path": "VARCHAR"}


# --- data ----------------------------------------------------------------------------------------------------
def data_dir_for(engine: str, users: int, events: int) -> Path:
    return OUT / f"behaviour-{engine}-{users}-{events}"


def event_name_sql(bucket: str) -> str:
    """The event name of a row from its bucket ``0..99`` (the shares of ``EVENTS``)."""
    whens, edge = [], 0
    for name, share in EVENTS[:-1]:
        edge += share
        whens.append(f"WHEN {bucket} < {edge} THEN '{name}'")
    return f"(CASE {' '.join(whens)} ELSE '{EVENTS[-1][0]}' END)"


def settings_for(data: Path, engine: str, memory: str, threads: int = 2) -> Any:
    """segport's settings for the bench's data dir: DuckDB's ``memory_limit`` and threads, or ClickHouse's
    memory budget (its queries' ``max_memory_usage`` is 80% of it: ``memory``)."""
    from segport.settings import Settings

    if engine == "clickhouse":
        return Settings(data_dir=data, engine="clickhouse", engine_memory_bytes=memory_bytes(memory) * 5 // 4)
    return Settings(data_dir=data, duckdb_memory_limit=memory, duckdb_threads=threads)


def make_project(data: Path, engine: str, memory: str, threads: int = 2) -> None:
    """The project through segport: its catalogue (so its users table), its event attributes and names."""
    from segport.domain.event_files import EventAttribute
    from segport.domain.keys import ValueType
    from segport.roles.engine import build
    from segport.store.event_catalog import EventCatalog

    app = build(settings_for(data, engine, memory, threads))
    try:
        app.meta.create_project(P, "行为基准", TZ)
        app.data.import_catalog_csv(P, "key,name,type\nusr_city,城市,string\n")
        catalog = EventCatalog(app.meta)
        catalog.declare(P, [EventAttribute(k, n, ValueType(t)) for k, n, t in ATTRIBUTES])
        attrs = {"pay": ["amount", "channel"], "page_view": ["channel"]}
        catalog.record(P, [], {name: attrs.get(name, ["channel"]) for name, _ in EVENTS})
    finally:
        app.close()


def generate_duckdb(data: Path, users: int, events: int, now_ms: int, memory: str, threads: int) -> None:
    """The project through segport, then its users and events with DuckDB's own SQL (see the docstring)."""
    import duckdb

    from segport.domain.event_files import DEFAULT_TYPE
    from segport.engine.duckdb import events as ev
    from segport.engine.duckdb.sql import users_table

    make_project(data, "duckdb", memory, threads)
    con = duckdb.connect(str(data / "profiles.duckdb"), config={"memory_limit": memory, "threads": threads})
    try:
        start_ms = now_ms - SPAN_DAYS * DAY_MS
        span = now_ms - start_ms
        active = int(users * 0.7)
        con.execute("BEGIN")
        con.execute(
            f"INSERT INTO {users_table(P)} (gio_id, usr_city) SELECT i, 'city' || (hash(i, 9) % 300) "
            f"FROM range(1, {users + 1}) t(i)"
        )
        con.execute("UPDATE segport_state SET next_gio_id = ? WHERE project = ?", [users + 1, P])
        ev.ensure_store(con, P, {**STANDARD, "amount": "DOUBLE", "channel": "VARCHAR"})
        name = event_name_sql("(hash(i, 2) % 100)")
        # in time order (i increases with time), as segport inserts every load
        con.execute(
            f"""INSERT INTO {ev.events_table(P)} (gio_id, "$time", "$event", "$type", "$batch", "$path", amount, channel)
            SELECT 1 + CAST(floor({active} * pow((hash(i, 1) % 1000000007) / 1000000007.0, 2)) AS BIGINT),
                   epoch_ms(CAST({start_ms} + (i * {span}) // {events} AS BIGINT)),
                   n, '{DEFAULT_TYPE}', NULL,
                   CASE WHEN n = 'page_view' THEN '/p/' || (hash(i, 5) % 50) END,
                   CASE WHEN n = 'pay' THEN round(1 + 2000 * pow((hash(i, 3) % 10000) / 10000.0, 3), 2) END,
                   'ch' || (hash(i, 4) % 12)
            FROM (SELECT i, {name} AS n FROM range({events}) t(i))"""
        )
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def generate_clickhouse(data: Path, users: int, events: int, now_ms: int, memory: str) -> None:
    """As :func:`generate_duckdb`, in ClickHouse (chdb) with its own SQL (its hash functions, so the rows are
    not the DuckDB data's, but drawn the same way): the users into the current snapshot's users table (and
    ``next_gio_id`` moved past them), the events into segport's MergeTree (by month, ordered by time)."""
    from segport.engine.clickhouse import events as chev

    make_project(data, "clickhouse", memory)
    engine = ch_engine(data)
    try:
        client = engine.client()
        snap = engine.current(P)
        client.command(
            f"INSERT INTO {engine.table(snap.users)} (gio_id, usr_city) SELECT number + 1, "
            f"concat('city', toString(cityHash64(number, 9) % 300)) FROM numbers({users})"
        )
        engine.publish(snap.next(data_version=snap.data_version + 1, next_gio_id=users + 1))
        chev._ensure_store(engine, P, {**STANDARD, "amount": "DOUBLE", "channel": "VARCHAR"})
        start_ms = now_ms - SPAN_DAYS * DAY_MS
        span, active = now_ms - start_ms, int(users * 0.7)
        whens, edge = [], 0
        for name, share in EVENTS[:-1]:
            edge += share
            whens.append(f"b < {edge}, '{name}'")
        client.command(
            f"""INSERT INTO {chev.events_table(engine, P)} (gio_id, `$time`, `$event`, `$type`, `$path`, amount, channel)
            SELECT 1 + toInt64(floor({active} * pow((cityHash64(number, 1) % 1000000007) / 1000000007.0, 2))),
                   fromUnixTimestamp64Milli(toInt64({start_ms} + intDiv(number * {span}, {events})), 'UTC'),
                   n, 'CUSTOM',
                   if(n = 'page_view', concat('/p/', toString(cityHash64(number, 5) % 50)), NULL),
                   if(n = 'pay', round(1 + 2000 * pow((cityHash64(number, 3) % 10000) / 10000.0, 3), 2), NULL),
                   concat('ch', toString(cityHash64(number, 4) % 12))
            FROM (SELECT number, multiIf({", ".join(whens)}, '{EVENTS[-1][0]}') AS n
                  FROM (SELECT number, cityHash64(number, 2) % 100 AS b FROM numbers({events})))""",
            settings={"max_memory_usage": memory_bytes(memory)},
        )
    finally:
        engine.close()


def memory_bytes(text: str) -> int:
    units = {"KB": 2**10, "MB": 2**20, "GB": 2**30}
    return int(float(text[:-2]) * units[text[-2:].upper()])


def ensure_tag_keys(data: Path, args: argparse.Namespace) -> None:
    """The tag cases' keys in the project's catalogue (their columns in the users table), as ``segport tag
    create`` leaves them; done once, outside the timed runs."""
    from segport.roles.engine import build
    from segport.services.data import catalog_entry

    app = build(settings_for(data, args.engine, args.memory, args.threads))
    try:
        have = app.meta.catalog(P)
        types = {"DOUBLE": "double", "VARCHAR": "string", "BIGINT": "int"}
        new = [
            catalog_entry(c.name, c.name, types[c.value_type]) for c in CASES if c.kind == "tag" and c.name not in have
        ]
        if new:
            app.data.add_catalog_entries(P, new)
    finally:
        app.close()


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    data = data_dir_for(args.engine, args.users, args.events)
    info_path = data / "bench.json"
    if not args.fresh and info_path.exists():
        print(f"reusing {data} (--fresh rebuilds it)")
        return json.loads(info_path.read_text())
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    # the data's clock: a whole minute, so the windows of a rerun resolve exactly as the first run's
    now_ms = int(time.time() // 60 * 60_000)
    t0 = time.perf_counter()
    if args.engine == "clickhouse":
        generate_clickhouse(data, args.users, args.events, now_ms, args.memory)
    else:
        generate_duckdb(data, args.users, args.events, now_ms, args.memory, args.threads)
    info = {
        "engine": args.engine,
        "users": args.users,
        "events": args.events,
        "now_ms": now_ms,
        "generate_s": round(time.perf_counter() - t0, 1),
    }
    info_path.write_text(json.dumps(info, indent=2))
    print(f"generated {args.users:,} users and {args.events:,} events in {info['generate_s']}s")
    return info


# --- windows as a hand-written statement writes them ---------------------------------------------------------
def ts(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)
    return f"TIMESTAMP '{moment.isoformat(sep=' ', timespec='milliseconds')}'"


def last_days(now_ms: int, n: int) -> tuple[str, str]:
    """``[00:00 of the day n-1 days before today (project time zone), now]`` as SQL bounds ``>= start``,
    ``< end`` (what the docstring of segport/domain/behaviour.py says ``last_days`` covers)."""
    tz = ZoneInfo(TZ)
    today = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
    start = dt.datetime.combine(today - dt.timedelta(days=n - 1), dt.time(), tzinfo=tz)
    return ts(int(start.timestamp() * 1000)), ts(now_ms + 1)


# --- the cases -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "segment" | "tag"
    definition: dict[str, Any]  # segport's rule tree or tag definition
    hand: Callable[[int], str]  # now_ms -> the hand-written SELECT (gio_id[, value]) ordered by gio_id
    value_type: str = ""  # tags: the SQL type of the value


EV = f'"events_{P}"'
US = f'"users_{P}"'


def _count_gte(event: str, n: int, days: int, where: str = "") -> Callable[[int], str]:
    def sql(now: int) -> str:
        s, e = last_days(now, days)
        return (
            f"SELECT u.gio_id FROM {US} u WHERE u.gio_id IN (SELECT gio_id FROM {EV} "
            f"""WHERE "$event" = '{event}' AND "$time" >= {s} AND "$time" < {e}{where} GROUP BY gio_id """
            f"HAVING count(*) >= {n}) ORDER BY u.gio_id"
        )

    return sql


def _did_not(event: str, days: int) -> Callable[[int], str]:
    """The users outside the set of users with such an event: of the forms tried on this data, ``NOT IN`` a
    ``DISTINCT`` list was the fastest (``NOT EXISTS`` and ``ANTI JOIN`` took about twice as long)."""

    def sql(now: int) -> str:
        s, e = last_days(now, days)
        return (
            f"SELECT u.gio_id FROM {US} u WHERE u.gio_id NOT IN (SELECT DISTINCT gio_id FROM {EV} "
            f"""WHERE "$event" = '{event}' AND "$time" >= {s} AND "$time" < {e}) ORDER BY u.gio_id"""
        )

    return sql


def _measure(agg: str, event: str, days: int, cond: str) -> Callable[[int], str]:
    """Users whose ``agg`` over their ``event`` events of the window satisfies ``cond`` (not satisfied by a user
    without events: the measures used here are > 0 or have no value)."""

    def sql(now: int) -> str:
        s, e = last_days(now, days)
        return (
            f"SELECT u.gio_id FROM {US} u WHERE u.gio_id IN (SELECT gio_id FROM {EV} "
            f"""WHERE "$event" = '{event}' AND "$time" >= {s} AND "$time" < {e} GROUP BY gio_id """
            f"HAVING {agg} {cond}) ORDER BY u.gio_id"
        )

    return sql


def _then(first: str, second: str, days: int, gap: str) -> Callable[[int], str]:
    """A ``first`` then a ``second`` strictly later and at most ``gap`` later, both in the window: for each
    ``second`` event, the latest ``first`` strictly before it (an ASOF join) is the one to test."""

    def sql(now: int) -> str:
        s, e = last_days(now, days)
        return (
            f"""WITH a AS (SELECT gio_id, "$time" AS t FROM {EV} WHERE "$event" = '{first}' AND "$time" >= {s} """
            f"""AND "$time" < {e}), b AS (SELECT gio_id, "$time" AS t FROM {EV} WHERE "$event" = '{second}' """
            f"""AND "$time" >= {s} AND "$time" < {e}) """
            f"SELECT u.gio_id FROM {US} u WHERE u.gio_id IN (SELECT b.gio_id FROM b ASOF JOIN a "
            f"ON b.gio_id = a.gio_id AND b.t > a.t WHERE b.t - a.t <= INTERVAL {gap}) ORDER BY u.gio_id"
        )

    return sql


def _not_followed(first: str, second: str, days: int, within: str) -> Callable[[int], str]:
    """A ``first`` event in the window with no ``second`` in ``(t, t + within]`` (at any time): for each
    ``first`` event, the earliest ``second`` strictly after it (an ASOF join) decides."""

    def sql(now: int) -> str:
        s, e = last_days(now, days)
        return (
            f"""WITH a AS (SELECT gio_id, "$time" AS t FROM {EV} WHERE "$event" = '{first}' AND "$time" >= {s} """
            f"""AND "$time" < {e}), b AS (SELECT gio_id, "$time" AS t FROM {EV} WHERE "$event" = '{second}' """
            f"""AND "$time" > {s}) """
            f"SELECT u.gio_id FROM {US} u WHERE u.gio_id IN (SELECT a.gio_id FROM a ASOF LEFT JOIN b "
            f"ON a.gio_id = b.gio_id AND b.t > a.t WHERE b.t IS NULL OR b.t > a.t + INTERVAL {within}) "
            "ORDER BY u.gio_id"
        )

    return sql


def _tag(select: str, event: str, days: int | None, missing: str = "NULL") -> Callable[[int], str]:
    """Every user with the tag's value (``missing`` for a user without matching events: 0 for a sum, else
    null): the users table left-joined with the per-user aggregate of the window's ``event`` events."""

    def sql(now: int) -> str:
        window = ""
        if days is not None:
            s, e = last_days(now, days)
            window = f' AND "$time" >= {s} AND "$time" < {e}'
        return (
            f"SELECT u.gio_id, coalesce(a.v, {missing}) AS v FROM {US} u LEFT JOIN (SELECT gio_id, {select} AS v FROM {EV} "
            f"""WHERE "$event" = '{event}'{window} GROUP BY gio_id) a ON a.gio_id = u.gio_id ORDER BY u.gio_id"""
        )

    return sql


def last_days_spec(n: int) -> dict[str, int]:
    return {"last_days": n}


CASES = [
    Case(
        "pay2_30d",
        "segment",
        {"event": "pay", "measure": "count", "op": "gte", "value": 2, "time": last_days_spec(30)},
        _count_gte("pay", 2, 30),
    ),
    Case("no_login_7d", "segment", {"not": {"event": "login", "time": last_days_spec(7)}}, _did_not("login", 7)),
    Case(
        "cart_then_pay_1d",
        "segment",
        {
            "sequence": [{"event": "add_to_cart"}, {"event": "pay"}],
            "time": last_days_spec(30),
            "max_gap": {"days": 1},
        },
        _then("add_to_cart", "pay", 30, "1 DAY"),
    ),
    Case(
        "cart_no_pay_1d",
        "segment",
        {
            "event": "add_to_cart",
            "time": last_days_spec(30),
            "not_followed_by": {"event": "pay", "within": {"hours": 24}},
        },
        _not_followed("add_to_cart", "pay", 30, "24 HOUR"),
    ),
    Case(
        "tag_pay_sum_30d",
        "tag",
        {"type": "AGGREGATED", "event": "pay", "measure": {"sum": "amount"}, "time": last_days_spec(30)},
        _tag("sum(amount)", "pay", 30, "0"),
        "DOUBLE",
    ),
    Case(
        "tag_last_pay_channel",
        "tag",
        {"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "attribute": "channel", "pick": "last"},
        _tag('arg_max(channel, "$time")', "pay", None),
        "VARCHAR",
    ),
]

# ten DAILY segments over the same events, for the recompute-together case
TEN = [
    Case("t_pay1_7d", "segment", {"event": "pay", "time": last_days_spec(7)}, _count_gte("pay", 1, 7)),  # did pay
    Case(
        "t_pay3_90d",
        "segment",
        {"event": "pay", "op": "gte", "value": 3, "time": last_days_spec(90)},
        _count_gte("pay", 3, 90),
    ),
    Case(
        "t_login5_30d",
        "segment",
        {"event": "login", "op": "gte", "value": 5, "time": last_days_spec(30)},
        _count_gte("login", 5, 30),
    ),
    Case("t_no_login_14d", "segment", {"not": {"event": "login", "time": last_days_spec(14)}}, _did_not("login", 14)),
    Case(
        "t_cart2_14d",
        "segment",
        {"event": "add_to_cart", "op": "gte", "value": 2, "time": last_days_spec(14)},
        _count_gte("add_to_cart", 2, 14),
    ),
    Case(
        "t_pay_sum_30d",
        "segment",
        {"event": "pay", "measure": {"sum": "amount"}, "op": "gte", "value": 500, "time": last_days_spec(30)},
        _measure("sum(amount)", "pay", 30, ">= 500"),
    ),
    Case(
        "t_pay_max_90d",
        "segment",
        {"event": "pay", "measure": {"max": "amount"}, "op": "gt", "value": 1000, "time": last_days_spec(90)},
        _measure("max(amount)", "pay", 90, "> 1000"),
    ),
    Case(
        "t_view_days_30d",
        "segment",
        {"event": "page_view", "measure": "distinct_days", "op": "gte", "value": 10, "time": last_days_spec(30)},
        # the project's zone, Asia/Shanghai, is UTC+8 all year: a day there is the UTC time + 8 h's date
        _measure('count(DISTINCT CAST("$time" + INTERVAL 8 HOUR AS DATE))', "page_view", 30, ">= 10"),
    ),
    Case(
        "t_search_channels_30d",
        "segment",
        {"event": "search", "measure": {"distinct": "channel"}, "op": "gte", "value": 3, "time": last_days_spec(30)},
        _measure("count(DISTINCT channel)", "search", 30, ">= 3"),
    ),
    Case(
        "t_share2_60d",
        "segment",
        {"event": "share", "op": "gte", "value": 2, "time": last_days_spec(60)},
        _count_gte("share", 2, 60),
    ),
]


# --- the same statements in ClickHouse's SQL (``__U__``: the current users table, ``__E__``: the event table) ----
def ch_ts(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)
    return f"toDateTime64('{moment.isoformat(sep=' ', timespec='milliseconds')}', 3, 'UTC')"


def ch_window(now_ms: int, days: int) -> str:
    tz = ZoneInfo(TZ)
    today = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
    start = dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time(), tzinfo=tz)
    return f"`$time` >= {ch_ts(int(start.timestamp() * 1000))} AND `$time` < {ch_ts(now_ms + 1)}"


def _ch_having(event: str, days: int, having: str) -> Callable[[int], str]:
    return lambda now: (
        f"SELECT gio_id FROM __U__ WHERE gio_id IN (SELECT gio_id FROM __E__ WHERE `$event` = '{event}' AND "
        f"{ch_window(now, days)} GROUP BY gio_id HAVING {having})"
    )


def _ch_did_not(event: str, days: int) -> Callable[[int], str]:
    return lambda now: (
        f"SELECT gio_id FROM __U__ WHERE gio_id NOT IN (SELECT gio_id FROM __E__ WHERE `$event` = '{event}' AND "
        f"{ch_window(now, days)})"
    )


def _ch_steps(first: str, second: str, days: int, now: int, second_window: str) -> str:
    a = f"SELECT gio_id, toUnixTimestamp64Milli(`$time`) AS t FROM __E__ WHERE `$event` = '{first}' AND "
    b = f"SELECT gio_id, toUnixTimestamp64Milli(`$time`) AS t, 1 AS hit FROM __E__ WHERE `$event` = '{second}' AND "
    return f"({a}{ch_window(now, days)}) AS a", f"({b}{second_window}) AS b"


def _ch_then(first: str, second: str, days: int, gap_ms: int) -> Callable[[int], str]:
    def sql(now: int) -> str:
        a, b = _ch_steps(first, second, days, now, ch_window(now, days))
        return (
            f"SELECT gio_id FROM __U__ WHERE gio_id IN (SELECT b.gio_id FROM {b} ASOF JOIN {a} "
            f"ON b.gio_id = a.gio_id AND b.t > a.t WHERE b.t - a.t <= {gap_ms})"
        )

    return sql


def _ch_not_followed(first: str, second: str, days: int, within_ms: int) -> Callable[[int], str]:
    def sql(now: int) -> str:
        start = ch_window(now, days).split(" AND ")[0].replace(">=", ">")
        a, b = _ch_steps(first, second, days, now, start)
        return (
            f"SELECT gio_id FROM __U__ WHERE gio_id IN (SELECT a.gio_id FROM {a} ASOF LEFT JOIN {b} "
            f"ON a.gio_id = b.gio_id AND a.t < b.t WHERE b.hit = 0 OR b.t > a.t + {within_ms})"
        )

    return sql


def _ch_tag(select: str, event: str, days: int | None, missing: str) -> Callable[[int], str]:
    def sql(now: int) -> str:
        window = f" AND {ch_window(now, days)}" if days is not None else ""
        return (
            f"SELECT u.gio_id AS gio_id, coalesce(a.v, {missing}) AS v FROM __U__ AS u LEFT JOIN (SELECT gio_id, "
            f"{select} AS v FROM __E__ WHERE `$event` = '{event}'{window} GROUP BY gio_id) AS a "
            "ON a.gio_id = u.gio_id SETTINGS join_use_nulls = 1"
        )

    return sql


CH_HAND: dict[str, Callable[[int], str]] = {
    "pay2_30d": _ch_having("pay", 30, "count() >= 2"),
    "no_login_7d": _ch_did_not("login", 7),
    "cart_then_pay_1d": _ch_then("add_to_cart", "pay", 30, DAY_MS),
    "cart_no_pay_1d": _ch_not_followed("add_to_cart", "pay", 30, DAY_MS),
    "tag_pay_sum_30d": _ch_tag("sum(amount)", "pay", 30, "0"),
    # ties between equal times broken by the greatest channel, as the tag's semantics ask (docs/tags.md): the
    # cheapest tie-breaking form found (maxArgMax: the max of channel over the rows at the latest time) costs
    # what argMax(channel, `$time`) costs, where argMax by the tuple (time, channel) or the max of the tuples
    # cost ~25% more (docs/performance.md)
    "tag_last_pay_channel": _ch_tag("maxArgMax(channel, `$time`)", "pay", None, "NULL"),
    "t_pay1_7d": _ch_having("pay", 7, "count() >= 1"),
    "t_pay3_90d": _ch_having("pay", 90, "count() >= 3"),
    "t_login5_30d": _ch_having("login", 30, "count() >= 5"),
    "t_no_login_14d": _ch_did_not("login", 14),
    "t_cart2_14d": _ch_having("add_to_cart", 14, "count() >= 2"),
    "t_pay_sum_30d": _ch_having("pay", 30, "sum(amount) >= 500"),
    "t_pay_max_90d": _ch_having("pay", 90, "max(amount) > 1000"),
    "t_view_days_30d": _ch_having("page_view", 30, f"uniqExact(toDate(`$time`, '{TZ}')) >= 10"),
    "t_search_channels_30d": _ch_having("search", 30, "uniqExact(channel) >= 3"),
    "t_share2_60d": _ch_having("share", 60, "count() >= 2"),
}


def ch_engine(data: Path) -> Any:
    """The data dir's ClickHouse (chdb, in this process) as segport opens it."""
    from segport.engine.clickhouse.engine import ClickHouseEngine

    return ClickHouseEngine(f"chdb://{(data / 'clickhouse').resolve()}", scratch=data / "tmp")


def ch_sql(engine: Any, sql: str) -> str:
    return sql.replace("__U__", engine.table(engine.current(P).users)).replace("__E__", engine.table(f"events_{P}"))


# --- one run, in a process of its own --------------------------------------------------------------------
def run_one(args: argparse.Namespace) -> None:
    """``--run SIDE CASES``: compute the named cases (comma-separated) and print seconds and CPU seconds."""
    info = json.loads((Path(args.data) / "bench.json").read_text())
    cases = {c.name: c for c in [*CASES, *TEN]}
    todo = [cases[n] for n in args.cases.split(",")]
    if args.run == "hand" and args.engine == "clickhouse":
        engine = ch_engine(Path(args.data))
        client = engine.client()
        settings = {"max_memory_usage": memory_bytes(args.memory)}
        t0, c0 = time.perf_counter(), time.process_time()
        for case in todo:
            client.command(
                f"CREATE OR REPLACE TABLE {engine.table('hand_' + case.name)} ENGINE = MergeTree ORDER BY gio_id "
                f"AS {ch_sql(engine, CH_HAND[case.name](info['now_ms']))}",
                settings=settings,
            )
            client.query(f"SELECT count() FROM {engine.table('hand_' + case.name)}")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        engine.close()
    elif args.run == "hand":
        import duckdb

        con = duckdb.connect(
            str(Path(args.data) / "profiles.duckdb"),
            config={
                "memory_limit": args.memory,
                "threads": args.threads,
                "temp_directory": str(Path(args.data) / "tmp" / "duckdb"),
            },
        )
        t0, c0 = time.perf_counter(), time.process_time()
        for case in todo:
            con.execute("BEGIN")
            con.execute(f'CREATE OR REPLACE TABLE "hand_{case.name}" AS {case.hand(info["now_ms"])}')
            con.execute(f'SELECT count(*) FROM "hand_{case.name}"').fetchone()
            con.execute("COMMIT")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        con.close()
    else:
        seconds, cpu = segport_side(args, info, todo)
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def segport_side(args: argparse.Namespace, info: dict[str, Any], todo: list[Case]) -> tuple[float, float]:
    """segport's engine, opened as the engine process opens it, computing the cases with the data's clock."""
    from segport.domain.behaviour import BehaviourContext
    from segport.engine.base import SegmentDefinition
    from segport.roles.engine import build
    from segport.store.event_catalog import EventCatalog

    app = build(settings_for(Path(args.data), args.engine, args.memory, args.threads))
    try:
        from segport.domain.behaviour_parse import event_schema  # w1's parser

        catalog = app.meta.catalog(P)
        events = EventCatalog(app.meta)
        schema = event_schema([n.key for n in events.names(P)], events.attributes(P))
        ctx = BehaviourContext(P, schema, info["now_ms"], TZ)
        tags = [c for c in todo if c.kind == "tag"]
        segments = [
            SegmentDefinition(c.name, rule_tree=c.definition, catalog=catalog, behaviour=ctx)
            for c in todo
            if c.kind == "segment"
        ]
        t0, c0 = time.perf_counter(), time.process_time()
        if tags:
            for case in tags:
                compute_tag(app, case, catalog, ctx)
        elif len(segments) > 1:  # the DAILY recompute's operation: one snapshot, the shared measures in one pass
            app.engine.compute_segments(P, segments)
        else:
            for seg in segments:
                app.engine.compute_segment(P, seg)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        app.close()


def compute_tag(app: Any, case: Case, catalog: Any, ctx: Any) -> None:
    """The tag through segport's engine: its values into the tag's column of the users table."""
    from segport.engine.base import TagComputation

    app.engine.compute_tag(P, TagComputation(case.name, case.definition, catalog, ctx))


# --- the harness -------------------------------------------------------------------------------------------
class TreeRss(threading.Thread):
    """Peak RSS (MB) of a process and all its descendants, summed, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total = 0
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._halt.wait(0.02)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return round(self.peak / 2**20, 1)


def measure(args: argparse.Namespace, data: Path, side: str, names: list[str]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--run", side, "--cases", ",".join(names), "--data", str(data)]
    cmd += ["--memory", args.memory, "--threads", str(args.threads), "--engine", args.engine]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid)
    rss.start()
    stdout, stderr = proc.communicate()
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{side} {names} failed:\n{stderr[-4000:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": out["seconds"], "cpu": out["cpu"], "rss_mb": peak}


def check_equal(data: Path, case: Case, engine: str = "duckdb") -> int:
    """The rows segport materialised against the hand-written statement's: raises on any difference; returns
    the members (segments) or the users with a value (tags)."""
    if engine == "clickhouse":
        return check_equal_clickhouse(data, case)
    import duckdb

    con = duckdb.connect(str(data / "profiles.duckdb"), read_only=True)
    try:
        hand = f'"hand_{case.name}"'
        if case.kind == "segment":
            ours = f'"m_{P}_{case.name}"'
            n_ours = con.execute(f"SELECT count(*) FROM {ours}").fetchone()[0]  # type: ignore[index]
            n_hand = con.execute(f"SELECT count(*) FROM {hand}").fetchone()[0]  # type: ignore[index]
            diff = con.execute(
                f"SELECT count(*) FROM ((SELECT gio_id FROM {ours} EXCEPT ALL SELECT gio_id FROM {hand}) "
                f"UNION ALL (SELECT gio_id FROM {hand} EXCEPT ALL SELECT gio_id FROM {ours}))"
            ).fetchone()[0]  # type: ignore[index]
            if n_ours != n_hand or diff:
                raise SystemExit(f"{case.name}: segport has {n_ours} members, hand-written {n_hand}, {diff} differ")
            return int(n_ours)
        column = tag_column(case)
        same = (
            "abs(a.v - h.v) <= 1e-9 * greatest(abs(h.v), 1)" if case.value_type == "DOUBLE" else "a.v = h.v"
        )  # sums of doubles in another order may differ in the last bits
        row = con.execute(
            f"SELECT count(*), count(h.v), count(*) FILTER (WHERE NOT ((a.v IS NULL AND h.v IS NULL) OR "
            f"coalesce({same}, false))) FROM (SELECT gio_id, {column} AS v FROM {US}) a "
            f"FULL JOIN {hand} h USING (gio_id)"
        ).fetchone()
        assert row is not None
        if row[2]:
            raise SystemExit(f"{case.name}: {row[2]} of {row[0]} users differ between segport and hand-written")
        return int(row[1])
    finally:
        con.close()


def check_equal_clickhouse(data: Path, case: Case) -> int:
    ch = ch_engine(data)
    try:
        client, snap = ch.client(), ch.current(P)
        hand = ch.table(f"hand_{case.name}")

        def one(sql: str) -> tuple[Any, ...]:
            return tuple(client.query(sql).result_rows[0])

        if case.kind == "segment":
            ours = ch.table(snap.members[case.name])
            n_ours, n_hand, diff = one(
                f"SELECT (SELECT count() FROM {ours}), (SELECT count() FROM {hand}), "
                f"(SELECT count() FROM (SELECT gio_id FROM {ours} EXCEPT DISTINCT SELECT gio_id FROM {hand})) + "
                f"(SELECT count() FROM (SELECT gio_id FROM {hand} EXCEPT DISTINCT SELECT gio_id FROM {ours}))"
            )
            if n_ours != n_hand or diff:
                raise SystemExit(f"{case.name}: segport has {n_ours} members, hand-written {n_hand}, {diff} differ")
            return int(n_ours)
        same = "abs(a.v - h.v) <= 1e-9 * greatest(abs(h.v), 1)" if case.value_type == "DOUBLE" else "a.v = h.v"
        total, held, bad = one(
            f"SELECT count(), countIf(h.v IS NOT NULL), countIf(NOT ((a.v IS NULL AND h.v IS NULL) OR "
            f"coalesce({same}, 0))) FROM (SELECT gio_id, {tag_column(case).replace(chr(34), '`')} AS v "
            f"FROM {ch.table(snap.users)}) AS a FULL JOIN {hand} AS h USING (gio_id) SETTINGS join_use_nulls = 1"
        )
        if bad:
            raise SystemExit(f"{case.name}: {bad} of {total} users differ between segport and hand-written")
        return int(held)
    finally:
        ch.close()


def tag_column(case: Case) -> str:
    return f'"{case.name}"'


def compare(args: argparse.Namespace, data: Path, names: list[str], label: str, repeat: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"hand": [], "segport": []}
    for rep in range(repeat):
        order = ["hand", "segport"] if rep % 2 == 0 else ["segport", "hand"]
        for side in order:
            runs[side].append(measure(args, data, side, names))
        print(
            f"  {label} #{rep + 1}: segport {runs['segport'][-1]['seconds']:.2f}s "
            f"(CPU {runs['segport'][-1]['cpu']:.2f}s), hand-written {runs['hand'][-1]['seconds']:.2f}s "
            f"(CPU {runs['hand'][-1]['cpu']:.2f}s)",
            flush=True,
        )
    med = {side: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu")} for side, rs in runs.items()}
    return {
        "segport_s": round(med["segport"]["seconds"], 3),
        "hand_s": round(med["hand"]["seconds"], 3),
        "ratio": round(med["segport"]["seconds"] / med["hand"]["seconds"], 3),
        "segport_cpu_s": round(med["segport"]["cpu"], 3),
        "hand_cpu_s": round(med["hand"]["cpu"], 3),
        "cpu_ratio": round(med["segport"]["cpu"] / med["hand"]["cpu"], 3),
        "segport_rss_mb": max(r["rss_mb"] for r in runs["segport"]),
        "hand_rss_mb": max(r["rss_mb"] for r in runs["hand"]),
        "runs": runs,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        f"behaviour bench: {results['users']:,} users, {results['events']:,} events over {SPAN_DAYS} days, "
        f"engine {results['engine']}, memory_limit {results['memory']}, {results['threads']} threads, "
        f"medians of {results['repeat']} alternating runs; load average {results['load_average']}",
        f"{'case':<24} {'output':>10} {'segport s':>10} {'hand s':>8} {'ratio':>6} {'CPU ratio':>9} "
        f"{'vs target':>9} {'segport RSS MB':>15} {'hand RSS MB':>12}",
    ]
    for name, r in results["cases"].items():
        target = 1.0 if name.startswith("ten") else TARGET  # ten together: faster than one after another
        met = "met" if r["ratio"] <= target else f"+{r['ratio'] / target - 1:.0%}"
        lines.append(
            f"{name:<24} {r['rows']:>10,} {r['segport_s']:>10.2f} {r['hand_s']:>8.2f} {r['ratio']:>6.2f} "
            f"{r['cpu_ratio']:>9.2f} {met:>9} {r['segport_rss_mb']:>15.0f} {r['hand_rss_mb']:>12.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10_000_000)
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--engine", choices=["duckdb", "clickhouse"], default="duckdb")
    ap.add_argument("--repeat", type=int, default=3, help="Runs of each side per case (alternating); medians.")
    ap.add_argument("--memory", default="4GB", help="DuckDB memory_limit of both sides (and of the generator).")
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads of both sides.")
    ap.add_argument(
        "--only",
        default="",
        help="Comma-separated case names, 'ten' for the ten together (default: all, then the ten).",
    )
    ap.add_argument("--no-ten", action="store_true", help="Skip the ten-segments case.")
    ap.add_argument("--ten-repeat", type=int, default=0, help="Runs of the ten-segments case (default: --repeat).")
    ap.add_argument("--hand-only", action="store_true", help="Time the hand-written statements alone.")
    ap.add_argument("--fresh", action="store_true", help="Regenerate the data even if it is cached.")
    ap.add_argument("--run", choices=["hand", "segport"], help=argparse.SUPPRESS)
    ap.add_argument("--cases", default="", help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        run_one(args)
        return
    OUT.mkdir(exist_ok=True)
    info = prepare(args)
    data = data_dir_for(args.engine, args.users, args.events)
    only = set(filter(None, args.only.split(",")))
    cases = [c for c in CASES if not only or c.name in only]
    if not args.hand_only and any(c.kind == "tag" for c in cases):
        ensure_tag_keys(data, args)
    results: dict[str, Any] = {
        "engine": args.engine,
        "users": args.users,
        "events": args.events,
        "memory": args.memory,
        "threads": args.threads,
        "repeat": args.repeat,
        "now_ms": info["now_ms"],
        "generate_s": info["generate_s"],
        "cases": {},
    }
    if args.hand_only:
        for case in [*cases, *([] if args.no_ten else TEN)]:
            r = measure(args, data, "hand", [case.name])
            print(f"  {case.name}: hand-written {r['seconds']:.2f}s (CPU {r['cpu']:.2f}s, RSS {r['rss_mb']:.0f} MB)")
        return
    for case in cases:
        r = compare(args, data, [case.name], case.name, args.repeat)
        r["rows"] = check_equal(data, case, args.engine)
        results["cases"][case.name] = r
    if not args.no_ten and (not only or "ten" in only):
        r = compare(args, data, [c.name for c in TEN], "ten segments", args.ten_repeat or args.repeat)
        r["rows"] = sum(check_equal(data, c, args.engine) for c in TEN)
        results["cases"]["ten segments (sum)"] = r
    results["load_average"] = [round(x, 1) for x in os.getloadavg()]
    (OUT / f"behaviour-results-{args.engine}-{args.users}-{args.events}.json").write_text(json.dumps(results, indent=2))
    print()
    print(report(results))


if __name__ == "__main__":
    main()
