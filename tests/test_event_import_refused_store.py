"""A refused event file stores nothing, on both engines (docs/events.md, "The store"): no table the engine did not
have before (ClickHouse's Parquet path makes its event and links tables before it checks the rows), no attribute
column (a column would fix the attribute's type for later files), no catalogue entry, no user.

The files are Parquet files of one identity column (ClickHouse checks and resolves them itself) whose second row
is refused, and a file with a ``gio_id`` column naming no user (the DuckDB-staged path, refused after staging)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from segport.app import App
from segport.errors import ImportRejected
from segport.services.events import EventService
from tests.conftest import ENGINES, PROJECT

FRESH = "Fresh001"
T0 = 1777593600000  # 2026-05-01T00:00:00Z
FUTURE = int(time.time() * 1000) + 30 * 86_400_000  # a month ahead: beyond what an event's time may be


def parquet(path: Path, select: str) -> Path:
    duckdb.sql(f"COPY ({select}) TO '{path}' (FORMAT PARQUET)")
    return path


def tables(app: App) -> list[str]:
    """Every table of the engine (ClickHouse: of the test's database)."""
    engine: Any = app.engine
    if hasattr(engine, "client"):
        rows = engine.client().query(
            "SELECT name FROM system.tables WHERE database = {d:String} ORDER BY name", parameters={"d": engine.db_name}
        )
        return [str(r[0]) for r in rows.result_rows]
    with engine._cursor() as cur:
        return [str(r[0]) for r in cur.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]


def state(app: App, project: str, events: EventService) -> tuple[Any, ...]:
    """What a refused file must leave as it was."""
    catalog = sorted(app.meta.catalog(project).entries)
    return tables(app), catalog, events.catalog.attributes(project), app.engine.data_version(project)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_refused_first_event_file_of_a_fresh_project_makes_no_table(
    engine_name: str, seeded: Any, tmp_path: Path
) -> None:
    app = seeded.app
    app.meta.create_project(FRESH, "新项目")
    # the identities events resolve on (which an event file's first check adds to the catalogue anyway)
    app.data.import_catalog_csv(
        FRESH, "key,name,type\nid_$basic_userId,登录ID,string\nid_$anonymous_user,设备,string[]\n"
    )
    events = EventService(app.meta, app.engine, app.data)
    before = state(app, FRESH, events)
    for n, (column, value) in enumerate([("userId", "'U1'"), ("deviceId", "'dev-1'")]):
        bad = parquet(
            tmp_path / f"bad{n}.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}::BIGINT, {value}, 1::BIGINT), ('buy', {FUTURE}::BIGINT, {value}, 2)) "
            f"t(event, time, {column}, amount)",
        )
        with pytest.raises(ImportRejected, match="row 2"):
            events.import_events(FRESH, bad)
        assert state(app, FRESH, events) == before, column  # (new users would move the data version on)
    # the same file without its bad row is stored, and makes what it needs then
    good = parquet(tmp_path / "good.parquet", f"SELECT 'buy' AS event, {T0}::BIGINT AS time, 'U1' AS userId")
    assert events.import_events(FRESH, good).stored == 1
    assert app.engine.count_events(FRESH, 0, 2 * T0).events == 1


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_refused_file_adds_no_attribute_column(engine_name: str, seeded: Any, tmp_path: Path) -> None:
    """A refused file's new attribute leaves no column: a later file may give that attribute another type."""
    app = seeded.app
    events = EventService(app.meta, app.engine, app.data)
    events.import_events(
        PROJECT, parquet(tmp_path / "ok.parquet", f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId")
    )
    before = state(app, PROJECT, events)
    refused = [
        # the DuckDB-staged path: a gio_id that is no user, refused once the rows are staged
        f"SELECT 'buy' AS event, {T0} AS time, 99999 AS gio_id, 7::BIGINT AS level",
        # the path ClickHouse checks itself: a row beyond the allowed time
        f"SELECT * FROM (VALUES ('buy', {T0}::BIGINT, 'C001', 7::BIGINT), ('buy', {FUTURE}, 'C002', 8)) "
        "t(event, time, userId, level)",
    ]
    for n, select in enumerate(refused):
        with pytest.raises(ImportRejected):
            events.import_events(PROJECT, parquet(tmp_path / f"bad{n}.parquet", select))
        assert state(app, PROJECT, events) == before, select
    text = parquet(tmp_path / "text.parquet", f"SELECT 'buy' AS event, {T0} AS time, 'C002' AS userId, 'gold' AS level")
    report = events.import_events(PROJECT, text)
    assert report.stored == 1 and [a.key for a in report.new_attributes] == ["level"]
    assert {a.key: a.type.value for a in events.catalog.attributes(PROJECT)}["level"] == "string"
