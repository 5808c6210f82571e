"""Parquet event files on ClickHouse (chdb): checked, resolved and stored by ClickHouse itself
(docs/events.md, "The store"). The rows, the users created and their numbers, the report and the catalogue are
the same as the DuckDB-staged path gives for the same file; every refusal names the same row with the same
reason, and a refused file stores nothing."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from segport.app import App
from segport.engine.clickhouse import events as ch_events
from segport.errors import ImportRejected
from segport.roles.inline import build
from segport.services.events import EventService
from segport.settings import Settings
from tests.conftest import PROJECT, seed_project

T0 = 1777593600000  # 2026-05-01T00:00:00Z


@pytest.fixture
def engine_name() -> str:
    return "clickhouse"


def events(app: App) -> EventService:
    return EventService(app.meta, app.engine, app.data)


def parquet(path: Path, select: str) -> Path:
    duckdb.sql(f"COPY ({select}) TO '{path}' (FORMAT PARQUET)")
    return path


# existing users (C001, C002), new ones first named out of order, a second identity (userKey), blanks trimmed,
# every kind of column the ClickHouse path takes: $type (with blanks), a standard field, string / int / double /
# date attributes, a declared type
MIXED = f"""
SELECT * FROM (VALUES
  ('buy', {T0} + 5000, ' C001 ', NULL, '', '/a', 'x', 1::INTEGER, 1.5::DOUBLE, DATE '2026-05-01', 7::BIGINT),
  (' view', {T0} + 1000, 'N9', '', 'PAGE', NULL, '', NULL, NULL, NULL, 8),
  ('buy', {T0} + 9000, 'N1', 'email', NULL, '/b', NULL, 3, 2.0, NULL, NULL),
  ('view', {T0} + 2000, 'N9', NULL, ' ', '', 'y', 4, NULL, DATE '2026-05-02', 9),
  ('signup', {T0} + 3000, 'C002', NULL, NULL, NULL, 'z\ty', NULL, -0.0, NULL, NULL),
  ('buy', {T0}, 'N1', NULL, 'CUSTOM', '/c', 'w', 6, 1e300, NULL, 10)
) t(event, time, userId, userKey, "$type", "$path", note, n, price, day, amount)
"""
DEVICES = f"""
SELECT 'open' AS event, {T0} + i * 1000 AS time, 'd-' || (i % 4) AS deviceId, i AS n FROM range(10) r(i)
"""


def stored(app: App, project: str) -> list[tuple[Any, ...]]:
    """Every stored row with the identity its gio_id holds (new users compared by number and identity)."""
    engine: Any = app.engine
    table = ch_events.events_table(engine, project)
    cols = [c for c in ch_events.store_columns(engine, project) if c not in ch_events.ev.FIXED]
    shown = "".join(f", toString(e.`{c}`)" for c in cols)
    rows = (
        engine.client()
        .query(
            f"SELECT e.gio_id, toUnixTimestamp64Milli(e.`$time`), e.`$event`, e.`$type`, e.`$batch`{shown} FROM {table} e "
            "ORDER BY 1, 2, 3"
        )
        .result_rows
    )
    return [tuple(r) for r in rows]


def users(app: App, project: str) -> list[tuple[Any, ...]]:
    engine: Any = app.engine
    snap = engine.current(project)
    return [
        tuple(r)
        for r in engine.client()
        .query(
            f"SELECT gio_id, `id_$basic_userId`, `id_$anonymous_user`, `id_email` FROM {engine.table(snap.users)} "
            "ORDER BY gio_id"
        )
        .result_rows
    ]


def run(app: App, path: Path, *, duckdb_path: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, bool]:
    """Import ``path`` into PROJECT; returns the report and whether ClickHouse alone stored it."""
    taken: list[bool] = []
    real = ch_events._import_parquet

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = None if duckdb_path else real(*args, **kwargs)
        taken.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(ch_events, "_import_parquet", spy)
        report = events(app).import_events(PROJECT, path)
    return report, taken == [True]


def second_app(chdb_dir: Path, tmp_path: Path) -> App:
    other = build(
        Settings(
            data_dir=tmp_path / "data2",
            serve_workers=False,
            engine="clickhouse",
            clickhouse_url=f"chdb://{chdb_dir}?database=t_{uuid.uuid4().hex[:12]}",
        )
    )
    seed_project(other, tmp_path / "seed2")
    return other


def prepare(app: App) -> None:
    app.data.import_catalog_csv(PROJECT, "key,name,type\nid_email,邮箱,string\n")
    events(app).declare(PROJECT, "amount", "金额", "double")


def test_clickhouse_stores_a_parquet_file_as_the_duckdb_staged_path_does(
    seeded: Any, tmp_path: Path, chdb_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "seed2").mkdir()
    files = [parquet(tmp_path / "mixed.parquet", MIXED), parquet(tmp_path / "devices.parquet", DEVICES)]
    other = second_app(chdb_dir, tmp_path)
    try:
        links = tmp_path / "links.csv"  # d-1 linked to C001 first: the devices file's d-1 rows are C001's
        links.write_text(f"event,time,userId,deviceId\nlogin,{T0},C001,d-1\n", encoding="utf-8")
        for app in (seeded.app, other):
            prepare(app)
            assert events(app).import_events(PROJECT, links).stored == 1
        for path in files:
            fast, took = run(seeded.app, path, duckdb_path=False, monkeypatch=monkeypatch)
            assert took, f"{path.name} took the DuckDB path"
            slow, took = run(other, path, duckdb_path=True, monkeypatch=monkeypatch)
            assert not took
            assert dataclasses.replace(fast, elapsed_s=0) == dataclasses.replace(slow, elapsed_s=0)
        assert stored(seeded.app, PROJECT) == stored(other, PROJECT)
        assert users(seeded.app, PROJECT) == users(other, PROJECT)
        assert events(seeded.app).catalog.attributes(PROJECT) == events(other).catalog.attributes(PROJECT)
        # the figures themselves: 3 new users for MIXED (N9, N1 by email, N1), numbered by first row; 3 devices
        rows = stored(seeded.app, PROJECT)
        assert len(rows) == 17
        c001 = {r[0] for r in rows if r[2] == "login"}
        assert len(c001) == 1 and sum(1 for r in rows if r[2] == "open" and r[0] in c001) == 3
        assert [r[3] for r in rows if r[2] == "view"] == ["PAGE", "CUSTOM"]
        new = [u for u in users(seeded.app, PROJECT) if u[0] > 7]
        assert [(u[1], u[3]) for u in new[:3]] == [("N9", None), (None, "N1"), ("N1", None)]
    finally:
        other.close()


BAD = [
    (
        f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('9x', {T0}, 'C001')) t(event, time, userId)",
        "row 2: event name '9x' is not valid",
    ),
    (
        f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), (NULL, {T0}, 'C001')) t(event, time, userId)",
        "row 2: event is empty",
    ),
    ("SELECT 'buy' AS event, 946684799999 AS time, 'C001' AS userId", "row 1: time is before 2000-01-01"),
    (
        "SELECT 'buy' AS event, 99999999999999 AS time, 'C001' AS userId",
        "row 1: time is more than 24 hours in the future",
    ),
    (
        f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('buy', NULL, 'C001')) t(event, time, userId)",
        "row 2: time null is not ISO 8601",
    ),
    (
        f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('buy', {T0}, ' ')) t(event, time, userId)",
        "row 2: no identity",
    ),
    (
        f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, '$nokey' AS userKey",
        "row 1: identity '$nokey' is not an identity",
    ),
    (
        f"SELECT 'buy' AS event, {T0} AS time, 'C0\x0101' AS userId",
        "row 1: event, userId, userKey or deviceId holds a control character",
    ),
    (
        f"SELECT 'open' AS event, {T0} AS time, 'd\x7f' AS deviceId",
        "row 1: event, userId, userKey or deviceId holds a control character",
    ),
    (
        f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, 'a\x1fb' AS note",
        "row 1: attribute note holds a control character",
    ),
    (
        f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, 'a' || chr(0) || 'b' AS \"$path\"",
        "row 1: $path holds a control character",
    ),
    (
        f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, 'inf'::DOUBLE AS price",
        "row 1: attribute price: value 'inf' is not a valid double",
    ),
    (
        f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, 'nan'::DOUBLE AS amount",
        "row 1: attribute amount: value 'nan' is not a valid double",
    ),
]


def test_a_bad_parquet_file_is_refused_whole_naming_its_row(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(seeded.app)
    ok, took = run(seeded.app, parquet(tmp_path / "ok.parquet", MIXED), duckdb_path=False, monkeypatch=monkeypatch)
    assert took and ok.stored == 6
    before = (stored(seeded.app, PROJECT), users(seeded.app, PROJECT), events(seeded.app).catalog.attributes(PROJECT))
    for n, (select, message) in enumerate(BAD):
        with pytest.raises(ImportRejected) as err:
            events(seeded.app).import_events(PROJECT, parquet(tmp_path / f"bad{n}.parquet", select))
        assert message in err.value.message and f"bad{n}.parquet" in err.value.message, err.value.message
        after = (
            stored(seeded.app, PROJECT),
            users(seeded.app, PROJECT),
            events(seeded.app).catalog.attributes(PROJECT),
        )
        assert after == before, select


def test_files_the_clickhouse_path_does_not_take_are_still_stored(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """userId with deviceId (identity links), gio_id, a text time, a text attribute of a declared double type: the
    DuckDB-staged path, with the same results as before."""
    prepare(seeded.app)
    for name, select in [
        ("links.parquet", f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, 'd-1' AS deviceId"),
        ("gio.parquet", f"SELECT 'buy' AS event, {T0} AS time, 1 AS gio_id"),
        ("iso.parquet", "SELECT 'buy' AS event, '2026-05-01T08:00:00+08:00' AS time, 'C001' AS userId"),
        ("text-int.parquet", f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, '12' AS amount"),
    ]:
        report, took = run(seeded.app, parquet(tmp_path / name, select), duckdb_path=False, monkeypatch=monkeypatch)
        assert not took and report.stored == 1, name
    assert len(stored(seeded.app, PROJECT)) == 4


def test_two_identities_sharing_a_key_send_the_file_to_the_duckdb_path(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ClickHouse path maps an identity to its user by a 64-bit key. A key shared by two identities of one
    file (forced here: the key of a value's first letter) is seen, the DuckDB-staged path stores the file, and
    each identity keeps a user of its own."""
    prepare(seeded.app)
    path = parquet(
        tmp_path / "clash.parquet",
        f"SELECT * FROM (VALUES ('buy', {T0}, 'Q1'), ('buy', {T0} + 1, 'Q2'), ('buy', {T0} + 2, 'C001')) "
        "t(event, time, userId)",
    )
    monkeypatch.setattr(ch_events, "_KEY", "cityHash64(_idx, substring(_idval, 1, 1))")
    report, took = run(seeded.app, path, duckdb_path=False, monkeypatch=monkeypatch)
    assert not took and report.stored == 3 and report.users_created == 2
    rows = stored(seeded.app, PROJECT)
    assert len({r[0] for r in rows}) == 3
    new = [u for u in users(seeded.app, PROJECT) if u[1] in ("Q1", "Q2")]
    assert [u[1] for u in new] == ["Q1", "Q2"] and new[0][0] < new[1][0]


def test_invalid_utf8_in_any_text_column_refuses_the_file(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invalid UTF-8 is no longer looked for in every row of the event name and identity columns: the ClickHouse
    path finds it among the distinct names (their grammar is ASCII) and identities; an attribute's, ``$type``'s
    and ``$path``'s rows are still checked one by one. Each file is refused whole by the ClickHouse path and then
    by the DuckDB path (a refusal, not DuckDB's own error), and nothing is stored."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    prepare(seeded.app)
    ok, took = run(seeded.app, parquet(tmp_path / "ok.parquet", MIXED), duckdb_path=False, monkeypatch=monkeypatch)
    assert took and ok.stored == 6
    before = (stored(seeded.app, PROJECT), users(seeded.app, PROJECT))

    def text(*values: bytes) -> Any:  # a string column holding the bytes as they are (no UTF-8 check)
        return pa.array(values, pa.binary()).view(pa.string())

    good = {
        "event": [b"buy", b"buy"],
        "userId": [b"C001", b"N7"],
        "note": [b"a", b"b"],
        "$path": [b"/", b"/"],
        "$type": [b"CUSTOM", b"CUSTOM"],
    }
    for column in good:
        columns = {**good, column: [good[column][0], good[column][1] + b"\xff"]}
        table = pa.table({"time": pa.array([T0, T0 + 1], pa.int64()), **{k: text(*v) for k, v in columns.items()}})
        path = tmp_path / f"utf8-{column.strip('$')}.parquet"
        pq.write_table(table, path)
        taken: list[bool] = []
        real = ch_events._import_parquet

        def spy(*args: Any, _real: Any = real, _taken: list[bool] = taken, **kwargs: Any) -> Any:
            out = _real(*args, **kwargs)
            _taken.append(out is not None)
            return out

        with monkeypatch.context() as m, pytest.raises(ImportRejected):
            m.setattr(ch_events, "_import_parquet", spy)
            events(seeded.app).import_events(PROJECT, path)
        assert taken == [False], column
        assert (stored(seeded.app, PROJECT), users(seeded.app, PROJECT)) == before, column


def parts(app: App, table: str) -> dict[str, int]:
    """The active parts of a table of the app's ClickHouse database, by partition."""
    engine: Any = app.engine
    rows = (
        engine.client()
        .query(
            "SELECT partition_id, count() FROM system.parts WHERE database = {d:String} AND table = {t:String} "
            "AND active GROUP BY partition_id",
            parameters={"d": engine.db_name, "t": table},
        )
        .result_rows
    )
    return {str(p): int(n) for p, n in rows}


def test_held_merges_leave_a_tables_parts_apart(seeded: Any) -> None:
    """``_hold_merges`` stops the background merges of the table it is given (the staging table): an OPTIMIZE,
    which merges at once otherwise, is refused and the parts stay as they were written."""
    engine: Any = seeded.app.engine
    client = engine.client()
    for name, held in (("held", True), ("free", False)):
        table = engine.table(name)
        client.command(f"CREATE TABLE {table} (a Int64) ENGINE = MergeTree ORDER BY a")
        if held:
            ch_events._hold_merges(client, table)
        client.command(f"INSERT INTO {table} VALUES (1)")
        client.command(f"INSERT INTO {table} VALUES (2)")
        if held:
            with pytest.raises(Exception, match="ABORTED|Cancelled merging"):
                client.command(f"OPTIMIZE TABLE {table} FINAL")
        else:
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        assert sum(parts(seeded.app, name).values()) == (2 if held else 1), name


def test_the_event_table_merges_after_a_parquet_import(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging table's merges are held while its rows go in (docs/performance.md, "Merges held off in the
    staging table"); the event table its parts are attached to is not: two imports' parts merge into one a
    month."""
    prepare(seeded.app)
    held: list[str] = []
    real = ch_events._hold_merges

    def spy(client: Any, stage: str) -> None:
        held.append(stage)
        real(client, stage)

    monkeypatch.setattr(ch_events, "_hold_merges", spy)
    for name in ("one.parquet", "two.parquet"):
        report, took = run(seeded.app, parquet(tmp_path / name, MIXED), duckdb_path=False, monkeypatch=monkeypatch)
        assert took and report.stored == 6
    table = ch_events.events_table(seeded.app.engine, PROJECT)
    assert len(held) == 2 and all(table not in stage for stage in held)
    name = table.rsplit(".", 1)[1].strip("`")
    assert max(parts(seeded.app, name).values()) >= 2  # one part a month from each import
    seeded.app.engine.client().command(f"OPTIMIZE TABLE {table} FINAL")
    assert set(parts(seeded.app, name).values()) == {1}
    assert len(stored(seeded.app, PROJECT)) == 12


def test_merges_are_held_only_while_the_fullest_month_stays_under_the_bound(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging table's merges are held only while the event table's fullest month, with the parts the file
    makes (one a month for each ~1M rows, by its Parquet footer), holds at most ``HELD_PARTS_MAX`` parts: past
    it the staging table merges as it fills, so the event table is not handed more parts a month than its
    inserts allow."""
    prepare(seeded.app)
    held: list[str] = []
    monkeypatch.setattr(ch_events, "_hold_merges", lambda client, stage: held.append(stage))
    monkeypatch.setattr(ch_events, "HELD_PARTS_MAX", 1)
    path = parquet(tmp_path / "six.parquet", MIXED)  # 6 rows, one month: one part
    report, took = run(seeded.app, path, duckdb_path=False, monkeypatch=monkeypatch)
    assert took and report.stored == 6 and len(held) == 1  # an empty store: 0 + 1 part
    report, took = run(seeded.app, path, duckdb_path=False, monkeypatch=monkeypatch)
    assert took and report.stored == 6 and len(held) == 1  # 1 part already there: 1 + 1 > 1
    assert ch_events._parts_a_month(seeded.app.engine, PROJECT) == 2
    monkeypatch.setattr(ch_events, "HELD_PARTS_MAX", 3)
    report, took = run(seeded.app, path, duckdb_path=False, monkeypatch=monkeypatch)
    assert took and report.stored == 6 and len(held) == 2  # 2 + 1 <= 3
    monkeypatch.setattr(ch_events, "_INSERT_BLOCK_ROWS", 3)  # as if each 3 rows were an insert block: 2 parts
    report, took = run(seeded.app, path, duckdb_path=False, monkeypatch=monkeypatch)
    assert took and report.stored == 6 and len(held) == 2  # 3 + 2 > 3
    assert len(stored(seeded.app, PROJECT)) == 24


def test_a_server_refusing_to_hold_merges_still_imports(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ClickHouse user without the SYSTEM STOP MERGES grant: the ClickHouse path stores the file all the same."""
    prepare(seeded.app)
    client = seeded.app.engine.client()
    real = client.command
    refused: list[str] = []

    def command(sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith("SYSTEM STOP MERGES"):
            refused.append(sql)
            raise RuntimeError("Code: 497. DB::Exception: Not enough privileges. (ACCESS_DENIED)")
        return real(sql, *args, **kwargs)

    monkeypatch.setattr(client, "command", command)
    report, took = run(seeded.app, parquet(tmp_path / "ok.parquet", MIXED), duckdb_path=False, monkeypatch=monkeypatch)
    assert took and report.stored == 6 and len(refused) == 1
    assert len(stored(seeded.app, PROJECT)) == 6
