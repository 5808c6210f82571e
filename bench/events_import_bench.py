"""History import: `segport events import` of a Parquet file against the engine's own load of the same file.

Writes ``--events`` events (``--users`` users, ``--days`` days in no time order, two attributes) as Parquet with
one DuckDB ``COPY`` (100M events take about a minute and a half of CPU), or takes ``--file`` as it is, imports them into a fresh data
dir through :meth:`segport.services.events.EventService.import_events` (checks, identities resolved to new users,
time-ordered store), then loads the same file with the engine's own statement: DuckDB ``CREATE TABLE AS SELECT *
FROM read_parquet(…)``, ClickHouse (chDB) ``INSERT … SELECT * FROM file(…, Parquet)`` into a MergeTree partitioned
and ordered as segport's. ``--repeat`` rounds alternate them (each into a fresh data dir), so a busy machine
weighs on all alike; it prints one JSON object with every round's wall and CPU seconds (this process's user +
system time: all run in it, chDB included), their medians and the ratios of the medians.

The target (issue 21: ≤ 1.5×) is taken against the engine's own load **into a store of the same layout**:
segport's event store is ordered by time (so that a time-bounded scan reads only that time), so on DuckDB the
same-layout load is ``CREATE TABLE … AS SELECT * FROM read_parquet(…) ORDER BY time`` (``engineOwnOrderedLoad*``,
``orderedRatio`` / ``orderedCpuRatio``), as on ClickHouse it is the load into a MergeTree ordered by time. The plain
``CREATE TABLE AS`` (no order: a store no time-bounded scan can skip in) is printed beside it (``ratio`` /
``cpuRatio``) as the engine's bare read-and-write speed. After the first
import it counts one day's events with the engine's own time-bounded scan (``count_events``) and prints the rows
that scan read against the rows stored: the store's time order lets it skip the rest.

On ClickHouse each load is also timed until the background merges it left running have stopped (``settled``:
no merge in the database for a second), before anything else is measured, so neither side's merges run into
the next measurement: ``segportSettled*`` and ``engineOwnSettled*`` are each side's seconds to return plus
those merges' (wall and CPU), ``settledRatio`` / ``settledCpuRatio`` their ratios. A load that returns sooner
by leaving more merging behind shows there.

    .venv/bin/python bench/events_import_bench.py [--events 2000000] [--users 200000] [--days 90]
        [--engine duckdb|clickhouse] [--repeat 3] [--file events.parquet] [--statements]

``--statements`` adds, for each round's import, every statement segport sent to the engine (ClickHouse, or the
DuckDB engine's connection) with its wall and CPU seconds (the whole process's, the engine's threads included),
so where an import's time goes can be read from one run.

The issue's size: ``--events 100000000 --users 10000000`` (about 2 GB of Parquet, and a data dir of as much
again per engine in each round).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--file", type=Path, help="an event file to load instead of generating one")
    parser.add_argument("--statements", action="store_true", help="each ClickHouse statement's wall and CPU")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segport-evimport-") as tmp:
        base = Path(tmp)
        path = args.file or base / "events.parquet"
        if args.file is None:
            span = args.days * 86_400_000
            # a prime step: consecutive rows land far apart in time, every millisecond of the span at most once
            duckdb.sql(
                f"COPY (SELECT 'e' || (i % 20) AS event, {T0} + (i * 7919) % {span} AS time, "
                f"'U' || (i % {args.users}) AS userId, i % 1000 AS amount, 'c' || (i % 50) AS channel "
                f"FROM range({args.events}) r(i)) TO '{path}' (FORMAT PARQUET)"
            )
        rounds: list[dict[str, Any]] = []
        scan: dict[str, int] = {}
        for n in range(args.repeat):
            work = base / f"round-{n}"
            work.mkdir()
            statements: list[dict[str, Any]] | None = [] if args.statements else None
            seg_wall, seg_cpu, report, seg_settle = segport_import(
                args.engine, work, path, scan if n == 0 else None, statements
            )
            own_wall, own_cpu, _, own_settle = own_load(args.engine, work, path)
            ord_wall, ord_cpu = own_wall, own_cpu
            if args.engine == "duckdb":  # the same layout as segport's store: ordered by time
                ord_wall, ord_cpu, _, _ = own_load(args.engine, work, path, ordered=True)
            rounds.append(
                {
                    "segportSeconds": round(seg_wall, 3),
                    "segportCpuSeconds": round(seg_cpu, 3),
                    "engineOwnLoadSeconds": round(own_wall, 3),
                    "engineOwnLoadCpuSeconds": round(own_cpu, 3),
                    "engineOwnOrderedLoadSeconds": round(ord_wall, 3),
                    "engineOwnOrderedLoadCpuSeconds": round(ord_cpu, 3),
                    **settle_figures(seg_wall, seg_cpu, seg_settle, own_wall, own_cpu, own_settle),
                    **({"statements": statements} if statements is not None else {}),
                }
            )
            shutil.rmtree(work, ignore_errors=True)
        med = {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0] if k != "statements"}
        print(
            json.dumps(
                {
                    "engine": args.engine,
                    "events": report.stored,
                    "usersCreated": report.users_created,
                    "rounds": rounds,
                    "oneDayScan": scan,
                    "median": med,
                    "ratio": round(med["segportSeconds"] / med["engineOwnLoadSeconds"], 2),
                    "cpuRatio": round(med["segportCpuSeconds"] / med["engineOwnLoadCpuSeconds"], 2),
                    "orderedRatio": round(med["segportSeconds"] / med["engineOwnOrderedLoadSeconds"], 2),
                    "orderedCpuRatio": round(med["segportCpuSeconds"] / med["engineOwnOrderedLoadCpuSeconds"], 2),
                    **(
                        {
                            "settledRatio": round(med["segportSettledSeconds"] / med["engineOwnSettledSeconds"], 2),
                            "settledCpuRatio": round(
                                med["segportSettledCpuSeconds"] / med["engineOwnSettledCpuSeconds"], 2
                            ),
                        }
                        if "segportSettledSeconds" in med
                        else {}
                    ),
                }
            )
        )


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def timed(run: Any) -> tuple[float, float, Any]:
    cpu, started = _cpu(), time.perf_counter()
    out = run()
    return time.perf_counter() - started, _cpu() - cpu, out


def settled(running: Callable[[], int], quiet: float = 1.0, step: float = 0.25) -> tuple[float, float]:
    """The wall and CPU seconds until the engine's background merges stop: ``running()`` (the merges in progress)
    read every ``step`` seconds until it has been 0 for ``quiet`` seconds (that last quiet stretch not counted)."""
    cpu, started, calm_since = _cpu(), time.perf_counter(), None
    while True:
        now = time.perf_counter()
        if running():
            calm_since = None
        elif calm_since is None:
            calm_since = now
        elif now - calm_since >= quiet:
            return calm_since - started, _cpu() - cpu
        time.sleep(step)


def settle_figures(
    seg_wall: float,
    seg_cpu: float,
    seg: tuple[float, float] | None,
    own_wall: float,
    own_cpu: float,
    own: tuple[float, float] | None,
) -> dict[str, float]:
    """Each side's seconds until its load returned plus the seconds its merges ran on after it (ClickHouse)."""
    if seg is None or own is None:
        return {}
    return {
        "segportSettledSeconds": round(seg_wall + seg[0], 3),
        "segportSettledCpuSeconds": round(seg_cpu + seg[1], 3),
        "engineOwnSettledSeconds": round(own_wall + own[0], 3),
        "engineOwnSettledCpuSeconds": round(own_cpu + own[1], 3),
    }


def segport_import(
    engine: str, base: Path, path: Path, scan: dict[str, int] | None, statements: list[dict[str, Any]] | None = None
) -> tuple[float, float, Any, tuple[float, float] | None]:
    extra: dict[str, Any] = {}
    if engine == "clickhouse":
        extra = {"engine": "clickhouse", "clickhouse_url": f"chdb://{base / 'ch'}?database=bench"}
    app = build(Settings(data_dir=base / "data", serve_workers=False, **extra))
    try:
        app.meta.create_project(P, "bench")
        service = EventService(app.meta, app.engine, app.data)
        # (taken before the statements are recorded: the merges are polled, not measured)
        merges = app.engine.client().query if engine == "clickhouse" else None
        db = app.engine.db_name if engine == "clickhouse" else ""
        if statements is not None:
            if engine == "clickhouse":
                record(app.engine.client(), statements)
            else:
                record_duckdb(app.engine, statements)
        wall, cpu, report = timed(lambda: service.import_events(P, path))
        after = None
        if merges is not None:  # the merges the import left running, before anything else is measured
            after = settled(
                lambda: int(
                    merges(
                        "SELECT count() FROM system.merges WHERE database = {d:String}", parameters={"d": db}
                    ).result_rows[0][0]
                )
            )
        if scan is not None:  # one day, the second of the span
            day = app.engine.count_events(P, T0 + 86_400_000, T0 + 2 * 86_400_000)
            whole = app.engine.count_events(P, 0, 2**62)
            scan.update(events=day.events, rowsRead=day.rows_read, storeRows=whole.events)
        return wall, cpu, report, after
    finally:
        app.close()


def record(client: Any, into: list[dict[str, Any]]) -> None:
    """Wrap the ClickHouse client's calls so each statement's wall and CPU seconds are appended to ``into``."""
    for method in ("command", "query", "raw_query", "raw_insert"):
        real = getattr(client, method)

        def wrapped(*args: Any, _real: Any = real, _method: str = method, **kwargs: Any) -> Any:
            wall, cpu, out = timed(lambda: _real(*args, **kwargs))
            shown = " ".join(str(args[0] if args else kwargs.get("query", "")).split())
            into.append({"sql": f"{_method}: {shown[:160]}", "wall": round(wall, 3), "cpu": round(cpu, 3)})
            return out

        setattr(client, method, wrapped)


class _TimedCursor:
    """A DuckDB cursor whose ``execute`` appends each statement's wall and CPU seconds to ``into``."""

    def __init__(self, cur: Any, into: list[dict[str, Any]]) -> None:
        self._cur, self._into = cur, into

    def execute(self, sql: str, *args: Any) -> Any:
        wall, cpu, out = timed(lambda: self._cur.execute(sql, *args))
        shown = " ".join(sql.split())
        self._into.append({"sql": shown[:160], "wall": round(wall, 3), "cpu": round(cpu, 3)})
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def record_duckdb(engine: Any, into: list[dict[str, Any]]) -> None:
    """Time every statement the DuckDB engine runs on its cursors (``into`` as for :func:`record`)."""
    real = engine._cursor

    @contextmanager
    def cursor() -> Iterator[Any]:
        with real() as cur:
            yield _TimedCursor(cur, into)

    engine._cursor = cursor


def own_load(
    engine: str, base: Path, path: Path, ordered: bool = False
) -> tuple[float, float, Any, tuple[float, float] | None]:
    if engine == "duckdb":
        name = "own-ordered.duckdb" if ordered else "own.duckdb"
        con = duckdb.connect(str(base / name))
        order = " ORDER BY time" if ordered else ""
        try:
            return (*timed(lambda: con.execute(f"CREATE TABLE e AS SELECT * FROM read_parquet('{path}'){order}")), None)
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
        out = timed(lambda: s.query(f"INSERT INTO own.e SELECT * FROM file('{path}', Parquet)"))
        return (
            *out,
            settled(
                lambda: int(str(s.query("SELECT count() FROM system.merges WHERE database = 'own'", "TSV")).strip())
            ),
        )
    finally:
        s.close()


if __name__ == "__main__":
    main()
