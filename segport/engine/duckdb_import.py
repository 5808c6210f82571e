"""Profile import into DuckDB: read a file, check every value, upsert by an identity. All or nothing.

The caller runs this inside one DuckDB transaction; any error raised here rolls the whole import back.

* Columns are catalogue keys (``ids_`` accepted for ``id_``); an unknown column names itself in the error.
* Users are matched on one single-valued identity (``match``). A new value gets the next ``gio_id`` of the
  project (monotonic, never reused); a known one is updated. Within one file a later row wins.
* Columns present in the file overwrite (a null clears the value); absent columns are left alone.
  Multi-valued identities accumulate: new values are appended to the ones already known.
* CSV: an empty unquoted field is null, ``""`` is the empty string; for int/double/date keys an empty or
  blank string is null too. Multi-valued keys in CSV are written ``a||b``; Parquet/JSON may use lists.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, KeyKind, ValueType, canonical_key, quote_ident
from segport.engine.base import ImportReport
from segport.engine.sql import sql_string, users_table
from segport.errors import ImportRejected

FORMATS = ("csv", "parquet", "jsonl")


def detect_format(path: Path, forced: str | None) -> str:
    if forced:
        fmt = forced.lower().replace("json", "jsonl") if forced.lower() in ("json", "ndjson") else forced.lower()
        if fmt not in FORMATS:
            raise ImportRejected(f"unknown format {forced!r}: expected csv, parquet or jsonl")
        return fmt
    name = path.name.lower()
    for suffix, fmt in ((".csv", "csv"), (".csv.gz", "csv"), (".parquet", "parquet"), (".pq", "parquet"),
                        (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".jsonl.gz", "jsonl")):
        if name.endswith(suffix):
            return fmt
    raise ImportRejected(f"cannot tell the format of {path.name!r} from its extension; pass --format")


def reader(path: Path, fmt: str) -> str:
    p = sql_string(str(path))
    if fmt == "csv":
        return (f"read_csv({p}, header=true, all_varchar=true, allow_quoted_nulls=false, delim=',', "
                "quote='\"', escape='\"', strict_mode=true)")
    if fmt == "parquet":
        return f"read_parquet({p})"
    return f"read_json({p}, format='newline_delimited')"


def _value_expr(src: str, entry: CatalogEntry, is_list: bool) -> str:
    """Typed value of a staging column (``src``), NULL where the raw value is null or blank."""
    t = entry.type.sql
    if entry.multi:
        if is_list:
            return f"TRY_CAST({src} AS {t}[])"
        items = f"string_split(CAST({src} AS VARCHAR), '||')"
        return f"CASE WHEN {src} IS NULL OR CAST({src} AS VARCHAR) = '' THEN NULL ELSE TRY_CAST({items} AS {t}[]) END"
    if entry.type is ValueType.STRING:
        return f"CAST({src} AS VARCHAR)" if not is_list else f"TRY_CAST({src} AS VARCHAR)"
    return f"TRY_CAST(NULLIF(trim(CAST({src} AS VARCHAR)), '') AS {t})"


def _is_blank(src: str, entry: CatalogEntry) -> str:
    if entry.type is ValueType.STRING or entry.multi:
        return f"({src} IS NULL)"
    return f"({src} IS NULL OR trim(CAST({src} AS VARCHAR)) = '')"


def import_users(
    cur: duckdb.DuckDBPyConnection, project_id: str, catalog: Catalog, path: Path, file_format: str | None,
    match: str,
) -> ImportReport:
    started = time.perf_counter()
    if not path.is_file():
        raise ImportRejected(f"no such file: {path}")
    fmt = detect_format(path, file_format)
    src = reader(path, fmt)
    try:
        described = cur.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    except duckdb.Error as exc:
        raise ImportRejected(f"cannot read {path.name} as {fmt}: {str(exc).splitlines()[0]}") from None
    file_cols = [(r[0], str(r[1])) for r in described]

    match_key = canonical_key(match)
    match_entry = catalog.get(match_key)
    if match_entry is None or match_entry.kind is not KeyKind.IDENTITY:
        raise ImportRejected(f"--match {match!r} is not an identity in the catalogue")
    if match_entry.multi:
        raise ImportRejected(f"--match {match!r} is multi-valued; match on a single-valued identity")

    columns: list[tuple[str, CatalogEntry, bool]] = []  # (file column, entry, is_list)
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
        columns.append((name, entry, dtype.endswith("[]")))
    if match_key not in seen:
        raise ImportRejected(f"the file has no column {match_key!r} to match users on")

    # One pass: number the rows, cast every column, and note the first bad column of each row.
    casts, bad_tests = [], []
    for i, (name, entry, is_list) in enumerate(columns):
        raw = f"r.{quote_ident_any(name)}"
        casts.append(f"{_value_expr(raw, entry, is_list)} AS {quote_ident(entry.key)}")
        bad_tests.append(f"WHEN NOT {_is_blank(raw, entry)} AND {_value_expr(raw, entry, is_list)} IS NULL THEN {i}")
    match_col = quote_ident(match_key)
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE import_typed AS SELECT row_number() OVER () AS _row, "
        f"CASE {' '.join(bad_tests)} ELSE NULL END AS _bad, {', '.join(casts)} FROM {src} r"
    )
    bad = cur.execute(
        f"SELECT _row, _bad FROM import_typed WHERE _bad IS NOT NULL OR {match_col} IS NULL OR {match_col} = '' "
        "ORDER BY _row LIMIT 1"
    ).fetchone()
    if bad is not None:
        row_no, col_idx = int(bad[0]), bad[1]
        if col_idx is None:
            raise ImportRejected(f"row {row_no}: {match_key} is empty; every row needs the identity it is matched on")
        name, entry, _ = columns[int(col_idx)]
        value = cur.execute(
            f"SELECT CAST({quote_ident_any(name)} AS VARCHAR) FROM "
            f"(SELECT row_number() OVER () AS _row, * FROM {src}) WHERE _row = ?",
            [row_no],
        ).fetchone()
        shown = value[0] if value else "?"
        kind = entry.type.value + ("[]" if entry.multi else "")
        raise ImportRejected(f"row {row_no}: key {entry.key}: value {shown!r} is not a valid {kind}")
    rows_read = int(cur.execute("SELECT count(*) FROM import_typed").fetchone()[0])  # type: ignore[index]

    users = users_table(project_id)
    keys = [e.key for _, e, _ in columns]
    cols = ", ".join(quote_ident(k) for k in keys)
    # later rows win within one file
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE import_last AS SELECT * EXCLUDE (_bad) FROM import_typed "
        f"QUALIFY row_number() OVER (PARTITION BY {match_col} ORDER BY _row DESC) = 1"
    )
    cur.execute("DROP TABLE import_typed")
    existing = int(cur.execute(f"SELECT count(*) FROM {users}").fetchone()[0])  # type: ignore[index]
    next_id = int(cur.execute("SELECT next_gio_id FROM segport_state WHERE project = ?", [project_id]).fetchone()[0])  # type: ignore[index]

    updated = 0
    if existing:
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE import_known AS SELECT u.gio_id, t.* FROM import_last t "
            f"JOIN {users} u ON u.{match_col} = t.{match_col}"
        )
        updated = int(cur.execute("SELECT count(*) FROM import_known").fetchone()[0])  # type: ignore[index]
        if updated:
            sets = []
            for _, entry, _ in columns:
                if entry.key == match_key:
                    continue
                c = quote_ident(entry.key)
                if entry.kind is KeyKind.IDENTITY and entry.multi:
                    sets.append(
                        f"{c} = CASE WHEN k.{c} IS NULL THEN {users}.{c} ELSE list_concat(coalesce({users}.{c}, []), "
                        f"list_filter(k.{c}, lambda x: NOT list_contains(coalesce({users}.{c}, []), x))) END"
                    )
                else:
                    sets.append(f"{c} = k.{c}")
            if sets:
                cur.execute(f"UPDATE {users} SET {', '.join(sets)} FROM import_known k WHERE {users}.gio_id = k.gio_id")
        new_rows = f"SELECT t.* FROM import_last t ANTI JOIN import_known k ON k.{match_col} = t.{match_col}"
    else:
        new_rows = "SELECT * FROM import_last"
    cur.execute(
        f"INSERT INTO {users} (gio_id, {cols}) SELECT {next_id} - 1 + row_number() OVER (ORDER BY _row), {cols} "
        f"FROM ({new_rows}) ORDER BY _row"
    )
    inserted = int(cur.execute(f"SELECT count(*) FROM {users}").fetchone()[0]) - existing  # type: ignore[index]
    cur.execute(
        "UPDATE segport_state SET next_gio_id = next_gio_id + ? WHERE project = ?", [inserted, project_id]
    )
    for t in ("import_last", "import_known"):
        cur.execute(f"DROP TABLE IF EXISTS {t}")
    return ImportReport(rows_read, inserted, updated, time.perf_counter() - started)


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
        raise ImportRejected(f"cannot read id list {path.name}: {str(exc).splitlines()[0]}") from None
    return int(cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def quote_ident_any(name: str) -> str:
    """Quote a column name read from a file (any text)."""
    return '"' + name.replace('"', '""') + '"'
