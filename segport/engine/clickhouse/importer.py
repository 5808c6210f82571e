"""Imports into ClickHouse: the file is read and checked exactly as the DuckDB engine does, then merged in
ClickHouse into a new users table (published by the caller with the snapshot that names it).

The file is on the worker's disk, not the ClickHouse server's, so it is read here: by the DuckDB import itself
(:mod:`segport.engine.duckdb.importer`), run against a scratch DuckDB file holding an empty users table. That
gives the same formats, the same checks and the same one-line errors naming row, key and value, and resolves
repeated identities within the file the same way (the later row wins; a user's rank is its first row). Its
result goes to ClickHouse as one Parquet file (columnar; ClickHouse parses it), and the merge runs there:

* known users (matched on the ``match`` identity) keep their ``gio_id``; the file's columns overwrite theirs
  (a null clears), multi-valued identities accumulate; the columns the file lacks keep their values; a
  multi-valued ``match`` is matched by containment, as the DuckDB import does (:func:`_contained`);
* new users get ``next_gio_id`` onwards in file order;
* everyone else is copied as is.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from segport.domain.formats import detect_format
from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, KeyKind, ValueType, canonical_key, quote_ident
from segport.engine.base import ImportReport
from segport.engine.clickhouse.snapshots import Snapshot
from segport.engine.clickhouse.sql import ClickHouseHandle, ch_ident, ch_string, column_type
from segport.engine.duckdb import importer as duckdb_import
from segport.engine.duckdb.events import DEVICE_COLUMN
from segport.engine.duckdb.import_columns import CONTROL_RE
from segport.engine.duckdb.sql import sql_string
from segport.errors import ImportRejected, exhaustion_of

_INSERT_SETTINGS = {"input_format_null_as_default": 1}
_REFUSED = "segport: a row the import refuses"  # raised inside the one-pass load: the DuckDB import says why
_GLOB = re.compile(r"[*?{}]")
# the one-pass load reads the file's row groups in file order: its rows then reach the table's writer as one block
# already in gio_id order, which MergeTree stores as it is (in arrival order it would sort and permute every
# column of the block: a fifth of the load's CPU)
_DIRECT_SETTINGS = {**_INSERT_SETTINGS, "input_format_parquet_preserve_order": 1}
# The DuckDB import's control characters (CONTROL_RE: a class of code points below 0x80), as bytes. In valid
# UTF-8 (checked beside it) such a code point is that byte and no byte of a longer character is below 0x80, so a
# byte test is the same test. Each is mapped to 0x01 (one of them) by ``translate`` and the result searched for
# that one byte: a plain byte loop and one search of the whole column, a third of the cost of the regex per row.
_CONTROL_BYTES = [c for c in range(0x80) if re.fullmatch(CONTROL_RE, chr(c))]
_CONTROL_FROM = "'" + "".join(f"\\x{c:02x}" for c in _CONTROL_BYTES) + "'"
_CONTROL_TO = "'" + "\\x01" * len(_CONTROL_BYTES) + "'"


def _has_control(text: str) -> str:
    """ClickHouse: true where the String ``text`` holds a control character the DuckDB import refuses."""
    return f"position(translate({text}, {_CONTROL_FROM}, {_CONTROL_TO}), '\\x01') > 0"


@contextlib.contextmanager
def _scratch_duckdb(engine: ClickHouseHandle):  # type: ignore[no-untyped-def]
    engine.scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ch-import-", dir=engine.scratch))
    con = duckdb.connect(str(folder / "stage.duckdb"), config={"memory_limit": engine.import_memory_limit})
    try:
        yield con, folder
    finally:
        con.close()
        shutil.rmtree(folder, ignore_errors=True)


def import_users(
    engine: ClickHouseHandle,
    snap: Snapshot,
    seq: int,
    catalog: Catalog,
    path: Path,
    file_format: str | None,
    match: str,
    progress: Any,
    built: list[str],
) -> tuple[ImportReport, str, int]:
    """Build the users table of snapshot ``seq``; returns (report, its name, users inserted). Tables made are
    appended to ``built`` (the caller drops them if anything fails)."""
    project = snap.project
    say = progress or (lambda _msg: None)
    client = engine.client()
    # a project without users yet (its first load) takes the checked rows as they are: numbered from
    # next_gio_id in file order by the check itself, as the merge would number them, with nothing to merge
    first = int(client.query(f"SELECT count() FROM {engine.table(snap.users)}").result_rows[0][0]) == 0
    table = f"u_{project}_{seq}" if first else f"s_{project}_{seq}"
    match_key = canonical_key(match)
    plan = _direct_plan(engine, catalog, path, file_format, match_key)
    loaded = _load_direct(engine, snap, table, plan, first, built, say) if plan is not None else None
    if loaded is not None:
        keys, distinct = plan.keys, loaded  # type: ignore[union-attr]
        report = ImportReport(distinct, 0, 0)
    else:
        report, keys, distinct = _load_checked_in_duckdb(
            engine, snap, table, catalog, path, file_format, match, progress, first, built, say
        )
    if first:
        report.updated, report.inserted = 0, distinct
        return report, table, distinct
    entries = [catalog.entries[k] for k in keys]
    if catalog.entries[match_key].multi:  # matched by containment: one row per user left in the stage
        distinct -= _drop_superseded(engine, snap, engine.table(table), match_key)
    users, updated = _merge(engine, snap, seq, entries, match_key, distinct, built, say)
    engine.client().command(f"DROP TABLE IF EXISTS {engine.table(table)}")
    built.remove(table)
    report.updated, report.inserted = updated, distinct - updated
    return report, users, report.inserted


def _load_checked_in_duckdb(
    engine: ClickHouseHandle,
    snap: Snapshot,
    table: str,
    catalog: Catalog,
    path: Path,
    file_format: str | None,
    match: str,
    progress: Any,
    first: bool,
    built: list[str],
    say: Any,
) -> tuple[ImportReport, list[str], int]:
    """Read and check the file with the DuckDB import, then load its rows into ``table`` (made here: the new
    users table on a first load, else the stage the merge reads): (report, keys the file has, distinct users)."""
    project = snap.project
    with _scratch_duckdb(engine) as (con, folder):
        con.execute(f"CREATE TABLE users_{project} (gio_id BIGINT NOT NULL)")
        for entry in catalog.entries.values():
            con.execute(f"ALTER TABLE users_{project} ADD COLUMN {quote_ident(entry.key)} {entry.sql_type}")
        con.execute("CREATE TABLE segport_state (project VARCHAR, next_gio_id BIGINT, data_version BIGINT)")
        con.execute("INSERT INTO segport_state VALUES (?, ?, 0)", [project, snap.next_gio_id if first else 1])
        if not path.is_file():
            raise ImportRejected(f"no such file: {path}")
        keys: list[str] = []
        con.execute("BEGIN TRANSACTION")
        report = duckdb_import.import_users(con, project, catalog, path, file_format, match, progress, keys)
        con.execute("COMMIT")
        staged = folder / "rows.parquet"
        cols = ", ".join(quote_ident(k) for k in keys)
        # in table order, unsorted: ClickHouse sorts each block by gio_id as it stores it, and the merge numbers
        # new users by their gio_id here, not by their place in the file
        con.execute(f"COPY (SELECT gio_id, {cols} FROM users_{project}) TO {sql_string(str(staged))} (FORMAT PARQUET)")
        distinct = int(con.execute(f"SELECT count(*) FROM users_{project}").fetchone()[0])  # type: ignore[index]
        con.close()  # its memory is free before ClickHouse reads the file
        say("loading into ClickHouse")
        built.append(table)
        _create(engine, snap, table, [catalog.entries[k] for k in keys], first)
        _load_parquet(engine, table, [GIO_ID, *keys], staged)
    return report, keys, distinct


def _create(engine: ClickHouseHandle, snap: Snapshot, table: str, entries: list[CatalogEntry], first: bool) -> None:
    if first:  # the new users table: every column of the current one
        engine.client().command(f"CREATE TABLE {engine.table(table)} AS {engine.table(snap.users)}")
        return
    defs = ", ".join(f"{quote_ident(e.key)} {column_type(e)}" for e in entries)
    engine.client().command(
        f"CREATE TABLE {engine.table(table)} (gio_id Int64, {defs}) ENGINE = MergeTree ORDER BY gio_id"
    )


@dataclass(frozen=True, slots=True)
class _DirectPlan:
    """A Parquet file ClickHouse can load and check by itself in one pass: its columns, as the keys they fill
    (in file order), the checked value of each, and the condition of a row the DuckDB import would refuse."""

    path: Path
    entries: list[CatalogEntry]
    values: list[str]
    bad: str
    match_key: str

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.entries]


# (catalogue type, multi-valued) -> the DuckDB types of a Parquet column that need no conversion (every int
# that fits in 64 bits is cast as it is, as the DuckDB import casts it)
_DIRECT_TYPES = {
    (ValueType.STRING, False): {"VARCHAR"},
    (ValueType.INT, False): {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"},
    (ValueType.DOUBLE, False): {"DOUBLE"},
    (ValueType.DATE, False): {"DATE"},
    (ValueType.STRING, True): {"VARCHAR[]"},
}


def _direct_plan(
    engine: ClickHouseHandle, catalog: Catalog, path: Path, file_format: str | None, match_key: str
) -> _DirectPlan | None:
    """The one-pass plan for ``path``, or ``None`` when the DuckDB import has to read it: anything but a
    Parquet file (read by ClickHouse in this process) whose every column is a catalogue key of exactly its
    type (text, an int of at most 64 bits, a double, a date, a list of text for a multi-valued text key), with the match
    key single-valued text. Those are the columns the DuckDB import takes as they are, checking only what the
    condition below checks: text free of control characters (and valid UTF-8), an identity to match on in
    every row, finite doubles, no null inside a list; an empty list (or ``['']``) is no value."""
    if not engine.local_files or _GLOB.search(str(path)) or not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        if detect_format(path, file_format) != "parquet":
            return None
        with duckdb.connect() as con:
            described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_string(str(path))})").fetchall()
    except Exception:  # the DuckDB import names what is wrong with the file
        return None
    entries: list[CatalogEntry] = []
    values: list[str] = []
    bad: list[str] = []
    texts: list[str] = []
    match = ""
    for name, dtype, *_ in described:
        name, dtype = str(name), str(dtype)
        entry = catalog.get(canonical_key(name.strip()))
        if entry is None or entry in entries or dtype not in _DIRECT_TYPES.get((entry.type, entry.multi), ()):
            return None
        if entry.key in catalog.computed:  # refused: the DuckDB import says why
            return None
        raw = ch_ident(name)
        if entry.multi:  # Array(Nullable(String)) as read: a null item is refused, [] and [''] are no value
            values.append(f"if(length({raw}) = 0 OR {raw} = [''], [], arrayMap(x -> assumeNotNull(x), {raw}))")
            bad.append(f"arrayExists(x -> isNull(x) OR NOT isValidUTF8(assumeNotNull(x)), {raw})")
            texts.append(f"arrayStringConcat(arrayMap(x -> ifNull(x, ''), {raw}))")
        elif entry.type is ValueType.STRING:
            values.append(f"CAST({raw} AS Nullable(String))")
            # a null's place in a Nullable(String) holds '': assumeNotNull reads the strings without a copy
            bad.append(f"NOT isValidUTF8(assumeNotNull({raw}))")
            texts.append(f"assumeNotNull({raw})")
            if entry.key == match_key:
                match = raw
        elif entry.type is ValueType.DOUBLE:
            values.append(f"CAST({raw} AS Nullable(Float64))")
            bad.append(f"({raw} IS NOT NULL AND NOT isFinite(assumeNotNull({raw})))")
        else:
            values.append(f"CAST({raw} AS {column_type(entry)})")
        entries.append(entry)
    if not match:  # no column to match on (or a multi-valued one): the DuckDB import says so
        return None
    bad.append(f"ifNull({match}, '') = ''")
    # column by column: joining the texts first costs as much as the test
    bad += [_has_control(t) for t in texts]
    return _DirectPlan(path, entries, values, " OR ".join(f"({b})" for b in bad), match_key)


def _load_direct(
    engine: ClickHouseHandle,
    snap: Snapshot,
    table: str,
    plan: _DirectPlan,
    first: bool,
    built: list[str],
    say: Any,
) -> int | None:
    """Load ``plan``'s file into ``table`` in one pass of ClickHouse, numbered in file order (from
    ``next_gio_id`` on a first load, from 1 for the merge otherwise): the number of users, or ``None`` (and
    nothing left behind) when a row is one the DuckDB import would refuse or an identity repeats, for the
    DuckDB import to read the file again and say which, or to resolve the repeats."""
    client = engine.client()
    say("loading and checking")
    base = snap.next_gio_id if first else 1
    built.append(table)
    _create(engine, snap, table, plan.entries, first)
    cols = ", ".join(quote_ident(k) for k in [GIO_ID, *plan.keys])
    try:
        client.command(
            f"INSERT INTO {engine.table(table)} ({cols}) SELECT {base} + _row_number + throwIf({plan.bad}, "
            f"'{_REFUSED}'), {', '.join(plan.values)} FROM file({ch_string(str(plan.path))}, 'Parquet')",
            settings=_DIRECT_SETTINGS,
        )
        # distinct identities counted by their 64-bit hashes (a third of the cost of the strings): a collision
        # can only make a repeat appear, which hands the file to the DuckDB import, never hide one
        row = client.query(
            f"SELECT count(), uniqExact(cityHash64({quote_ident(plan.match_key)})) FROM {engine.table(table)}"
        ).result_rows[0]
    except Exception as exc:
        if _REFUSED not in str(exc) and exhaustion_of(exc) is not None:
            raise
        row = None
    if row is None or int(row[0]) == 0 or int(row[0]) != int(row[1]):
        client.command(f"DROP TABLE IF EXISTS {engine.table(table)}")
        built.remove(table)
        return None
    return int(row[0])


def _load_parquet(engine: ClickHouseHandle, table: str, columns: list[str], path: Path) -> None:
    """Insert a Parquet file of ``columns`` into ``table``: read by ClickHouse itself where it runs in this
    process (``file()``, which takes ``*``, ``?`` and ``{}`` in a path as globs: such a path is sent instead),
    sent through the driver to a server."""
    client = engine.client()
    cols = ", ".join(quote_ident(c) for c in columns)
    if engine.local_files and not _GLOB.search(str(path)):
        client.command(
            f"INSERT INTO {engine.table(table)} ({cols}) SELECT * FROM file({ch_string(str(path))}, 'Parquet')",
            settings=_INSERT_SETTINGS,
        )
        return
    with open(path, "rb") as f:
        client.raw_insert(engine.table(table), columns, f, settings=_INSERT_SETTINGS, fmt="Parquet")


def _merge(
    engine: ClickHouseHandle,
    snap: Snapshot,
    seq: int,
    entries: list[CatalogEntry],
    match_key: str,
    distinct: int,
    built: list[str],
    say: Any,
) -> tuple[str, int]:
    """Write the new users table; returns (its name, users updated)."""
    client = engine.client()
    old, stage = engine.table(snap.users), engine.table(f"s_{snap.project}_{seq}")
    name = f"u_{snap.project}_{seq}"
    new = engine.table(name)
    known = engine.table(f"k_{snap.project}_{seq}")
    built += [name, f"k_{snap.project}_{seq}"]
    client.command(f"CREATE TABLE {new} AS {old}")
    client.command(f"CREATE TABLE {known} (old_id Int64, rank Int64) ENGINE = MergeTree ORDER BY rank")
    m = quote_ident(match_key)
    say("matching known users")
    contained = next(e.multi for e in entries if e.key == match_key)
    if contained:
        client.command(f"INSERT INTO {known} {_contained(engine, snap, stage, match_key)}")
    else:
        client.command(
            f"INSERT INTO {known} SELECT o.gio_id, s.gio_id FROM {stage} AS s INNER JOIN "
            f"(SELECT gio_id, {m} FROM {old} WHERE {m} IN (SELECT {m} FROM {stage})) AS o ON o.{m} = s.{m}"
        )
    updated = int(client.query(f"SELECT count() FROM {known}").result_rows[0][0])
    have = list(engine.column_types(snap.users))
    by_key = {e.key: e for e in entries}
    cols = ", ".join(quote_ident(c) for c in have)
    # unchanged users, as they are
    client.command(
        f"INSERT INTO {new} ({cols}) SELECT {cols} FROM {old} WHERE gio_id NOT IN (SELECT old_id FROM {known})"
    )
    if updated:
        say(f"updating {updated} users")
        select = []
        for c in have:
            q = quote_ident(c)
            e = by_key.get(c)
            if c == GIO_ID:
                select.append("k.old_id")
            elif e is None or (c == match_key and contained):  # (matched by containment: the list stays)
                select.append(f"o.{q}")
            elif e.kind is KeyKind.IDENTITY and e.multi:  # accumulate: known values, then the new ones
                select.append(
                    f"if(empty(s.{q}), o.{q}, arrayConcat(o.{q}, arrayDistinct(arrayFilter(x -> NOT has(o.{q}, x), s.{q}))))"
                )
            else:
                select.append(f"s.{q}")
        client.command(
            f"INSERT INTO {new} ({cols}) SELECT {', '.join(select)} FROM {known} AS k "
            f"INNER JOIN {stage} AS s ON s.gio_id = k.rank INNER JOIN "
            f"(SELECT * FROM {old} WHERE gio_id IN (SELECT old_id FROM {known})) AS o ON o.gio_id = k.old_id"
        )
    inserted = distinct - updated
    if inserted:
        say(f"inserting {inserted} users")
        present = [c for c in have if c == GIO_ID or c in by_key]
        select = [
            f"{snap.next_gio_id - 1} + row_number() OVER (ORDER BY s.gio_id)" if c == GIO_ID else f"s.{quote_ident(c)}"
            for c in present
        ]
        client.command(
            f"INSERT INTO {new} ({', '.join(quote_ident(c) for c in present)}) SELECT {', '.join(select)} "
            f"FROM {stage} AS s WHERE s.gio_id NOT IN (SELECT rank FROM {known})"
        )
    client.command(f"DROP TABLE IF EXISTS {known}")
    built.remove(f"k_{snap.project}_{seq}")
    return name, updated


def _contained(engine: ClickHouseHandle, snap: Snapshot, stage: str, match_key: str) -> str:
    """SQL: ``(old_id, rank)`` of each stage row matching a user on a multi-valued identity, as
    :func:`segport.engine.duckdb.importer._match_contained` matches: a row's one value matches the user whose list
    holds it (the lowest ``gio_id``); a device id linked to a user by an event is that user first."""
    m, old = quote_ident(match_key), engine.table(snap.users)
    wanted = f"(SELECT {m}[1] FROM {stage})"
    holders = f"SELECT v, min(gio_id) AS gio_id FROM {old} ARRAY JOIN {m} AS v WHERE v IN {wanted} GROUP BY v"
    links = engine.table(f"links_{snap.project}")  # as segport.engine.clickhouse.events.links_table names it
    if match_key == DEVICE_COLUMN and int(engine.client().query(f"EXISTS TABLE {links}").result_rows[0][0]):
        holders = (
            f"SELECT device AS v, any(gio_id) AS gio_id FROM {links} WHERE device IN {wanted} GROUP BY device "
            f"UNION ALL SELECT v, gio_id FROM ({holders}) WHERE v NOT IN (SELECT device FROM {links})"
        )
    return (
        f"SELECT h.gio_id AS old_id, s.gio_id AS rank FROM {stage} AS s INNER JOIN ({holders}) AS h ON h.v = s.{m}[1]"
    )


def _drop_superseded(engine: ClickHouseHandle, snap: Snapshot, stage: str, match_key: str) -> int:
    """Of several stage rows matching one user on a multi-valued identity (two of its device ids), keep the
    latest-ranked (the DuckDB import's rule) and delete the others from the stage: their value is the user's
    already, so they neither update nor insert. Returns the rows deleted."""
    client = engine.client()
    matched = _contained(engine, snap, stage, match_key)
    losers = [
        int(r[0])
        for r in client.query(
            f"SELECT rank FROM ({matched}) WHERE rank NOT IN (SELECT max(rank) FROM ({matched}) GROUP BY old_id)"
        ).result_rows
    ]
    if losers:
        client.command(
            f"ALTER TABLE {stage} DELETE WHERE gio_id IN {{r:Array(Int64)}}",
            parameters={"r": losers},
            settings={"mutations_sync": 2},
        )
    return len(losers)


def load_id_list(engine: ClickHouseHandle, name: str, path: Path) -> int:
    """Store an id file's distinct non-empty lines as ``name(value)``, read as the DuckDB engine reads it."""
    with _scratch_duckdb(engine) as (con, folder):
        count = duckdb_import.load_id_list(con, "ids", path)
        staged = folder / "ids.parquet"
        con.execute(f"COPY ids TO {sql_string(str(staged))} (FORMAT PARQUET)")
        client = engine.client()
        client.command(f"CREATE TABLE {engine.table(name)} (value String) ENGINE = MergeTree ORDER BY value")
        with open(staged, "rb") as f:
            client.raw_insert(engine.table(name), None, f, settings=_INSERT_SETTINGS, fmt="Parquet")
    return count
