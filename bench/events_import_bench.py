"""History import: `segport events import` of a Parquet file against the engine's own load of the same file.

Writes ``--events`` events (``--users`` users, 90 days, two attributes) as Parquet, imports them into a fresh data
dir through :meth:`segport.services.events.EventService.import_events` (checks, identities resolved to new users,
time-ordered store), then loads the same file with the engine's own statement: DuckDB ``CREATE TABLE AS SELECT *
FROM read_parquet(…)``, ClickHouse (chDB) ``INSERT … SELECT * FROM file(…, Parquet)`` into a MergeTree partitioned
and ordered as segport's. Prints one JSON object with both times and their ratio.

    .venv/bin/python bench/events_import_bench.py [--events 2000000] [--users 200000] [--engine duckdb|clickhouse]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from segport.roles.inline import build
from segport.services.events import EventService
from segport.settings import Settings

P = "Bench001"
T0 = 1735689600000  # 2025-01-01T00:00:00Z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--engine", choices=("duckdb", "clickhouse"), default="duckdb")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segport-evimport-") as tmp:
        base = Path(tmp)
        path = base / "events.parquet"
        duckdb.sql(
            f"COPY (SELECT 'e' || (i % 20) AS event, {T0} + (i * 7919) % 7776000000 AS time, "
            f"'U' || (i % {args.users}) AS userId, i % 1000 AS amount, 'c' || (i % 50) AS channel "
            f"FROM range({args.events}) r(i)) TO '{path}' (FORMAT PARQUET)"
        )
        extra: dict[str, Any] = {}
        if args.engine == "clickhouse":
            extra = {"engine": "clickhouse", "clickhouse_url": f"chdb://{base / 'ch'}?database=bench"}
        app = build(Settings(data_dir=base / "data", serve_workers=False, **extra))
        try:
            app.meta.create_project(P, "bench")
            started = time.perf_counter()
            report = EventService(app.meta, app.engine, app.data).import_events(P, path)
            segport_s = time.perf_counter() - started
        finally:
            app.close()
        own_s = own_load(args.engine, base, path)
        print(
            json.dumps(
                {
                    "engine": args.engine,
                    "events": report.stored,
                    "usersCreated": report.users_created,
                    "segportSeconds": round(segport_s, 3),
                    "engineOwnLoadSeconds": round(own_s, 3),
                    "ratio": round(segport_s / own_s, 2),
                }
            )
        )


def own_load(engine: str, base: Path, path: Path) -> float:
    if engine == "duckdb":
        con = duckdb.connect(str(base / "own.duckdb"))
        try:
            started = time.perf_counter()
            con.execute(f"CREATE TABLE e AS SELECT * FROM read_parquet('{path}')")
            return time.perf_counter() - started
        finally:
            con.close()
    from chdb import session

    s = session.Session(str(base / "own-ch"))
    try:
        s.query("CREATE DATABASE IF NOT EXISTS own")
        s.query(
            "CREATE TABLE own.e (event String, time Int64, userId String, amount Int64, channel String) "
            "ENGINE = MergeTree PARTITION BY toYYYYMM(fromUnixTimestamp64Milli(time)) ORDER BY time"
        )
        started = time.perf_counter()
        s.query(f"INSERT INTO own.e SELECT * FROM file('{path}', Parquet)")
        return time.perf_counter() - started
    finally:
        s.close()


if __name__ == "__main__":
    main()
