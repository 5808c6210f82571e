"""Profile import into DuckDB: read a file, check every value, upsert by an identity. All or nothing.

The caller runs this inside one DuckDB transaction; any error raised here rolls the whole import back.

* Columns are catalogue keys (``ids_`` accepted for ``id_``); an unknown column names itself in the error.
* Users are matched on one identity (``match``). A new value gets the next ``gio_id`` of the project
  (monotonic, in file order, never reused); a known one is updated. Within one file a later row wins.
  A multi-valued identity (``id_$anonymous_user``) is matched on by containment: each row holds exactly one
  value, which matches the user whose list holds it (the lowest ``gio_id`` if several do; a device linked to a
  user by an event is that user, as events resolve it: :func:`_match_contained`). The matched list is left
  as it is.
* Columns present in the file overwrite (a null clears the value); absent columns are left alone.
  Multi-valued identities accumulate: new values are appended to the ones already known.
* CSV: an empty unquoted field is null, ``""`` is the empty string; for int/double/date keys an empty or
  blank string is null too. Multi-valued keys in CSV are written ``a||b``; Parquet/JSON may use lists.
* Types are checked strictly: ``int`` is an optional sign and digits (an integral float from Parquet/JSON
  is accepted), ``double`` a decimal or scientific number stored as written (no NaN/inf, no overflow or
  underflow, at most 17 significant digits), ``date`` is ``YYYY-MM-DD``. Lists hold no nulls and no lists.
* JSON Lines numbers that DuckDB's reader would change are checked on their text by
  :mod:`segport.engine.duckdb.import_jsonl` (and kept as written for string keys).

Speed: values are checked while they load (a bad one aborts the statement, then a second scan names the
row), so a first load is one ``INSERT ... SELECT`` from the file. Otherwise the checked rows are staged once,
matched to known users with one hash join, and the table is rewritten (most users change) or updated.
Reading the file and the per-column checks live in :mod:`segport.engine.duckdb.import_columns`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb

from segport.domain.formats import detect_format
from segport.domain.keys import GIO_ID, Catalog, KeyKind, canonical_key, quote_ident
from segport.engine.base import ImportReport
from segport.engine.duckdb.events import DEVICE_COLUMN, LINKS
from segport.engine.duckdb.import_columns import (  # noqa: F401  (reader: imported from here)
    _DOUBLE_RE,
    BAD,
    CONTROL_RE,
    Progress,
    _Column,
    _first_line,
    open_source,
    plan_columns,
    quote_ident_any,
    reader,
)
from segport.engine.duckdb.import_jsonl import diagnose_jsonl, double_problem
from segport.engine.duckdb.sql import sql_string, users_table
from segport.errors import ImportRejected


def import_users(
    cur: duckdb.DuckDBPyConnection,
    project_id: str,
    catalog: Catalog,
    path: Path,
    file_format: str | None,
    match: str,
    progress: Progress | None = None,
    keys: list[str] | None = None,
) -> ImportReport:
    """Import ``path`` (see the module's docstring); ``keys``, when given, receives the catalogue keys the file
    has columns for."""
    started = time.perf_counter()
    if not path.is_file():
        raise ImportRejected(f"no such file: {path}")
    if path.stat().st_size == 0:  # DuckDB would read an empty JSON file as one column named 'json'
        raise ImportRejected(f"{path.name} is empty: it needs at least a header (CSV) or one record")
    fmt = detect_format(path, file_format)
    with open_source(cur, path, fmt, catalog) as (src, described):
        report, columns = _import(cur, project_id, catalog, path, fmt, src, described, match, progress or _quiet)
    if keys is not None:
        keys += [c.entry.key for c in columns]
    report.elapsed_s = time.perf_counter() - started
    return report


def _quiet(_msg: str) -> None:
    pass


def _import(
    cur: duckdb.DuckDBPyConnection,
    project_id: str,
    catalog: Catalog,
    path: Path,
    fmt: str,
    src: str,
    described: list[tuple[str, str]],
    match: str,
    say: Progress,
) -> tuple[ImportReport, list[_Column]]:
    match_key = canonical_key(match)
    match_entry = catalog.get(match_key)
    if match_entry is None or match_entry.kind is not KeyKind.IDENTITY:
        raise ImportRejected(f"--match {match!r} is not an identity in the catalogue")
    numbered = fmt == "parquet"
    rowno = "(r.file_row_number + 1)" if numbered else "row_number() OVER ()"
    columns = plan_columns(described, catalog, project_id)
    by_key = {c.entry.key: c for c in columns}
    if match_key not in by_key:
        raise ImportRejected(f"the file has no column {match_key!r} to match users on")
    m = by_key[match_key].value
    # Every value is checked as it is loaded: a bad one raises BAD inside the statement (DuckDB's error()),
    # which aborts the transaction; only then is the file scanned again to name the first bad row.
    checks = {c.entry.key: c.bad for c in columns if c.bad}
    missing = f"len({m}) <> 1" if match_entry.multi else f"{m} = ''"  # a list: exactly one value to match on
    checks[match_key] = f"({m} IS NULL OR {missing}" + (f" OR {checks[match_key]})" if match_key in checks else ")")
    # control characters: one regex over a row's strings while loading (a third of the cost of one per value);
    # the diagnosis, which runs only when a row is bad, checks each column to name it
    diagnose = dict(checks)
    for c in columns:
        if c.text is not None:
            control = f"regexp_matches({c.text}, '{CONTROL_RE}')"
            diagnose[c.entry.key] = f"({diagnose[c.entry.key]} OR {control})" if c.entry.key in diagnose else control
    texts = [c.text for c in columns if c.text is not None]
    if texts:
        checks[match_key] = f"({checks[match_key]} OR regexp_matches(concat({', '.join(texts)}), '{CONTROL_RE}'))"
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
            if numbered and rows_read == distinct and not match_entry.multi:
                direct = f"(SELECT {rowno} AS _row, {values} FROM {src} r)"
            rows_read, inserted, updated = _upsert(
                cur, users, src, columns, match_key, values, next_id, existing, direct=direct, say=say,
                contained=project_id if match_entry.multi else None,
            )  # fmt: skip
        else:
            inserted, updated = rows_read, 0
    except duckdb.Error as exc:
        if BAD in str(exc):
            with cur.cursor() as diag:  # the transaction is aborted; diagnose on a connection of its own
                _reject_first_bad(diag, src, columns, diagnose, match_key)
        if fmt == "jsonl":  # a line DuckDB's reader refused while loading (a repeated key): name it
            diagnose_jsonl(path)
        raise ImportRejected(f"cannot read {path.name} as {fmt}: {_first_line(exc)}") from None
    cur.execute("UPDATE segport_state SET next_gio_id = next_gio_id + ? WHERE project = ?", [inserted, project_id])
    return ImportReport(rows_read, inserted, updated, 0.0), columns


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
    contained: str | None = None,
) -> tuple[int, int, int]:
    """Update known users and insert new ones. Returns (read, inserted, updated).

    ``direct`` is a relation of the file's checked rows (``_row`` + values) with no repeated identity, read
    again at each step; without it the rows are staged in a temp table first (and repeats resolved there).
    ``contained`` (the project) when ``match_key`` is multi-valued: users are matched by :func:`_match_contained`."""
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
    if existing and contained is not None:
        say("matching known users")
        distinct -= _match_contained(cur, users, contained, match_key, first)
        updated = int(cur.execute("SELECT count(*) FROM import_known").fetchone()[0])  # type: ignore[index]
    elif existing:
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


def _match_contained(cur: duckdb.DuckDBPyConnection, users: str, project_id: str, match_key: str, order: str) -> int:
    """``import_known(gio_id, _row)`` for a match on a multi-valued identity: a row's one value matches the user
    whose list holds it, the lowest ``gio_id`` if several do; for the device id, a device an event linked to a
    user is that user first (docs/events.md, "Identity links"), whoever holds it. When several rows match one
    user, the row whose value comes latest in the file (``order``: each value's first row) wins and the others
    are dropped from ``import_rows`` (neither updating nor inserting: their value is the user's already).
    Returns the rows dropped."""
    m = quote_ident(match_key)
    wanted = f"(SELECT {m}[1] FROM import_rows)"
    holders = (
        f"SELECT v, min(gio_id) AS gio_id FROM (SELECT gio_id, unnest({m}) AS v FROM {users}) "
        f"WHERE v IN {wanted} GROUP BY v"
    )
    has_links = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [LINKS]).fetchone()
    if match_key == DEVICE_COLUMN and has_links and has_links[0]:
        linked = f"(SELECT device, gio_id FROM {LINKS} WHERE project = {sql_string(project_id)})"
        holders = (
            f"SELECT device AS v, gio_id FROM {linked} WHERE device IN {wanted} "
            f"UNION ALL SELECT v, gio_id FROM ({holders}) WHERE v NOT IN (SELECT device FROM {linked})"
        )
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE import_matched AS SELECT h.gio_id, t._row, t.{order} AS _order "
        f"FROM import_rows t JOIN ({holders}) h ON h.v = t.{m}[1]"
    )
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE import_known AS SELECT gio_id, _row FROM import_matched "
        "QUALIFY row_number() OVER (PARTITION BY gio_id ORDER BY _order DESC) = 1"
    )
    row = cur.execute("SELECT (SELECT count(*) FROM import_matched) - (SELECT count(*) FROM import_known)").fetchone()
    dropped = int(row[0]) if row else 0
    if dropped:
        cur.execute(
            "DELETE FROM import_rows WHERE _row IN (SELECT _row FROM import_matched) "
            "AND _row NOT IN (SELECT _row FROM import_known)"
        )
    cur.execute("DROP TABLE import_matched")
    return dropped


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
        elif c is None or (col == match_key and c.entry.multi):  # (matched by containment: the list stays)
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
        if match.entry.multi:
            found = cur.execute(
                f"SELECT len({match.value}) FROM (SELECT row_number() OVER () AS _row, {raws} FROM {src} r) r "
                "WHERE _row = ?",
                [row_no],
            ).fetchone()
            if found is None or found[0] != 1:
                raise ImportRejected(f"row {row_no}: {match_key} must hold exactly one value: users are matched on it")
            idx = columns.index(match)  # one value, and a bad one: said as for any value
    if idx < 0:
        match = next(c for c in columns if c.entry.key == match_key)
        if match.bad:
            value = _raw_value(cur, src, raws, match, row_no)
            if value not in (None, ""):
                raise ImportRejected(f"row {row_no}: key {match_key}: value {value!r} {_why_not(value, 'string')}")
        raise ImportRejected(f"row {row_no}: {match_key} is empty; every row needs the identity it is matched on")
    col = columns[idx]
    kind = col.entry.type.value + ("[]" if col.entry.multi else "")
    shown = _raw_value(cur, src, raws, col, row_no)
    why = _why_not(shown, kind)
    if col.problems:  # a list: what is wrong with it as a whole, if anything
        tests = " ".join(f"WHEN {cond} THEN {i}" for i, (cond, _) in enumerate(col.problems))
        found = cur.execute(
            f"SELECT CASE {tests} ELSE NULL END FROM (SELECT row_number() OVER () AS _row, {raws} "
            f"FROM {src} r) r WHERE _row = ?",
            [row_no],
        ).fetchone()
        if found and found[0] is not None:
            why = col.problems[int(found[0])][1]
    raise ImportRejected(f"row {row_no}: key {col.entry.key}: value {shown!r} {why}")


def _why_not(value: str | None, kind: str) -> str:
    control = re.search(CONTROL_RE, value or "")
    if control:
        return f"holds the control character U+{ord(control.group()):04X} (only tab and line breaks are allowed)"
    if kind == "double" and value is not None and re.fullmatch(_DOUBLE_RE, value):
        problem = double_problem(value.strip())
        if problem:
            return problem
    if kind == "double[]" and value is not None:
        for item in value.split("||"):
            problem = double_problem(item.strip()) if re.fullmatch(_DOUBLE_RE, item) else None
            if problem:
                return f"holds {item.strip()!r}, which {problem}"
    return f"is not a valid {kind}"


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
