"""One ClickHouse (chDB) tag computation, statement by statement, against the hand-written statement.

    .venv/bin/python bench/ch_tag_statements.py --data bench/out/behaviour-clickhouse-1000000-10000000
    .venv/bin/python bench/ch_tag_statements.py --data ... --case tag_last_pay_channel --rounds 3

On a data folder made by ``bench/behaviour_bench.py --engine clickhouse`` (the bench's project, its users and
events; the tag's key already in the catalogue, as the bench leaves it): in one process, per round, segport's
``compute_tag`` for the case with every statement it sends timed (wall and CPU seconds of the process: chDB runs
in it, its background threads, a mutation's included), then the bench's hand-written statement for the case,
then (``--variants``) the values query alone in several forms written into a ``Null`` table. Prints the
medians per statement over the rounds. The machine may be shared: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import behaviour_bench as bb  # noqa: E402

LOG: list[tuple[str, float, float]] = []


def _timed(method: Any) -> Any:
    def wrapper(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return method(self, sql, *args, **kwargs)
        finally:
            LOG.append((" ".join(sql.split()), time.perf_counter() - t0, time.process_time() - c0))

    return wrapper


def instrument() -> None:
    from clickhouse_connect.driver._chdbclient import ChdbClient

    for name in ("command", "query"):
        setattr(ChdbClient, name, _timed(getattr(ChdbClient, name)))


def label(sql: str) -> str:
    """A short name for one of segport's statements."""
    rules = [
        (r"^SELECT .* FROM .*segport_snapshots", "read snapshot"),
        (r"^INSERT INTO .*segport_snapshots", "publish (snapshot row)"),
        (r"^DROP TABLE IF EXISTS .*`tv_", "drop values table"),
        (r"^DROP TABLE IF EXISTS", "drop leftover table"),
        (r"^CREATE TABLE \S+ AS \S+$", "create clone (structure)"),
        (r"ATTACH PARTITION ALL FROM", "attach parts (clone)"),
        (r"ENGINE = Join", "values into Join table"),
        (r"ENGINE = Memory", "values into Memory table"),
        (r"CREATE DICTIONARY", "create dictionary"),
        (r"SYSTEM RELOAD DICTIONARY", "load dictionary"),
        (r"UPDATE .* WHERE", "mutation (tag column)"),
        (r"^SELECT count\(\) FROM .* IS NOT NULL", "count of values"),
        (r"system\.", "system tables"),
    ]
    for pattern, name in rules:
        if re.search(pattern, sql):
            return name
    return sql[:60]


def values_variants(table: str) -> dict[str, str]:
    """The last ``channel`` of pay per user, written several ways (the same values where times are distinct)."""
    scan = f"FROM {table} WHERE `$event` = 'pay'"
    nn = " AND channel IS NOT NULL"
    return {
        "argMax(channel, t), no tie-break": f"SELECT gio_id, argMax(channel, `$time`) AS v {scan} GROUP BY gio_id",
        "max((t, channel)).2": (
            "SELECT gio_id, tupleElement(max(tuple(assumeNotNull(`$time`), assumeNotNull(channel))), 2) AS v "
            f"{scan}{nn} GROUP BY gio_id"
        ),
        "argMax(channel, (t, channel))": (
            f"SELECT gio_id, argMax(assumeNotNull(channel), tuple(`$time`, assumeNotNull(channel))) AS v "
            f"{scan}{nn} GROUP BY gio_id"
        ),
        "maxArgMax(channel, t), nullable": f"SELECT gio_id, maxArgMax(channel, `$time`) AS v {scan} GROUP BY gio_id",
        "maxArgMax(channel, t) + not null (segport)": (
            f"SELECT gio_id, maxArgMax(assumeNotNull(channel), `$time`) AS v {scan}{nn} GROUP BY gio_id"
        ),
        "maxArgMax + not null, PREWHERE": (
            f"SELECT gio_id, maxArgMax(assumeNotNull(channel), `$time`) AS v FROM {table} "
            f"PREWHERE `$event` = 'pay'{nn} GROUP BY gio_id"
        ),
        "argMax(channel, t) + not null": (
            f"SELECT gio_id, argMax(assumeNotNull(channel), `$time`) AS v {scan}{nn} GROUP BY gio_id"
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="A data folder of behaviour_bench.py --engine clickhouse.")
    ap.add_argument("--case", default="tag_last_pay_channel")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory", default="4GB")
    ap.add_argument("--variants", action="store_true", help="Also time the values query alone in several forms.")
    args = ap.parse_args()
    data = Path(args.data)
    info = json.loads((data / "bench.json").read_text())
    case = {c.name: c for c in bb.CASES}[args.case]
    instrument()

    from segport.domain.behaviour import BehaviourContext
    from segport.domain.behaviour_parse import event_schema
    from segport.roles.engine import build
    from segport.store.event_catalog import EventCatalog

    app = build(bb.settings_for(data, "clickhouse", args.memory))
    per: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        catalog = app.meta.catalog(bb.P)
        events = EventCatalog(app.meta)
        schema = event_schema([n.key for n in events.names(bb.P)], events.attributes(bb.P))
        ctx = BehaviourContext(bb.P, schema, info["now_ms"], bb.TZ)
        ch = app.engine  # the engine segport computes with (its client's statements are timed as well)
        client = ch.client()
        null = ch.table("bench_null")
        settings = {"max_memory_usage": bb.memory_bytes(args.memory)}
        client.command(f"CREATE TABLE IF NOT EXISTS {null} (gio_id Int64, v Nullable(String)) ENGINE = Null")
        for _ in range(args.rounds):
            LOG.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            bb.compute_tag(app, case, catalog, ctx)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            mine = list(LOG)
            ch.collected(60)
            seen: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
            for sql, w, c in mine:
                name = "segport: " + label(sql)
                seen[name] = (seen[name][0] + w, seen[name][1] + c)
            for name, (w, c) in seen.items():
                per[name].append((w, c))
            per["segport: compute_tag, all"].append((wall, cpu))
            hand = bb.ch_sql(ch, bb.CH_HAND[case.name](info["now_ms"]))
            t0, c0 = time.perf_counter(), time.process_time()
            client.command(
                f"CREATE OR REPLACE TABLE {ch.table('hand_' + case.name)} ENGINE = MergeTree ORDER BY gio_id AS {hand}",
                settings=settings,
            )
            per["hand: CREATE TABLE … AS (users LEFT JOIN values)"].append(
                (time.perf_counter() - t0, time.process_time() - c0)
            )
            if args.variants and case.name == "tag_last_pay_channel":
                for name, sql in values_variants(ch.table(f"events_{bb.P}")).items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    client.command(f"INSERT INTO {null} {sql}", settings=settings)
                    per[f"values only, {name}"].append((time.perf_counter() - t0, time.process_time() - c0))
            print(f"round {len(per['segport: compute_tag, all'])} done", flush=True)
    finally:
        app.close()
    print(f"{args.case}: medians of {args.rounds} rounds in one process (wall s / CPU s)")
    for name, runs in per.items():
        w = statistics.median(r[0] for r in runs)
        c = statistics.median(r[1] for r in runs)
        print(f"  {name:<60} {w:8.3f} {c:8.3f}   ({len(runs)} runs)")


if __name__ == "__main__":
    main()
