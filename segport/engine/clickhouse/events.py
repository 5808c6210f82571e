"""Events in ClickHouse: ``events_<project>``, a MergeTree partitioned by month and ordered by time, so a scan
bounded by ``$time`` reads only the parts (and the granules within them) of that time.

A file is read, checked and staged exactly as the DuckDB engine does it (:mod:`segport.engine.duckdb.events`),
in a scratch DuckDB file; identities are resolved against the project's current users table here, and the
rows go to ClickHouse as one Parquet file in one ``INSERT``. Identities seen for the first time become users:
their ``gio_id`` range is reserved first (a snapshot with ``next_gio_id`` moved on and ``data_version`` + 1,
pointing at the same users table), then the new users are appended to that table. They hold only an
identity, so no export target (a segment's snapshot, the users holding a tag) changes; a crash after the
reservation leaves a gap in the numbers, never a number given twice. ClickHouse has no transaction across the
users and the events: if the final ``INSERT`` fails, the new users stay (holding only their identity).
Spool batches already stored (their ``$batch`` in the table) are skipped.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from segport.domain.event_files import BATCH_COLUMN, EventAttribute
from segport.domain.keys import Catalog, CatalogEntry, KeyKind
from segport.engine.base import EventImportReport, EventScan, UserEvents
from segport.engine.clickhouse import snapshots as snaps
from segport.engine.clickhouse.importer import _scratch_duckdb
from segport.engine.clickhouse.sql import ch_ident, ch_string
from segport.engine.duckdb import events as ev
from segport.engine.duckdb.event_reads import MAX_MS, shape
from segport.engine.duckdb.sql import sql_string
from segport.errors import ImportRejected

_CH = {"VARCHAR": "String", "BIGINT": "Int64", "DOUBLE": "Float64", "DATE": "Date32"}
_DUCK = {f"Nullable({v})": k for k, v in _CH.items()}


def events_table(engine: Any, project_id: str) -> str:
    return engine.table(f"events_{project_id}")


def links_table(engine: Any, project_id: str) -> str:
    """Device id -> the user it is linked to (docs/events.md, "Identity links"); one row per device."""
    return engine.table(f"links_{project_id}")


def store_columns(engine: Any, project_id: str) -> dict[str, str]:
    """The event table's columns as DuckDB types (as :func:`segport.engine.duckdb.events.store_columns`)."""
    have = snaps.columns(engine.client(), engine.db_name, f"events_{project_id}")
    return {name: _DUCK.get(kind, kind) for name, kind in have.items()}


def _ensure_store(engine: Any, project_id: str, columns: dict[str, str]) -> None:
    client, table = engine.client(), events_table(engine, project_id)
    client.command(
        f"CREATE TABLE IF NOT EXISTS {table} (gio_id Int64, `$time` DateTime64(3, 'UTC'), `$event` String, "
        f"`$type` String, `{BATCH_COLUMN}` Nullable(Int64)) ENGINE = MergeTree "
        "PARTITION BY toYYYYMM(`$time`) ORDER BY (`$time`, gio_id)"
    )
    client.command(
        f"CREATE TABLE IF NOT EXISTS {links_table(engine, project_id)} (device String, gio_id Int64, "
        "merged_from Nullable(Int64), linked_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree "
        "ORDER BY device"
    )
    have = store_columns(engine, project_id)
    for name, sql in columns.items():
        if name not in have:
            client.command(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {ch_ident(name)} Nullable({_CH[sql]})")


def _fetch(engine: Any, con: duckdb.DuckDBPyConnection, folder: Path, query: str, into: str) -> None:
    """Run ``query`` in ClickHouse and insert its rows into the scratch table ``into`` (through Parquet)."""
    data = engine.client().raw_query(query, fmt="Parquet")
    if not data:
        return
    part = folder / "fetched.parquet"
    part.write_bytes(data)
    con.execute(f"INSERT INTO {into} SELECT * FROM read_parquet({sql_string(str(part))})")


def _send(engine: Any, table: str, columns: list[str], path: Path) -> None:
    with open(path, "rb") as f:
        engine.client().raw_insert(table, columns, f, fmt="Parquet", settings={"input_format_null_as_default": 1})


def import_events(
    engine: Any,
    project_id: str,
    catalog: Catalog,
    attributes: list[EventAttribute],
    path: Path,
    file_format: str,
    now_ms: int,
) -> EventImportReport:
    started = time.perf_counter()
    snap = engine.current(project_id)
    client = engine.client()
    with _scratch_duckdb(engine) as (con, folder):
        declared = ev.declared_types(attributes, store_columns(engine, project_id))
        staged = ev.stage(con, catalog, declared, path, file_format or None, project_id, now_ms)
        _ensure_store(engine, project_id, staged.columns)
        table = events_table(engine, project_id)
        batches = [
            int(r[0])
            for r in con.execute(
                f'SELECT DISTINCT "{BATCH_COLUMN}" FROM ev_stage WHERE "{BATCH_COLUMN}" IS NOT NULL'
            ).fetchall()
        ]
        skipped: list[int] = []
        if batches:
            skipped = sorted(
                int(r[0])
                for r in client.query(
                    f"SELECT DISTINCT `{BATCH_COLUMN}` FROM {table} WHERE `{BATCH_COLUMN}` IN {{b:Array(Int64)}}",
                    parameters={"b": batches},
                ).result_rows
            )
            if skipped:
                ev.drop_batches(con, staged, skipped)
        users = engine.table(snap.users)
        gios = [int(r[0]) for r in con.execute("SELECT DISTINCT _gio FROM ev_stage WHERE _gio IS NOT NULL").fetchall()]
        if gios:
            known = {
                int(r[0])
                for r in client.query(
                    f"SELECT gio_id FROM {users} WHERE gio_id IN {{g:Array(Int64)}}", parameters={"g": gios}
                ).result_rows
            }
            bad = con.execute(
                "SELECT _row, _gio FROM ev_stage WHERE _gio IS NOT NULL AND NOT list_contains(?::BIGINT[], _gio) "
                "ORDER BY _row LIMIT 1",
                [sorted(known)],
            ).fetchone()
            if bad is not None:
                raise ImportRejected(f"{staged.at(int(bad[0]))}: gio_id {bad[1]} is not a user of project {project_id}")
        ev.collect_identities(con, staged)
        con.execute("CREATE TABLE ev_map (_idcol VARCHAR, _idval VARCHAR, gio_id BIGINT)")
        added = 0
        if staged.identities:
            ids = folder / "ids.parquet"
            con.execute(f"COPY (SELECT _idcol, _idval FROM ev_ids) TO {sql_string(str(ids))} (FORMAT PARQUET)")
            probe = engine.table(f"ei_{project_id}_{snap.seq}")
            client.command(f"DROP TABLE IF EXISTS {probe}")
            client.command(f"CREATE TABLE {probe} (_idcol String, _idval String) ENGINE = MergeTree ORDER BY _idval")
            try:
                _send(engine, probe, ["_idcol", "_idval"], ids)
                links = links_table(engine, project_id)
                for col in staged.identities:
                    entry = catalog.get(col)
                    assert entry is not None
                    value = f"arrayJoin({ch_ident(col)})" if entry.multi else ch_ident(col)
                    unlinked = ""
                    if col == ev.DEVICE_COLUMN:  # a device linked to a user is that user
                        _fetch(
                            engine,
                            con,
                            folder,
                            f"SELECT i._idcol, i._idval, l.gio_id FROM {probe} AS i INNER JOIN {links} AS l "
                            f"ON l.device = i._idval WHERE i._idcol = {ch_string(col)}",
                            "ev_map",
                        )
                        unlinked = f" AND i._idval NOT IN (SELECT device FROM {links})"
                    _fetch(
                        engine,
                        con,
                        folder,
                        f"SELECT i._idcol, i._idval, toInt64(min(u.gio_id)) FROM {probe} AS i INNER JOIN "
                        f"(SELECT gio_id, {value} AS v FROM {users}) AS u ON u.v = i._idval "
                        f"WHERE i._idcol = {ch_string(col)}{unlinked} GROUP BY i._idcol, i._idval",
                        "ev_map",
                    )
            finally:
                client.command(f"DROP TABLE IF EXISTS {probe}")
            added = _add_users(engine, con, folder, catalog, staged, snap, users)
        moves = _plan_links(engine, con, folder, catalog, staged, snap, users) if staged.links else []
        names, select = ev.final_rows(staged, ordered=False)
        rows = folder / "events.parquet"
        con.execute(f"COPY ({select}) TO {sql_string(str(rows))} (FORMAT PARQUET)")
        stored = staged.rows  # every staged row, with its gio_id (each identity maps to one user)
        if stored:
            _send(engine, table, names, rows)
        if staged.links:
            _link(engine, con, folder, project_id, moves)
        events = ev.event_names(con, staged)
    return EventImportReport(
        staged.rows, stored, added, staged.new_attributes, events, skipped, time.perf_counter() - started
    )


def _plan_links(
    engine: Any,
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    catalog: Catalog,
    staged: ev.Staged,
    snap: snaps.Snapshot,
    users: str,
) -> list[tuple[int, int]]:
    """The links this file makes and the anonymous users it merges (as the DuckDB engine decides them:
    :func:`segport.engine.duckdb.events.plan_links`), with the holders read from ClickHouse; the file's own rows
    of a merged user are mapped to the login user at once. Returns the merges (from, to)."""
    ev.staged_links(con)
    links = links_table(engine, project_id=snap.project)
    client = engine.client()
    con.execute(
        "CREATE TABLE ev_holders (device VARCHAR, gio_id BIGINT, _first BIGINT, holder BIGINT, anonymous BOOLEAN, "
        "devices VARCHAR[])"
    )
    if int(con.execute("SELECT count(*) FROM ev_links").fetchone()[0]):  # type: ignore[index]
        part = folder / "links.parquet"
        con.execute(f"COPY (SELECT device, gio_id, _first FROM ev_links) TO {sql_string(str(part))} (FORMAT PARQUET)")
        probe = engine.table(f"el_{snap.project}_{snap.seq}")
        client.command(f"DROP TABLE IF EXISTS {probe}")
        client.command(
            f"CREATE TABLE {probe} (device String, gio_id Int64, _first Int64) ENGINE = MergeTree ORDER BY device"
        )
        dev = ch_ident(ev.DEVICE_COLUMN)
        single = [e.key for e in catalog.of_kind(KeyKind.IDENTITY) if not e.multi]
        anonymous = " AND ".join(f"ifNull(toString({ch_ident(k)}), '') = ''" for k in single) or "1"
        try:
            _send(engine, probe, ["device", "gio_id", "_first"], part)
            _fetch(
                engine,
                con,
                folder,
                f"SELECT l.device, l.gio_id, l._first, nullIf(h.holder, 0), toBool(h.anonymous), h.devices "
                f"FROM {probe} AS l LEFT JOIN (SELECT v, argMin(gio_id, gio_id) AS holder, argMin(anon, gio_id) "
                f"AS anonymous, argMin(devs, gio_id) AS devices FROM (SELECT gio_id, arrayJoin({dev}) AS v, "
                f"({anonymous}) AS anon, {dev} AS devs FROM {users}) GROUP BY v) AS h ON h.v = l.device "
                f"WHERE l.device NOT IN (SELECT device FROM {links})",
                "ev_holders",
            )
        finally:
            client.command(f"DROP TABLE IF EXISTS {probe}")
    ev.plan_links(con)
    others = [str(r[0]) for r in con.execute("SELECT device FROM ev_newlinks").fetchall()]
    if others:
        linked = client.query(
            f"SELECT device FROM {links} WHERE device IN {{d:Array(String)}}", parameters={"d": others}
        ).result_rows
        if linked:
            con.execute(
                "DELETE FROM ev_newlinks WHERE device IN (SELECT unnest(?::VARCHAR[]))", [[r[0] for r in linked]]
            )
    con.execute("UPDATE ev_map SET gio_id = m.gio_id FROM ev_moves m WHERE ev_map.gio_id = m.merged_from")
    return [(int(r[0]), int(r[1])) for r in con.execute("SELECT merged_from, gio_id FROM ev_moves").fetchall()]


def _link(
    engine: Any, con: duckdb.DuckDBPyConnection, folder: Path, project_id: str, moves: list[tuple[int, int]]
) -> None:
    """Move the merged users' stored events to their login users, then record the links. The sorting key holds
    ``gio_id``, which a mutation cannot change: the rows are copied under the new ``gio_id`` and the old ones
    deleted (one ``INSERT … SELECT`` and one synchronous ``DELETE`` for all the merges of the file)."""
    client, table = engine.client(), events_table(engine, project_id)
    if moves:
        froms, tos = ", ".join(str(m[0]) for m in moves), ", ".join(str(m[1]) for m in moves)
        # (the filter in a subquery: an alias named gio_id would take its place in the WHERE)
        client.command(
            f"INSERT INTO {table} SELECT * REPLACE (transform(gio_id, [{froms}], [{tos}], gio_id) AS gio_id) "
            f"FROM (SELECT * FROM {table} WHERE gio_id IN ({froms}))"
        )
        client.command(
            f"ALTER TABLE {table} DELETE WHERE gio_id IN ({froms})",
            settings={"mutations_sync": 2},
        )
    if int(con.execute("SELECT count(*) FROM ev_newlinks").fetchone()[0]):  # type: ignore[index]
        part = folder / "newlinks.parquet"
        con.execute(
            f"COPY (SELECT device, gio_id, merged_from FROM ev_newlinks) TO {sql_string(str(part))} (FORMAT PARQUET)"
        )
        _send(engine, links_table(engine, project_id), ["device", "gio_id", "merged_from"], part)


def _add_users(
    engine: Any,
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    catalog: Catalog,
    staged: ev.Staged,
    snap: snaps.Snapshot,
    users: str,
) -> int:
    """New users for the identities no user holds: their numbers reserved by a published snapshot first, then
    appended to the current users table."""
    con.execute(ev.new_users_sql(snap.next_gio_id))
    added = int(con.execute("SELECT count(*) FROM ev_new").fetchone()[0])  # type: ignore[index]
    if not added:
        return 0
    engine.publish(snap.next(data_version=snap.data_version + 1, next_gio_id=snap.next_gio_id + added))
    for col in staged.identities:
        entry: CatalogEntry | None = catalog.get(col)
        assert entry is not None
        value = "[_idval]" if entry.multi else "_idval"
        part = Path(tempfile.mkstemp(suffix=".parquet", dir=folder)[1])
        con.execute(
            f"COPY (SELECT gio_id, {value} AS {ev.q(col)} FROM ev_new WHERE _idcol = {sql_string(col)} ORDER BY gio_id) "
            f"TO {sql_string(str(part))} (FORMAT PARQUET)"
        )
        _send(engine, users, ["gio_id", col], part)
    con.execute("INSERT INTO ev_map SELECT * FROM ev_new")
    return added


def user_events(
    engine: Any,
    project_id: str,
    identity: CatalogEntry,
    value: str,
    start_ms: int,
    end_ms: int,
    limit: int,
    offset: int,
    descending: bool,
) -> UserEvents:
    snap = snaps.read_current(engine.client(), engine.db, project_id)
    if snap is None:
        return UserEvents(0, [], False)
    col = f"u.{ch_ident(identity.key)}"
    test = f"has({col}, {{v:String}})" if identity.multi else f"{col} = {{v:String}}"
    client = engine.client()
    if identity.key == ev.DEVICE_COLUMN:  # a linked device is its user
        try:
            linked = client.query(
                f"SELECT gio_id FROM {links_table(engine, project_id)} WHERE device = {{v:String}} LIMIT 1",
                parameters={"v": value},
            ).result_rows
        except Exception:  # no event loaded since links began: no links
            linked = []
        if linked:
            return _user_events(engine, project_id, int(linked[0][0]), start_ms, end_ms, limit, offset, descending)
    try:
        found = client.query(
            f"SELECT u.gio_id FROM {engine.table(snap.users)} AS u WHERE {test} ORDER BY u.gio_id LIMIT 1",
            parameters={"v": value},
        ).result_rows
    except Exception:  # no such column yet: no such user
        found = []
    gio_id = int(found[0][0]) if found else 0
    return _user_events(engine, project_id, gio_id, start_ms, end_ms, limit, offset, descending)


def _user_events(
    engine: Any, project_id: str, gio_id: int, start_ms: int, end_ms: int, limit: int, offset: int, descending: bool
) -> UserEvents:
    client = engine.client()
    have = store_columns(engine, project_id)
    if not gio_id or not have:
        return UserEvents(gio_id, [], False)
    extra = [c for c in have if c not in ev.FIXED]
    shown = [f"toString({ch_ident(c)})" if have[c] == "DATE" else ch_ident(c) for c in extra]
    way = "DESC" if descending else "ASC"
    rows = client.query(
        f"SELECT toInt64(toUnixTimestamp64Milli(`$time`)), `$event`, `$type`{''.join(', ' + s for s in shown)} "
        f"FROM {events_table(engine, project_id)} WHERE gio_id = {{g:Int64}} AND `$time` >= "
        f"fromUnixTimestamp64Milli({{s:Int64}}, 'UTC') AND `$time` < fromUnixTimestamp64Milli({{e:Int64}}, 'UTC') "
        f"ORDER BY `$time` {way}, `$event` {way}, _part {way}, _part_offset {way} LIMIT {{n:UInt64}} OFFSET {{o:UInt64}}",
        parameters={"g": gio_id, "s": _clamp(start_ms), "e": _clamp(end_ms), "n": limit + 1, "o": offset},
    ).result_rows
    return UserEvents(gio_id, [shape(tuple(r), extra) for r in rows[:limit]], len(rows) > limit)


def _clamp(ms: int) -> int:
    return max(0, min(ms, MAX_MS))


def count_events(engine: Any, project_id: str, start_ms: int, end_ms: int) -> EventScan:
    if not store_columns(engine, project_id):
        return EventScan(0, 0)
    where = (
        f"FROM {events_table(engine, project_id)} WHERE `$time` >= fromUnixTimestamp64Milli({{s:Int64}}, 'UTC') "
        "AND `$time` < fromUnixTimestamp64Milli({e:Int64}, 'UTC')"
    )
    bounds = {"s": _clamp(start_ms), "e": _clamp(end_ms)}
    client = engine.client()
    count = client.query(f"SELECT count() {where}", parameters=bounds).result_rows[0][0]
    # the rows ClickHouse's plan reads after pruning partitions and primary-key granules
    plan = client.query(f"EXPLAIN ESTIMATE SELECT count() {where}", parameters=bounds, settings=_NO_SHORTCUT)
    return EventScan(int(count), sum(int(r[3]) for r in plan.result_rows))


_NO_SHORTCUT = {"optimize_trivial_count_query": 0, "force_primary_key": 1}
