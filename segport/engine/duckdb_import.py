"""Profile import into DuckDB: read a file, check every value, upsert by an identity. All or nothing.

The caller runs this inside one DuckDB transaction; any error raised here rolls the whole import back.

* Columns are catalogue keys (``ids_`` accepted for ``id_``); an unknown column names itself in the error.
* Users are matched on one single-valued identity (``match``). A new value gets the next ``gio_id`` of the
  project (monotonic, in file order, never reused); a known one is updated. Within one file a later row wins.
* Columns present in the file overwrite (a null clears the value); absent columns are left alone.
  Multi-valued identities accumulate: new values are appended to the ones already known.
* CSV: an empty unquoted field is null, ``""`` is the empty string; for int/double/date keys an empty or
  blank string is null too. Multi-valued keys in CSV are written ``a||b``; Parquet/JSON may use lists.
* Types are checked strictly: ``int`` is an optional sign and digits (an integral float from Parquet/JSON
  is accepted), ``double`` a decimal or scientific number (no NaN/inf), ``date`` is ``YYYY-MM-DD``.

Speed: values are checked while they load (a bad one aborts the statement, then a second scan names the
row), so a first load is one ``INSERT ... SELECT`` from the file. Otherwise the checked rows are staged once,
matched to known users with one hash join, and the table is rewritten (most users change) or updated.
"""

from __future__ import annotations

import csv
import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, KeyKind, ValueType, canonical_key, quote_ident
from segport.engine.base import ImportReport
from segport.engine.sql import sql_string, users_table
from segport.errors import ImportRejected

FORMATS = ("csv", "parquet", "jsonl")
Progress = Callable[[str], None]
BAD = "segport: invalid value"  # raised by error() inside a load statement

_INT_RE = r"^\s*[+-]?[0-9]+\s*$"
_DOUBLE_RE = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
_DATE_RE = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$"
_TEXT_RE = {ValueType.INT: _INT_RE, ValueType.DOUBLE: _DOUBLE_RE, ValueType.DATE: _DATE_RE}
_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "HUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}


def detect_format(path: Path, forced: str | None) -> str:
    if forced:
        fmt = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(forced.lower(), forced.lower())
        if fmt not in FORMATS:
            raise ImportRejected(f"unknown format {forced!r}: expected csv, parquet or jsonl")
        return fmt
    name = path.name.lower()
    for suffix, fmt in (
        (".csv", "csv"),
        (".csv.gz", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".jsonl.gz", "jsonl"),
    ):
        if name.endswith(suffix):
            return fmt
    raise ImportRejected(f"cannot tell the format of {path.name!r} from its extension; pass --format")


def reader(path: Path, fmt: str) -> str:
    p = sql_string(str(path))
    if fmt == "csv":
        # The header is read here, not sniffed: DuckDB's sniffer may take a ragged first row for the header.
        names = _csv_header(path)
        cols = "{" + ", ".join(f"{sql_string(n)}: 'VARCHAR'" for n in names) + "}"
        return (
            f"read_csv({p}, header=true, columns={cols}, auto_detect=false, allow_quoted_nulls=false, "
            "delim=',', quote='\"', escape='\"', strict_mode=true, null_padding=false)"
        )
    if fmt == "parquet":
        # the scan numbers the rows itself (in parallel), unlike row_number() OVER ()
        return f"read_parquet({p}, file_row_number=true)"
    # sample the whole file: a type guessed from the first rows would fail later without naming the row
    return f"read_json({p}, format='newline_delimited', sample_size=-1)"


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:  # type: ignore[operator]
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ImportRejected(f"cannot read the header of {path.name}: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise ImportRejected(f"{path.name} has no header line")
    names = [h.strip() for h in header]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # checked here: DuckDB would report it as an internal binder error
        raise ImportRejected(f"column {repeated[0]!r} appears twice in the header of {path.name}")
    return names


@dataclass(frozen=True, slots=True)
class _Column:
    """How one file column becomes one typed users column."""

    name: str
    entry: CatalogEntry
    value: str  # SQL: the typed value (NULL where missing)
    bad: str | None  # SQL: true where the raw value is present but invalid; None when no value can be bad


def _json_text(x: str) -> str:
    """A JSON value as text: strings unquoted, numbers as written, null as NULL."""
    return f"(CASE json_type({x}) WHEN 'VARCHAR' THEN {x}->>'$' WHEN 'NULL' THEN NULL ELSE CAST({x} AS VARCHAR) END)"


def _text(raw: str, dtype: str) -> tuple[str, str | None]:
    """(text expression, expression true for values that are not scalars) of a single-valued source column."""
    if dtype == "VARCHAR":
        return raw, None
    if dtype == "JSON":
        return _json_text(raw), f"json_type({raw}) IN ('OBJECT', 'ARRAY', 'BOOLEAN')"
    if dtype.endswith("[]") or dtype.startswith(("STRUCT", "MAP")):
        return f"CAST({raw} AS VARCHAR)", "true"
    return f"CAST({raw} AS VARCHAR)", None


def _scalar_plan(raw: str, dtype: str, entry: CatalogEntry) -> tuple[str, str | None]:
    t = entry.type
    if t is ValueType.STRING:
        text, not_scalar = _text(raw, dtype)
        return text, (f"({raw} IS NOT NULL AND {not_scalar})" if not_scalar else None)
    if t is ValueType.INT and dtype in _INT_TYPES:
        return f"CAST({raw} AS BIGINT)", ("(" + raw + " > 9223372036854775807)" if dtype == "HUGEINT" else None)
    if t is ValueType.INT and dtype in _FLOAT_TYPES:
        return f"TRY_CAST({raw} AS BIGINT)", f"({raw} IS NOT NULL AND NOT (isfinite({raw}) AND {raw} = trunc({raw})))"
    if t is ValueType.DOUBLE and (dtype in _INT_TYPES or dtype in _FLOAT_TYPES or dtype.startswith("DECIMAL")):
        return f"CAST({raw} AS DOUBLE)", f"({raw} IS NOT NULL AND NOT isfinite(CAST({raw} AS DOUBLE)))"
    if t is ValueType.DATE and dtype == "DATE":
        return raw, None
    text, not_scalar = _text(raw, dtype)
    blank_free = f"NULLIF(trim({text}), '')"
    value = f"TRY_CAST({blank_free} AS {t.sql})"
    bad = f"({blank_free} IS NOT NULL AND (NOT regexp_full_match({text}, '{_TEXT_RE[t]}') OR {value} IS NULL))"
    if not_scalar:
        bad = f"(({raw} IS NOT NULL AND {not_scalar}) OR {bad})"
    return value, bad


def _multi_plan(raw: str, dtype: str, entry: CatalogEntry) -> tuple[str, str | None]:
    """A multi-valued key: a list column, or text ``a||b``. Empty text or an empty list is null."""
    if dtype.endswith("[]"):
        inner = dtype[:-2]
        item = _json_text("x") if inner == "JSON" else ("x" if inner == "VARCHAR" else "CAST(x AS VARCHAR)")
        items = f"list_transform({raw}, lambda x: {item})"
    else:
        text, _ = _text(raw, dtype)
        items = f"string_split({text}, '||')"
    items = f"(CASE WHEN {raw} IS NULL OR len({items}) = 0 OR {items} = [''] THEN NULL ELSE {items} END)"
    if entry.type is ValueType.STRING:
        bad = f"({items} IS NOT NULL AND list_contains({items}, NULL))"
        return items, bad
    value = f"list_transform({items}, lambda x: TRY_CAST(trim(x) AS {entry.type.sql}))"
    regex = _TEXT_RE[entry.type]
    bad = (
        f"({items} IS NOT NULL AND (len(list_filter({items}, lambda x: x IS NULL OR NOT regexp_full_match(x, "
        f"'{regex}'))) > 0 OR list_contains({value}, NULL)))"
    )
    return value, bad


def plan_columns(file_cols: list[tuple[str, str]], catalog: Catalog, project_id: str) -> list[_Column]:
    columns: list[_Column] = []
    seen: set[str] = set()
    for name, dtype in file_cols:
        key = canonical_key(name.strip())
        if key == GIO_ID:
            raise ImportRejected("column gio_id: gio_id is assigned by segport and cannot be imported")
        entry = catalog.get(key)
        if entry is None:
            raise ImportRejected(f"column {name!r} is not a key in the catalogue of project {project_id}")
        if key in seen:
            raise ImportRejected(f"column {name!r} appears twice")
        seen.add(key)
        raw = f"r.{quote_ident_any(name)}"
        value, bad = (_multi_plan if entry.multi else _scalar_plan)(raw, dtype, entry)
        columns.append(_Column(name, entry, value, bad))
    return columns


def import_users(
    cur: duckdb.DuckDBPyConnection,
    project_id: str,
    catalog: Catalog,
    path: Path,
    file_format: str | None,
    match: str,
    progress: Progress | None = None,
) -> ImportReport:
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    if not path.is_file():
        raise ImportRejected(f"no such file: {path}")
    if path.stat().st_size == 0:  # DuckDB would read an empty JSON file as one column named 'json'
        raise ImportRejected(f"{path.name} is empty: it needs at least a header (CSV) or one record")
    fmt = detect_format(path, file_format)
    src = reader(path, fmt)
    try:
        described = cur.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    except duckdb.Error as exc:
        raise ImportRejected(f"cannot read {path.name} as {fmt}: {_first_line(exc)}") from None

    match_key = canonical_key(match)
    match_entry = catalog.get(match_key)
    if match_entry is None or match_entry.kind is not KeyKind.IDENTITY:
        raise ImportRejected(f"--match {match!r} is not an identity in the catalogue")
    if match_entry.multi:
        raise ImportRejected(f"--match {match!r} is multi-valued; match on a single-valued identity")
    numbered = fmt == "parquet"
    rowno = "(r.file_row_number + 1)" if numbered else "row_number() OVER ()"
    columns = plan_columns(
        [(r[0], str(r[1])) for r in described if not (numbered and r[0] == "file_row_number")], catalog, project_id
    )
    by_key = {c.entry.key: c for c in columns}
    if match_key not in by_key:
        raise ImportRejected(f"the file has no column {match_key!r} to match users on")
    m = by_key[match_key].value
    # Every value is checked as it is loaded: a bad one raises BAD inside the statement (DuckDB's error()),
    # which aborts the transaction; only then is the file scanned again to name the first bad row.
    checks = {c.entry.key: c.bad for c in columns if c.bad}
    checks[match_key] = f"({m} IS NULL OR {m} = ''" + (f" OR {checks[match_key]})" if match_key in checks else ")")
    values = ", ".join(
        (
            f"CASE WHEN {checks[c.entry.key]} THEN error('{BAD}') ELSE {c.value} END"
            if c.entry.key in checks
            else c.value
        )
        + f" AS {quote_ident(c.entry.key)}"
        for c in columns
    )
    users = users_table(project_id)
    existing = int(cur.execute(f"SELECT count(*) FROM {users}").fetchone()[0])  # type: ignore[index]
    next_id = int(cur.execute("SELECT next_gio_id FROM segport_state WHERE project = ?", [project_id]).fetchone()[0])  # type: ignore[index]
    cols = ", ".join(quote_ident(c.entry.key) for c in columns)
    mcol = quote_ident(match_key)
    try:
        rows_read = distinct = -1
        if numbered:  # re-reading Parquet is cheap: count identities first, load straight from the file
            row = cur.execute(f"SELECT count(*), count(DISTINCT {m}) FROM {src} r").fetchone()
            assert row is not None
            rows_read, distinct = int(row[0]), int(row[1])
        if existing == 0 and rows_read == distinct:
            # First load: one pass straight from the file into the table, numbered in file order.
            say("loading and checking")
            cur.execute(f"INSERT INTO {users} (gio_id, {cols}) SELECT {next_id - 1} + {rowno}, {values} FROM {src} r")
            if not numbered:
                row = cur.execute(f"SELECT count(*), count(DISTINCT {mcol}) FROM {users}").fetchone()
                assert row is not None
                rows_read, distinct = int(row[0]), int(row[1])
                if distinct != rows_read:  # an identity repeats: the last row must win, as the staged path does
                    cur.execute(f"DELETE FROM {users}")
        if existing or rows_read != distinct:
            direct = None
            if numbered and rows_read == distinct:
                direct = f"(SELECT {rowno} AS _row, {values} FROM {src} r)"
            rows_read, inserted, updated = _upsert(
                cur, users, src, columns, match_key, values, next_id, existing, direct=direct, say=say
            )
        else:
            inserted, updated = rows_read, 0
    except duckdb.Error as exc:
        if BAD in str(exc):
            with cur.cursor() as diag:  # the transaction is aborted; diagnose on a connection of its own
                _reject_first_bad(diag, src, columns, checks, match_key)
        raise ImportRejected(f"cannot read {path.name} as {fmt}: {_first_line(exc)}") from None
    cur.execute("UPDATE segport_state SET next_gio_id = next_gio_id + ? WHERE project = ?", [inserted, project_id])
    return ImportReport(rows_read, inserted, updated, time.perf_counter() - started)


def _upsert(
    cur: duckdb.DuckDBPyConnection,
    users: str,
    src: str,
    columns: list[_Column],
    match_key: str,
    values: str,
    next_id: int,
    existing: int,
    *,
    direct: str | None,
    say: Progress,
) -> tuple[int, int, int]:
    """Update known users and insert new ones. Returns (read, inserted, updated).

    ``direct`` is a relation of the file's checked rows (``_row`` + values) with no repeated identity, read
    again at each step; without it the rows are staged in a temp table first (and repeats resolved there)."""
    mcol = quote_ident(match_key)
    rows = direct or "import_rows"
    first = "_row"
    if direct:
        row = cur.execute(f"SELECT count(*) FROM {src} r").fetchone()
        rows_read = distinct = int(row[0])  # type: ignore[index]
    else:
        say("staging and checking rows")
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE import_rows AS SELECT row_number() OVER () AS _row, {values} FROM {src} r"
        )
        row = cur.execute(f"SELECT count(*), count(DISTINCT {mcol}) FROM import_rows").fetchone()
        assert row is not None
        rows_read, distinct = int(row[0]), int(row[1])
    if distinct != rows_read:  # later rows win within one file; a new user's id follows its first row
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE import_rows AS SELECT *, min(_row) OVER (PARTITION BY {mcol}) "
            f"AS _first FROM import_rows QUALIFY row_number() OVER (PARTITION BY {mcol} ORDER BY _row DESC) = 1"
        )
        first = "_first"
    updated = 0
    if existing:
        say("matching known users")
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE import_known AS SELECT u.gio_id, t._row FROM {rows} t "
            f"JOIN {users} u ON u.{mcol} = t.{mcol}"
        )
        updated = int(cur.execute("SELECT count(*) FROM import_known").fetchone()[0])  # type: ignore[index]
    if updated and updated * 2 >= existing:
        # Most users change: rewriting the table is cheaper than an UPDATE (which logs every value).
        say(f"updating {updated} users (rewriting the table)")
        _rewrite(cur, users, columns, match_key, rows)
    elif updated:
        say(f"updating {updated} users")
        sets = [f"{quote_ident(c.entry.key)} = {_merged(c, users, 'k')}" for c in columns if c.entry.key != match_key]
        if sets:
            cur.execute(
                f"UPDATE {users} SET {', '.join(sets)} FROM (SELECT k.gio_id, t.* FROM import_known k "
                f"JOIN {rows} t USING (_row)) k WHERE {users}.gio_id = k.gio_id"
            )
    inserted = distinct - updated
    if inserted:
        say(f"inserting {inserted} users")
        cols = ", ".join(quote_ident(c.entry.key) for c in columns)
        known = "ANTI JOIN import_known k USING (_row)" if existing else ""
        cur.execute(
            f"INSERT INTO {users} (gio_id, {cols}) SELECT {next_id - 1} + row_number() OVER (ORDER BY t.{first}), "
            f"{', '.join('t.' + quote_ident(c.entry.key) for c in columns)} FROM {rows} t {known}"
        )
    cur.execute("DROP TABLE IF EXISTS import_rows")
    cur.execute("DROP TABLE IF EXISTS import_known")
    return rows_read, inserted, updated


def _merged(c: _Column, old: str, new: str) -> str:
    """The value a file column leaves in a known user: the file's, except that multi-valued identities
    accumulate (new values appended to the known ones)."""
    q = quote_ident(c.entry.key)
    if c.entry.kind is KeyKind.IDENTITY and c.entry.multi:
        known = f"coalesce({old}.{q}, [])"
        fresh = f"list_filter({new}.{q}, lambda x: NOT list_contains({known}, x))"
        # distinct in file order (list_distinct's order is arbitrary: the file would differ run to run)
        return (
            f"CASE WHEN {new}.{q} IS NULL THEN {old}.{q} ELSE list_concat({known}, "
            f"list_filter({fresh}, lambda x, i: list_position({fresh}, x) = i)) END"
        )
    return f"{new}.{q}"


def _rewrite(cur: duckdb.DuckDBPyConnection, users: str, columns: list[_Column], match_key: str, rows: str) -> None:
    """Replace the users table by a copy with the file's rows merged in (same transaction, same name).

    The copy is the changed users (file rows joined to their ``gio_id``, plus the old values of the columns
    the file lacks or accumulates, read narrowly) followed by the unchanged users as they are."""
    name = users.strip('"')
    have = [
        r[0]
        for r in cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [name]
        ).fetchall()
    ]
    by_key = {c.entry.key: c for c in columns}
    select, old_cols = [], []
    for col in have:
        q = quote_ident(col)
        c = by_key.get(col)
        if col == GIO_ID:
            select.append("k.gio_id")
        elif c is None:
            select.append(f"o.{q}")
            old_cols.append(q)
        elif col == match_key:
            select.append(f"t.{q}")
        else:
            merged = _merged(c, "o", "t")
            if "o." in merged:
                old_cols.append(q)
            select.append(f"{merged} AS {q}")
    old = (
        f" JOIN (SELECT gio_id, {', '.join(dict.fromkeys(old_cols))} FROM {users}) o ON o.gio_id = k.gio_id"
        if old_cols
        else ""
    )
    nxt = quote_ident(name + "__next")
    cur.execute(
        f"CREATE TABLE {nxt} AS SELECT {', '.join(select)} FROM {rows} t JOIN import_known k USING (_row){old} "
        f"UNION ALL SELECT u.* FROM {users} u ANTI JOIN import_known k ON k.gio_id = u.gio_id"
    )
    cur.execute(f"DROP TABLE {users}")
    cur.execute(f"ALTER TABLE {nxt} RENAME TO {users}")


def _reject_first_bad(
    cur: duckdb.DuckDBPyConnection, src: str, columns: list[_Column], checks: dict[str, str], match_key: str
) -> None:
    """Find the first offending row (1-based, header not counted) and raise its one-line error."""
    tests = [f"WHEN {checks[match_key]} THEN -1"] if match_key in checks else []
    tests += [
        f"WHEN {checks[c.entry.key]} THEN {i}"
        for i, c in enumerate(columns)
        if c.entry.key in checks and c.entry.key != match_key
    ]
    raws = ", ".join(f"r.{quote_ident_any(c.name)} AS {quote_ident_any(c.name)}" for c in columns)
    row = cur.execute(
        f"SELECT _row, _bad FROM (SELECT row_number() OVER () AS _row, CASE {' '.join(tests)} ELSE NULL END AS _bad "
        f"FROM {src} r) WHERE _bad IS NOT NULL ORDER BY _row LIMIT 1"
    ).fetchone()
    if row is None:  # cannot happen: the load saw a bad value
        raise ImportRejected("the file has an invalid value")
    row_no, idx = int(row[0]), int(row[1])
    if idx < 0:
        match = next(c for c in columns if c.entry.key == match_key)
        if match.bad:
            value = _raw_value(cur, src, raws, match, row_no)
            if value not in (None, ""):
                raise ImportRejected(f"row {row_no}: key {match_key}: value {value!r} is not a valid string")
        raise ImportRejected(f"row {row_no}: {match_key} is empty; every row needs the identity it is matched on")
    col = columns[idx]
    kind = col.entry.type.value + ("[]" if col.entry.multi else "")
    shown = _raw_value(cur, src, raws, col, row_no)
    raise ImportRejected(f"row {row_no}: key {col.entry.key}: value {shown!r} is not a valid {kind}")


def _raw_value(cur: duckdb.DuckDBPyConnection, src: str, raws: str, col: _Column, row_no: int) -> str | None:
    value = cur.execute(
        f"SELECT CAST({quote_ident_any(col.name)} AS VARCHAR) FROM (SELECT row_number() OVER () AS _row, {raws} "
        f"FROM {src} r) WHERE _row = ?",
        [row_no],
    ).fetchone()
    return value[0] if value else None


def load_id_list(cur: duckdb.DuckDBPyConnection, table: str, path: Path) -> int:
    """Store the distinct non-empty lines of an id file (one id per line, no header) as ``table(value)``."""
    if not path.is_file():
        raise ImportRejected(f"no such file: {path}")
    p = sql_string(str(path))
    try:
        cur.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT DISTINCT trim(value) AS value FROM "
            f"read_csv({p}, header=false, columns={{'value': 'VARCHAR'}}, delim='\\0', quote='', escape='', "
            "auto_detect=false) WHERE value IS NOT NULL AND trim(value) <> ''"
        )
    except duckdb.Error as exc:
        raise ImportRejected(f"cannot read id list {path.name}: {_first_line(exc)}") from None
    return int(cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def quote_ident_any(name: str) -> str:
    """Quote a column name read from a file (any text)."""
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
