"""A computed tag on ClickHouse: the next snapshot's users table shares the current one's parts and has only the
tag's column written again (segport/engine/clickhouse/tags.py), while a reader of the old snapshot keeps every old
value, and a computation that fails or was killed before its publish leaves the current snapshot as it was.

The values themselves are checked against a plain-Python reference on both engines in tests/test_tags_engines.py;
here the snapshot's life around them."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from segport.app import App
from segport.domain.behaviour import DAY_MS, BehaviourContext
from segport.engine.base import TagComputation
from segport.errors import ComputeFailed
from segport.services.data import catalog_entry
from segport.services.events import EventService
from segport.services.tags import TagService
from segport.settings import Settings
from tests.conftest import PROJECT

T0 = 1777593600000  # 2026-05-01T00:00:00Z
NOW = T0 + 10 * DAY_MS
LAST_CITY = {"type": "ATTRIBUTION_ATTRIBUTE", "event": "buy", "attribute": "city", "pick": "last"}
BUYS = {"type": "AGGREGATED", "event": "buy"}  # 0 for users without events: every user holds a value


@pytest.fixture
def engine_name() -> str:
    return "clickhouse"


@pytest.fixture(params=["plain", "dotted"])
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The project's ClickHouse database: a plain name, or one with a dot (which ``joinGet`` cannot name, so the
    tag is written by copying the users table instead)."""
    folder = request.getfixturevalue("chdb_dir")
    sep = "_" if request.param == "plain" else "."
    return Settings(
        data_dir=tmp_path / "data",
        serve_workers=False,
        engine="clickhouse",
        clickhouse_url=f"chdb://{folder}?database=t{sep}{uuid.uuid4().hex[:12]}",
    )


def with_events(app: App, tmp_path: Path) -> BehaviourContext:
    """C001 bought in 北京 then 上海, C002 in 广州; the others have no events."""
    events = EventService(app.meta, app.engine, app.data)
    events.declare(PROJECT, "city", "city", "string")
    f = tmp_path / "e.csv"
    f.write_text(
        f"event,time,userId,city\nbuy,{T0},C001,北京\nbuy,{T0 + 5},C001,上海\nbuy,{T0 + 1},C002,广州\n",
        encoding="utf-8",
    )
    events.import_events(PROJECT, f)
    return BehaviourContext(PROJECT, TagService(app.data).event_schema(PROJECT), NOW, "UTC")


def add_tag(app: App, key: str, kind: str) -> None:
    app.data.add_catalog_entries(PROJECT, [catalog_entry(key, key, kind)])


def compute(app: App, key: str, defn: dict[str, Any], ctx: BehaviourContext) -> int:
    return app.engine.compute_tag(PROJECT, TagComputation(key, defn, app.meta.catalog(PROJECT), ctx)).total_users


def rows(app: App, users: str) -> list[tuple[Any, ...]]:
    """Every row and column of a users table, in gio_id order."""
    engine: Any = app.engine
    return [tuple(r) for r in engine.client().query(f"SELECT * FROM {engine.table(users)} ORDER BY gio_id").result_rows]


def city_of(app: App, users: str) -> dict[str, Any]:
    engine: Any = app.engine
    table = engine.table(users)
    got = engine.client().query(f"SELECT `id_$basic_userId`, tag_city FROM {table} ORDER BY gio_id").result_rows
    return {str(u): c for u, c in got}


def test_the_old_snapshot_keeps_every_value_and_the_new_one_differs_in_the_tag_column_only(
    seeded: Any, tmp_path: Path
) -> None:
    app = seeded.app
    engine: Any = app.engine
    ctx = with_events(app, tmp_path)
    add_tag(app, "tag_city", "string")
    first = engine.current(PROJECT)
    before = rows(app, first.users)
    assert compute(app, "tag_city", LAST_CITY, ctx) == 2
    second = engine.current(PROJECT)
    assert second.seq == first.seq + 1 and second.data_version == first.data_version + 1
    assert second.users != first.users and second.members == first.members
    # a reader still on the first snapshot (an export that began before the publish) sees it unchanged
    assert rows(app, first.users) == before
    assert set(city_of(app, first.users).values()) == {None}
    assert city_of(app, second.users) == {
        "C001": "上海", "C002": "广州", "C003": None, "C004": None, "C005": None, "C006": None, "C007": None,
    }  # fmt: skip
    # every other column of every user is the first snapshot's
    names = list(engine.column_types(second.users))
    tag = names.index("tag_city")
    after = rows(app, second.users)
    assert [r[:tag] + r[tag + 1 :] for r in after] == [r[:tag] + r[tag + 1 :] for r in before]

    # a recompute with a window past every event: the new snapshot has no value, the one before keeps its own
    later = {**LAST_CITY, "time": {"since": "2026-06-01"}}
    assert compute(app, "tag_city", later, ctx) == 0
    third = engine.current(PROJECT)
    assert set(city_of(app, third.users).values()) == {None}
    assert city_of(app, second.users)["C001"] == "上海"
    # a measure that is 0 without events fills every user
    add_tag(app, "tag_buys", "int")
    assert compute(app, "tag_buys", BUYS, ctx) == 7
    got = engine.client().query(f"SELECT tag_buys FROM {engine.table(engine.current(PROJECT).users)} ORDER BY gio_id")
    assert [r[0] for r in got.result_rows] == [2, 1, 0, 0, 0, 0, 0]


def test_the_new_table_hard_links_every_column_file_but_the_tag_s(seeded: Any, tmp_path: Path) -> None:
    """In wide parts (one file per column: users tables past ClickHouse's ``min_bytes_for_wide_part``) the tag's
    column is written again and the others are the old table's files, linked, not copied."""
    app = seeded.app
    engine: Any = app.engine
    if "." in engine.db_name:
        pytest.skip("a dotted database name copies the table")
    client = engine.client()
    ctx = with_events(app, tmp_path)
    add_tag(app, "tag_city", "string")
    old = engine.table(engine.current(PROJECT).users)
    # make the current table's part wide, as a large users table's parts are
    client.command(f"ALTER TABLE {old} MODIFY SETTING min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0")
    client.command(f"OPTIMIZE TABLE {old} FINAL")
    assert compute(app, "tag_city", LAST_CITY, ctx) == 2
    parts = client.query(
        "SELECT path, part_type FROM system.parts WHERE database = {d:String} AND table = {t:String} AND active",
        parameters={"d": engine.db_name, "t": engine.current(PROJECT).users},
    ).result_rows
    assert parts and all(kind == "Wide" for _, kind in parts)
    for path, _ in parts:
        assert os.stat(Path(path) / "usr_age.bin").st_nlink >= 2  # shared with the old table's part
        assert os.stat(Path(path) / "tag_city.bin").st_nlink == 1  # written by this computation


class FailingUpdate:
    """The engine's client, failing the statement that writes the tag's column (as a failed mutation would)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if " UPDATE " in sql:
            raise RuntimeError("injected: the mutation failed")
        return self._client.command(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_failed_computation_leaves_the_current_snapshot_and_no_table_behind(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = seeded.app
    engine: Any = app.engine
    if "." in engine.db_name:
        pytest.skip("the copy has no mutation to fail")
    ctx = with_events(app, tmp_path)
    add_tag(app, "tag_city", "string")
    snap = engine.current(PROJECT)
    tables_before = set(_tables(engine))
    real, inner = engine.client(), engine.engine  # the ClickHouse engine behind the memory admission
    monkeypatch.setattr(inner, "client", lambda: FailingUpdate(real))
    with pytest.raises(ComputeFailed, match="injected"):
        compute(app, "tag_city", LAST_CITY, ctx)
    monkeypatch.undo()
    assert engine.current(PROJECT) == snap
    assert set(_tables(engine)) == tables_before  # the new users table and the values' table are gone
    assert compute(app, "tag_city", LAST_CITY, ctx) == 2


def test_tables_left_by_a_killed_computation_do_not_block_the_next(seeded: Any, tmp_path: Path) -> None:
    app = seeded.app
    engine: Any = app.engine
    client = engine.client()
    ctx = with_events(app, tmp_path)
    add_tag(app, "tag_city", "string")
    snap = engine.current(PROJECT)
    # what a kill between the statements leaves: the next users table half made, the values' table
    client.command(f"CREATE TABLE {engine.table(f'u_{PROJECT}_{snap.seq + 1}')} (gio_id Int64) ENGINE = Log")
    if "." not in engine.db_name:
        client.command(f"CREATE TABLE {engine.table(f'tv_{PROJECT}_{snap.seq + 1}')} (gio_id Int64) ENGINE = Log")
    assert compute(app, "tag_city", LAST_CITY, ctx) == 2
    assert city_of(app, engine.current(PROJECT).users)["C002"] == "广州"
    assert f"tv_{PROJECT}_{snap.seq + 1}" not in _tables(engine)


def _tables(engine: Any) -> list[str]:
    return [str(r[0]) for r in engine.client().query(f"SHOW TABLES FROM {engine.db}").result_rows]
