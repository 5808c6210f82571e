"""Events in ClickHouse: ``events_<project>``, a MergeTree partitioned by month and ordered by time, so a scan
bounded by ``$time`` reads only the parts (and the granules within them) of that time.

A Parquet file of plain columns is checked, resolved and stored by ClickHouse itself (:func:`_import_parquet`).
Any other file is read, checked and staged exactly as the DuckDB engine does it (:mod:`segport.engine.duckdb.events`),
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from segport.domain.event_files import (
    ATTRIBUTE_KEY_RE,
    BATCH_COLUMN,
    DEFAULT_TYPE,
    DEVICE_ID,
    EVENT_COLUMN,
    EVENT_NAME_RE,
    GIO_ID_COLUMN,
    LOGIN_IDENTITY,
    MIN_TIME_MS,
    RESERVED_COLUMNS,
    STANDARD_RE,
    TIME_COLUMN,
    TYPE_COLUMN,
    USER_ID,
    USER_KEY,
    EventAttribute,
)
from segport.domain.formats import detect_format
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.engine.base import EventImportReport, EventScan, UserEvents
from segport.engine.clickhouse import snapshots as snaps
from segport.engine.clickhouse.importer import _GLOB, _REFUSED, _has_control, _scratch_duckdb
from segport.engine.clickhouse.sql import ch_ident, ch_string
from segport.engine.duckdb import events as ev
from segport.engine.duckdb.event_reads import MAX_MS, shape
from segport.engine.duckdb.import_columns import CONTROL_RE
from segport.engine.duckdb.messages import engine_words
from segport.engine.duckdb.sql import sql_string
from segport.errors import ImportRejected, SegportError

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


def store_state(engine: Any, project_id: str) -> tuple[dict[str, str], bool]:
    """The event table's columns (``{}``: no table) and whether the links table exists, before an import."""
    links = snaps.columns(engine.client(), engine.db_name, f"links_{project_id}")
    return store_columns(engine, project_id), bool(links)


def restore_store(engine: Any, project_id: str, before: tuple[dict[str, str], bool]) -> None:
    """Undo what :func:`_ensure_store` did for a refused file (refusals come before any row, user or link is
    stored): the event and links tables it created are dropped, the attribute columns it added to an existing
    event table are dropped again, so a refused file neither makes a store nor fixes an attribute's type."""
    client = engine.client()
    columns, had_links = before
    if not had_links:
        client.command(f"DROP TABLE IF EXISTS {links_table(engine, project_id)} SYNC")
    if not columns:
        client.command(f"DROP TABLE IF EXISTS {events_table(engine, project_id)} SYNC")
        return
    for name in store_columns(engine, project_id):
        if name not in columns:
            client.command(f"ALTER TABLE {events_table(engine, project_id)} DROP COLUMN IF EXISTS {ch_ident(name)}")


def _fetch(engine: Any, con: duckdb.DuckDBPyConnection, folder: Path, query: str, into: str) -> None:
    """Run ``query`` in ClickHouse and insert its rows into the scratch table ``into`` (through Parquet)."""
    data = engine.client().raw_query(query, fmt="Parquet")
    if not data:
        return
    part = folder / "fetched.parquet"
    part.write_bytes(data)
    con.execute(f"INSERT INTO {into} SELECT * FROM read_parquet({sql_string(str(part))})")


@contextmanager
def _probe(
    engine: Any,
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    query: str,
    name: str,
    columns: dict[str, str],
    order_by: str,
) -> Iterator[str]:
    """The rows of a DuckDB ``query`` as a ClickHouse table of ``columns`` (name: type) sorted by ``order_by``,
    for a join in ClickHouse against the file's side (its identities, its links); dropped after the block."""
    part = folder / f"{name}.parquet"
    con.execute(f"COPY ({query}) TO {sql_string(str(part))} (FORMAT PARQUET)")
    probe = engine.table(name)
    client = engine.client()
    client.command(f"DROP TABLE IF EXISTS {probe}")
    client.command(
        f"CREATE TABLE {probe} ({', '.join(f'{c} {t}' for c, t in columns.items())}) ENGINE = MergeTree "
        f"ORDER BY {order_by}"
    )
    try:
        _send(engine, probe, list(columns), part)
        yield probe
    finally:
        client.command(f"DROP TABLE IF EXISTS {probe}")


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
    fast = _import_parquet(engine, project_id, catalog, attributes, path, file_format, now_ms, started)
    if fast is not None:
        return fast
    snap = engine.current(project_id)
    client = engine.client()
    try:
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
            gios = [
                int(r[0]) for r in con.execute("SELECT DISTINCT _gio FROM ev_stage WHERE _gio IS NOT NULL").fetchall()
            ]
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
                    raise ImportRejected(
                        f"{staged.at(int(bad[0]))}: gio_id {bad[1]} is not a user of project {project_id}"
                    )
            ev.collect_identities(con, staged)
            con.execute("CREATE TABLE ev_map (_idcol VARCHAR, _idval VARCHAR, gio_id BIGINT)")
            added = 0
            if staged.identities:
                with _probe(
                    engine,
                    con,
                    folder,
                    "SELECT _idcol, _idval FROM ev_ids",
                    f"ei_{project_id}_{snap.seq}",
                    {"_idcol": "String", "_idval": "String"},
                    "_idval",
                ) as probe:
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
    except duckdb.Error as exc:  # (what stage's checks did not name: as the DuckDB engine words it)
        raise ImportRejected(f"the events of {path.name} could not be stored: {engine_words(exc)}") from exc
    return EventImportReport(
        staged.rows, stored, added, staged.new_attributes, events, skipped, time.perf_counter() - started
    )


# --- Parquet, checked and resolved in ClickHouse --------------------------------------------------------------
# A Parquet file of plain columns is read by ClickHouse itself (``file(path, Parquet, structure)``), as chDB's own
# load reads it, twice: the identity columns, grouped into the distinct identities (checked once each, resolved
# by joins against the users table, new users numbered in ClickHouse, the map made a hashed dictionary); then
# every row, its stored text and floats checked by ``throwIf`` and given its ``gio_id`` by the dictionary, into a
# staging table whose partitions are attached to the event table once every row is in and the rest is checked on
# fewer values (the times' min and max, the distinct event names; the identities were, in the first read). Anything
# else (CSV, JSON Lines, the loader's files with ``$batch``, files with ``gio_id`` or with both ``userId`` and
# ``deviceId``, columns of other types) and any file a check refuses takes the DuckDB path above, which names the
# first bad row; nothing is stored before (docs/events.md, "The store").

_FAST_INT = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
_FAST_FLOAT = {"FLOAT", "DOUBLE"}
_FAST_CH = (
    {"VARCHAR": "String", "DATE": "Date32"} | dict.fromkeys(_FAST_INT, "Int64") | dict.fromkeys(_FAST_FLOAT, "Float64")
)
_CONTROL = ch_string(CONTROL_RE)
_READ = {"input_format_null_as_default": 1}  # a null read into a plain column is its default ('', 0)
# an identity's 64-bit key in the map (each row's and each distinct identity's; the identities are checked to
# share no key)
_KEY = "cityHash64(_idx, _idval)"
# the identity pass's grouping held in memory (see _load_parquet)
_IDENTITIES = {**_READ, "max_bytes_before_external_group_by": 0}


@dataclass(slots=True)
class _Plan:
    """How a Parquet file's rows become the event table's: the file as ClickHouse reads it, the SELECT of its
    rows (``_idx``, ``_idval``, ``_key``, ``_bad`` and the stored columns), the stored columns and their types."""

    select: str
    columns: dict[str, str]  # standard fields and attributes: name -> DuckDB type
    attrs: list[str]
    new_attributes: list[EventAttribute]
    value_checks: str  # SQL over the distinct identities: true for one the file is refused for
    keys: list[str]  # the catalogue's identity keys: _idx is a place in this list
    keyed: bool  # the file has a userKey column: an identity is (_idx, _idval), else _idval decides _idx
    checked: bool  # some rows are checked one by one (_bad): text and floating-point values
    times: tuple[int, int]  # the times (ms) a file may hold: a staged row outside them refuses the file
    rows: int  # the file's rows, as its footer counts them


def _parquet_plan(
    engine: Any,
    catalog: Catalog,
    declared: dict[str, ValueType],
    path: Path,
    file_format: str,
    now_ms: int,
) -> _Plan | None:
    """The plan for a Parquet file ClickHouse can check and store itself, or None (the DuckDB path)."""
    if not engine.local_files or _GLOB.search(str(path)) or not path.is_file() or path.stat().st_size == 0:
        return None  # (file() takes *, ? and {} in a path as globs)
    try:
        if detect_format(path, file_format or None) != "parquet":
            return None
        with duckdb.connect() as con:  # the footer only: names, types and the number of rows
            described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_string(str(path))})").fetchall()
            (count,) = con.execute(
                f"SELECT sum(num_rows) FROM parquet_file_metadata({sql_string(str(path))})"
            ).fetchone() or (0,)
    except (duckdb.Error, SegportError):
        return None
    cols = {str(r[0]): str(r[1]) for r in described}
    if any(c.startswith("_") for c in cols):  # the names of the plan's own columns
        return None
    if len(cols) != len(described) or EVENT_COLUMN not in cols or cols.get(TIME_COLUMN) not in _FAST_INT:
        return None
    if GIO_ID_COLUMN in cols or BATCH_COLUMN in cols or (USER_ID in cols) == (DEVICE_ID in cols):
        return None  # gio_id, the loader's batches, identity links, or no identity: the DuckDB path
    if any(cols.get(c, "VARCHAR") != "VARCHAR" for c in (EVENT_COLUMN, USER_ID, USER_KEY, DEVICE_ID, TYPE_COLUMN)):
        return None
    select = {}
    columns: dict[str, str] = {}
    new: list[EventAttribute] = []
    checks: list[str] = []
    for name, dtype in cols.items():
        if name in RESERVED_COLUMNS or name == TYPE_COLUMN:
            continue
        raw = ch_ident(name)
        if name.startswith("$"):
            if not STANDARD_RE.match(name) or name in ev.FIXED or dtype != "VARCHAR":
                return None
            select[name], columns[name] = raw, "VARCHAR"
            # per row, the user import's byte test (importer._has_control: the control characters mapped to one
            # byte by ``translate``, that byte searched for; 10M rows of one text column: ~2.5 CPU s less than a
            # multi-substring search of the 29 bytes)
            checks.append(_has_control(f"ifNull({raw}, '')"))
            continue
        if not ATTRIBUTE_KEY_RE.match(name):
            return None
        vtype = declared.get(name)
        if vtype is None:
            vtype = (
                ValueType.INT
                if dtype in _FAST_INT
                else ValueType.DOUBLE
                if dtype in _FAST_FLOAT
                else ValueType.DATE
                if dtype == "DATE"
                else ValueType.STRING
            )
            new.append(EventAttribute(name, name, vtype))
        if vtype is ValueType.STRING and dtype == "VARCHAR":
            checks.append(_has_control(f"ifNull({raw}, '')"))
        elif vtype is ValueType.DOUBLE and dtype in _FAST_FLOAT:
            checks.append(f"NOT isFinite(ifNull({raw}, 0))")
        elif not (
            (vtype is ValueType.INT and dtype in _FAST_INT)
            or (vtype is ValueType.DOUBLE and dtype in _FAST_INT)
            or (vtype is ValueType.DATE and dtype == "DATE")
        ):
            return None
        select[name], columns[name] = raw, vtype.sql
    # the name, time, identity and type columns are read as plain (not Nullable) columns, a null as '' or 0
    # (input_format_null_as_default): each treats the two alike (an empty text is a missing one, a time of 0 is
    # refused as a null one is), and a plain column costs a row less than a Nullable one in every expression
    plain = {EVENT_COLUMN, TIME_COLUMN, USER_ID, USER_KEY, DEVICE_ID, TYPE_COLUMN}
    structure = ", ".join(
        f"{ch_ident(n)} {_FAST_CH[t] if n in plain else f'Nullable({_FAST_CH[t]})'}"
        for n, t in cols.items()
        if t in _FAST_CH
    )

    def text(name: str) -> str:
        return f"nullIf(trimBoth({ch_ident(name)}), '')" if name in cols else "CAST(NULL AS Nullable(String))"

    event, user_id, user_key, device_id = text(EVENT_COLUMN), text(USER_ID), text(USER_KEY), text(DEVICE_ID)
    time_ms = f"toInt64({ch_ident(TIME_COLUMN)})"
    keys = [e.key for e in catalog.of_kind(KeyKind.IDENTITY)]  # an identity is its place in this list (1-based)
    if not keys:
        return None
    known = "[" + ", ".join(ch_string(k) for k in keys) + "]"

    def place(key: str) -> int:
        return keys.index(key) + 1 if key in keys else 0  # 0: not in the catalogue (refused)

    if USER_ID in cols:
        login = place("id_" + LOGIN_IDENTITY)
        named = f"indexOf({known}, concat('id_', ifNull({user_key}, {ch_string(LOGIN_IDENTITY)})))"
        idx, idval = f"if(isNull({user_id}), 0, {named if USER_KEY in cols else login})", user_id
    else:
        idx, idval = f"if(isNull({device_id}), 0, {place(ev.DEVICE_COLUMN)})", device_id
    # the checks of the DuckDB path made on every row (a file any of them refuses goes there to be named) are only
    # those of the stored text and numbers: the others are made on fewer values, as cheaply and as exactly
    # (docs/performance.md, "a fourth pass"): the time's bounds on the staged rows' min and max (_load_parquet);
    # the identity (none, one not in the catalogue, a userKey without a userId: each a place of 0; control
    # characters, invalid UTF-8) on the distinct identities; the event name by its grammar (ASCII, so valid
    # UTF-8 too) on the distinct names; and the key and value columns' bytes are the trimmed ones' bytes (trimming
    # takes off spaces only)
    checks = [
        *checks,
        # text DuckDB could not read (it refuses a file with invalid UTF-8)
        *(
            f"NOT isValidUTF8(ifNull({ch_ident(n)}, ''))"
            for n, t in cols.items()
            if t == "VARCHAR" and n not in (EVENT_COLUMN, USER_ID, USER_KEY, DEVICE_ID)
        ),
    ]
    kind = (
        f"ifNull(nullIf(trimBoth({ch_ident(TYPE_COLUMN)}), ''), {ch_string(DEFAULT_TYPE)})"
        if TYPE_COLUMN in cols
        else ch_string(DEFAULT_TYPE)
    )
    body = ", ".join(f"{expr} AS {ch_ident(name)}" for name, expr in select.items())
    bad = f"ifNull({' OR '.join(f'({c})' for c in checks)}, 1)" if checks else "0"
    rows = (
        f"SELECT _row_number AS _row, {event} AS _ev, toUInt8({idx}) AS _idx, ifNull({idval}, '') AS _idval, "
        # an identity's key in the map (the distinct identities are checked to share no key)
        f"{_KEY} AS _key, "
        f"{time_ms} AS _t, {kind} AS _type{', ' + body if body else ''}, "
        f"{bad} AS _bad FROM "
        f"file({ch_string(str(path))}, 'Parquet', {ch_string(structure)})"
    )
    attrs = [c for c in columns if not c.startswith("$")]
    value_checks = f"_idx = 0 OR match(_idval, {_CONTROL}) OR NOT isValidUTF8(_idval)"
    times = (MIN_TIME_MS, now_ms + ev.FUTURE_SKEW_MS)
    return _Plan(rows, columns, attrs, new, value_checks, keys, USER_KEY in cols, bool(checks), times, int(count or 0))


def _import_parquet(
    engine: Any,
    project_id: str,
    catalog: Catalog,
    attributes: list[EventAttribute],
    path: Path,
    file_format: str,
    now_ms: int,
    started: float,
) -> EventImportReport | None:
    """Import a Parquet file in ClickHouse alone (see above); None when the file takes the DuckDB path (nothing
    is stored then)."""
    declared = ev.declared_types(attributes, store_columns(engine, project_id))
    plan = _parquet_plan(engine, catalog, declared, path, file_format, now_ms)
    if plan is None:
        return None
    client = engine.client()
    snap = engine.current(project_id)
    temp = f"ef_{project_id}_{snap.seq}"
    ids, mapped, new, dic, stage = (engine.table(f"{temp}_{t}") for t in ("ids", "map", "new", "dic", "stage"))
    try:
        return _load_parquet(engine, catalog, plan, snap, project_id, (ids, mapped, new, dic, stage), started)
    finally:
        client.command(f"DROP DICTIONARY IF EXISTS {dic}")
        for t in (ids, mapped, new, stage):
            client.command(f"DROP TABLE IF EXISTS {t} SYNC")  # (a refused file's staged parts go at once)


def _load_parquet(
    engine: Any,
    catalog: Catalog,
    plan: _Plan,
    snap: snaps.Snapshot,
    project_id: str,
    temp: tuple[str, str, str, str, str],
    started: float,
) -> EventImportReport | None:
    client = engine.client()
    ids, mapped, new, dic, stage = temp
    try:
        client.command(f"DROP DICTIONARY IF EXISTS {dic}")
        for t in (ids, mapped, new, stage):
            client.command(f"DROP TABLE IF EXISTS {t}")
        # the distinct identities, with the first row naming each: read from the identity columns alone, grouped
        # on the identity itself (only the value when the file has no userKey column: the value then decides its
        # place), with one cheap state (the first row), and checked once each (in the catalogue, no control
        # character, valid UTF-8). Their 64-bit keys (the map's and the dictionary's) are made from the groups; two
        # identities sharing one are seen once the dictionary is loaded (below). No spill
        # to disk: at 10M identities the spilled aggregation cost five times the one in memory (docs/performance.md,
        # "the identity pass"); past the engine's memory limit the query fails and the DuckDB path takes the file
        client.command(f"CREATE TABLE {ids} (_key UInt64, _idx UInt8, _idval String, _first UInt64) ENGINE = Memory")
        group = "_idx, _idval" if plan.keyed else "_idval"
        place = "_idx" if plan.keyed else "any(_idx) AS _idx"
        client.command(
            f"INSERT INTO {ids} SELECT {_KEY}, _idx, _idval, _first FROM (SELECT {place}, _idval, "
            f"min(_row) AS _first FROM ({plan.select}) GROUP BY {group})",
            settings=_IDENTITIES,
        )
        bad, distinct = client.query(f"SELECT countIf({plan.value_checks}), count() FROM {ids}").result_rows[0]
        if bad:
            return None
        _ensure_store(engine, project_id, {})  # (the links; the attribute columns only once the file is accepted)
        places = sorted(int(r[0]) for r in client.query(f"SELECT DISTINCT _idx FROM {ids}").result_rows)
        identities = {plan.keys[n - 1]: n for n in places}
        users = engine.table(snap.users)
        links = links_table(engine, project_id)
        client.command(f"CREATE TABLE {mapped} (_key UInt64, gio_id Int64) ENGINE = Memory")
        for col, n in identities.items():
            entry = catalog.get(col)
            assert entry is not None  # checked against the catalogue
            value = f"arrayJoin({ch_ident(col)})" if entry.multi else ch_ident(col)
            unlinked = ""
            if col == ev.DEVICE_COLUMN:  # a device linked to a user is that user
                client.command(
                    f"INSERT INTO {mapped} SELECT i._key, l.gio_id FROM {ids} AS i INNER JOIN {links} AS l "
                    f"ON l.device = i._idval WHERE i._idx = {n}"
                )
                unlinked = f" AND i._idval NOT IN (SELECT device FROM {links})"
            client.command(
                f"INSERT INTO {mapped} SELECT i._key, toInt64(min(u.gio_id)) FROM {ids} AS i INNER JOIN "
                f"(SELECT gio_id, {value} AS v FROM {users}) AS u ON u.v = i._idval WHERE "
                f"i._idx = {n}{unlinked} GROUP BY i._key"
            )
        # identities no user holds: new users, numbered in the order of the rows that first name them (the numbers
        # are reserved below, once every row is checked)
        client.command(
            f"CREATE TABLE {new} ENGINE = Memory AS SELECT _idx, _idval, _key, toInt64({snap.next_gio_id - 1} + "
            f"row_number() OVER (ORDER BY _first)) AS gio_id FROM {ids} WHERE _key NOT IN (SELECT _key FROM {mapped})"
        )
        added = int(client.query(f"SELECT count() FROM {new}").result_rows[0][0])
        client.command(f"INSERT INTO {mapped} SELECT _key, gio_id FROM {new}")
        db, name = engine.db_name, mapped.rsplit(".", 1)[1].strip("`")
        client.command(
            f"CREATE DICTIONARY {dic} (_key UInt64, gio_id Int64) PRIMARY KEY _key SOURCE(CLICKHOUSE(DB "
            f"{ch_string(db)} TABLE {ch_string(name)})) LIFETIME(0) LAYOUT(HASHED())"
        )
        # every row, its text and floating-point values checked as it goes (throwIf: the first bad one stops the
        # insert), into a staging table of the event table's layout, whose parts are attached to the event table
        # once all of them are written. The file's rows have no batch: the staging table has no `$batch` column
        # while they are written, and gets it back (metadata alone) before the parts are attached, so they hold no
        # column of nulls and read it as null, its default, as a part written before a column was added does (20M
        # rows: ~0.7 CPU s of the insert's ~11, not writing, sorting and compressing that column)
        table = events_table(engine, project_id)
        client.command(f"CREATE TABLE {stage} AS {table}")
        client.command(f"ALTER TABLE {stage} DROP COLUMN {ch_ident(BATCH_COLUMN)}")
        have = store_columns(engine, project_id)
        for col, sql in plan.columns.items():
            if col not in have:
                client.command(f"ALTER TABLE {stage} ADD COLUMN {ch_ident(col)} Nullable({_CH[sql]})")
        if _parts_a_month(engine, project_id) + -(-plan.rows // _INSERT_BLOCK_ROWS) <= HELD_PARTS_MAX:
            _hold_merges(client, stage)
        names = ["gio_id", "$time", "$event", "$type", *plan.columns]
        values = [
            f"dictGet({ch_string(dic.replace('`', ''))}, 'gio_id', _key)"
            + (f" + throwIf(_bad, {ch_string(_REFUSED)})" if plan.checked else ""),
            "fromUnixTimestamp64Milli(assumeNotNull(_t), 'UTC')",
            "assumeNotNull(_ev)",
            "_type",
            *(ch_ident(c) for c in plan.columns),
        ]
        client.command(
            f"INSERT INTO {stage} ({', '.join(ch_ident(n) for n in names)}) SELECT {', '.join(values)} FROM ({plan.select})",
            settings=_READ,
        )
        # every identity a key of its own: the map holds a row for each identity (a known one's user, or a new
        # user), one row per key where identities known to the users table share it (grouped by key) or a new one
        # shares a known one's (not numbered), two where two new ones share it; the dictionary (loaded by the
        # insert) holds each key once. So it holds as many keys as the file has identities exactly when no two
        # share one; else the DuckDB path stores the file (an exact check without a uniqExact of the keys: 0.5 s
        # at 10M identities)
        (held,) = client.query(
            "SELECT element_count FROM system.dictionaries WHERE database = {d:String} AND name = {n:String}",
            parameters={"d": engine.db_name, "n": dic.rsplit(".", 1)[1].strip("`")},
        ).result_rows[0]
        if int(held) != int(distinct):
            return None
        # the staged times within bounds: their min and max (read from the parts' min/max index of the partition
        # key, not the rows), as the milliseconds of the file
        low, high = client.query(
            f"SELECT toUnixTimestamp64Milli(min(`$time`)), toUnixTimestamp64Milli(max(`$time`)) FROM {stage}"
        ).result_rows[0]
        if int(low) < plan.times[0] or int(high) > plan.times[1]:
            return None
        # the event names (checked once each) and the attribute keys their rows carry, from the staged rows
        counts = "".join(f", count({ch_ident(a)})" for a in plan.attrs)
        grouped = client.query(
            f"SELECT `$event`, count(), NOT match(`$event`, {ch_string(EVENT_NAME_RE.pattern)}){counts} FROM {stage} "
            "GROUP BY `$event` ORDER BY `$event`"
        ).result_rows
        rows = sum(int(g[1]) for g in grouped)
        if not rows or any(g[2] for g in grouped):
            return None
    except Exception:  # a row a check refuses (throwIf), or a file ClickHouse cannot read: the DuckDB path says why
        return None  # (nothing is stored: the staged rows and the new users' numbers are dropped)
    if added:  # the new users' numbers reserved by a published snapshot, then the users appended
        engine.publish(snap.next(data_version=snap.data_version + 1, next_gio_id=snap.next_gio_id + added))
        for col, n in identities.items():
            entry = catalog.get(col)
            assert entry is not None
            value = "[_idval]" if entry.multi else "_idval"
            client.command(
                f"INSERT INTO {users} (gio_id, {ch_ident(col)}) SELECT gio_id, {value} FROM {new} "
                f"WHERE _idx = {n}"  # (in gio_id order already: the table's sort finds each block sorted)
            )
    _ensure_store(engine, project_id, plan.columns)
    client.command(
        f"ALTER TABLE {stage} ADD COLUMN {ch_ident(BATCH_COLUMN)} Nullable(Int64) AFTER {ch_ident(TYPE_COLUMN)}"
    )
    parts = client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = {d:String} AND table = {t:String} AND active",
        parameters={"d": engine.db_name, "t": stage.rsplit(".", 1)[1].strip("`")},
    ).result_rows
    for (part,) in parts:
        client.command(f"ALTER TABLE {table} ATTACH PARTITION ID {ch_string(str(part))} FROM {stage}")
    events = {str(g[0]): [a for a, n in zip(plan.attrs, g[3:], strict=True) if n] for g in grouped}
    return EventImportReport(rows, rows, added, plan.new_attributes, events, [], time.perf_counter() - started)


# the staging table's merges are held only while the event table's fullest month would hold at most this many
# parts once the staged ones are attached: each insert block (~1M rows, ClickHouse's min_insert_block_size_rows)
# makes a part in every month it holds, and ClickHouse delays inserts into a partition of more than 1,000 parts
# (parts_to_delay_insert) and refuses them past 3,000. 300 (a file of up to ~300M rows into a store whose months
# are merged) leaves the loader's inserts room until the attached parts merge; past it the staging table merges
# as it fills, as it did before
HELD_PARTS_MAX = 300
_INSERT_BLOCK_ROWS = 1_048_449


def _parts_a_month(engine: Any, project_id: str) -> int:
    """The active parts of the event table's fullest partition (a month)."""
    (most,) = (
        engine.client()
        .query(
            "SELECT max(n) FROM (SELECT count() AS n FROM system.parts WHERE database = {d:String} "
            "AND table = {t:String} AND active GROUP BY partition_id)",
            parameters={"d": engine.db_name, "t": f"events_{project_id}"},
        )
        .result_rows[0]
    )
    return int(most or 0)


def _hold_merges(client: Any, stage: str) -> None:
    """No background merges in the staging table while the rows go in: its parts are merged once, in the event
    table, after they are attached. A merge pool running beside the insert merges the same rows again and again
    as parts pile up: at 100M events that took half the insert's CPU, and more in all than merging the attached
    parts afterwards (docs/performance.md, "Merges held off in the staging table"). A server that refuses
    ``SYSTEM STOP MERGES`` (a user without that grant) only loses the gain."""
    try:
        client.command(f"SYSTEM STOP MERGES {stage}")
    except Exception:  # a user without the grant (ACCESS_DENIED): the staging table merges as it fills
        return


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
        dev = ch_ident(ev.DEVICE_COLUMN)
        single = [e.key for e in catalog.of_kind(KeyKind.IDENTITY) if not e.multi]
        anonymous = " AND ".join(f"ifNull(toString({ch_ident(k)}), '') = ''" for k in single) or "1"
        with _probe(
            engine,
            con,
            folder,
            "SELECT device, gio_id, _first FROM ev_links",
            f"el_{snap.project}_{snap.seq}",
            {"device": "String", "gio_id": "Int64", "_first": "Int64"},
            "device",
        ) as probe:
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
    gio_id = resolve_gio_id(engine, snap.users, project_id, identity, value)
    return _user_events(engine, project_id, gio_id, start_ms, end_ms, limit, offset, descending)


def resolve_gio_id(engine: Any, users: str, project_id: str, identity: CatalogEntry, value: str) -> int:
    """The user an identity value names, as events resolve it (0: nobody): a device id an event linked to a login
    user is that user (docs/events.md, "Identity links"); otherwise the lowest ``gio_id`` of the users table
    ``users`` holding the value. E18 and the single-user lookup (E10/E11) both resolve by it."""
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
            return int(linked[0][0])
    try:
        found = client.query(
            f"SELECT u.gio_id FROM {engine.table(users)} AS u WHERE {test} ORDER BY u.gio_id LIMIT 1",
            parameters={"v": value},
        ).result_rows
    except Exception:  # no such column yet: no such user
        found = []
    return int(found[0][0]) if found else 0


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
