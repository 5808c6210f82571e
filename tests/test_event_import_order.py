"""DuckDB event imports: a Parquet file already in time order is stored in file order without a sort
(segport/engine/duckdb/events.py, ``in_time_order``); any other file is sorted. Either way a time-bounded scan
reads only about that time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from segport.engine.duckdb.events import in_time_order
from segport.engine.duckdb.import_columns import reader
from tests.conftest import PROJECT
from tests.test_event_import import T_2025, events
from tests.test_event_import_parquet import parquet

DAY = 86_400_000


def ordered(path: Path) -> bool:
    con = duckdb.connect()
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader(path, 'parquet')}").fetchall()
        dtype = {str(r[0]): str(r[1]) for r in described}["time"]
        return in_time_order(con, path, reader(path, "parquet"), dtype)
    finally:
        con.close()


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        # in order, equal times side by side, over several row groups
        (f"SELECT {T_2025} + (i // 3) AS time FROM range(300000) r(i)", True),
        (f"SELECT make_timestamp(({T_2025} + i) * 1000) AS time FROM range(1000) r(i)", True),
        # two rows swapped inside a row group: the statistics allow it, the row-by-row pass does not
        (
            f"SELECT {T_2025} + CASE i WHEN 200000 THEN i + 1 WHEN 200001 THEN i - 1 ELSE i END AS time FROM range(300000) r(i)",
            False,
        ),
        # row groups that overlap: the statistics say no
        (f"SELECT {T_2025} + (i * 7919) % 250000 AS time FROM range(300000) r(i)", False),
        (f"SELECT {T_2025} + 10 - i AS time FROM range(2) r(i)", False),
        # text times are not looked at: sorted
        (f"SELECT ({T_2025} + i)::VARCHAR AS time FROM range(10) r(i)", False),
    ],
)
def test_in_time_order_reads_the_statistics_and_then_every_row(tmp_path: Path, select: str, expected: bool) -> None:
    path = parquet(tmp_path / "t.parquet", f"SELECT 'e' AS event, * FROM ({select})")
    assert ordered(path) is expected


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_file_in_time_order_or_not_is_stored_so_a_day_reads_only_that_day(
    seeded: Any, tmp_path: Path, shuffled: bool
) -> None:
    # 300,000 events over 300,000 minutes (about 7 months), 2,000 users; in time order or shuffled
    order = "ORDER BY hash(i)" if shuffled else ""
    path = parquet(
        tmp_path / "e.parquet",
        f"SELECT 'e' || (i % 7) AS event, {T_2025} + i * 60000 AS time, 'C' || (i % 2000) AS userId, i AS n "
        f"FROM range(300000) r(i) {order}",
    )
    assert ordered(path) is not shuffled
    assert events(seeded.app).import_events(PROJECT, path).stored == 300000
    scan = seeded.app.engine.count_events(PROJECT, T_2025 + DAY, T_2025 + 2 * DAY)
    assert scan.events == 1440
    # one day of seven months: at most the two row groups (122,880 rows each) that hold that day
    assert 1440 <= scan.rows_read <= 2 * 122_880, scan
    assert seeded.app.engine.count_events(PROJECT, 0, 2 * T_2025).events == 300000
