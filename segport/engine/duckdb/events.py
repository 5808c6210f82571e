"""Event files into rows: read and check an event file in DuckDB and stage its rows (used by both engines: the
DuckDB engine stages in its own transaction, the ClickHouse engine in a scratch DuckDB file), then resolve the
identities and store the rows in DuckDB's event store.

The event store is one table per project, ``events_<project>``: ``gio_id``, ``$time`` (``TIMESTAMP``, UTC),
``$event``, ``$type``, ``$batch`` (the spool batch a row came from; null for files), one text column per
standard field (``$path`` …) and one typed column per attribute key. Each load is inserted in time order (a
Parquet file already in time order in file order, without a sort: ``in_time_order``), so the
zone maps DuckDB keeps per row group (min/max of every column, 122,880 rows a group) let a scan bounded by
``$time`` skip the row groups outside its bounds. ``segport_event_batches`` holds the spool batches stored, in
the same transaction as their rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import duckdb

from segport.domain.event_files import (
    ATTRIBUTE_KEY_RE,
    BATCH_COLUMN,
    DEFAULT_TYPE,
    DEVICE_ID,
    DEVICE_IDENTITY,
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
from segport.engine.duckdb.import_columns import (
    _FLOAT_TYPES,
    _INT_TYPES,
    CONTROL_RE,
    _first_line,
    _scalar_plan,
    _text,
    has_control,
    quote_ident_any,
    reader,
)
from segport.engine.duckdb.sql import sql_string
from segport.errors import ImportRejected

FUTURE_SKEW_MS = 24 * 3600 * 1000  # a time further ahead of the engine's clock is refused
_ISO_RE = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?\s*(Z|[+-][0-9]{2}(:?[0-9]{2})?)\s*$"
_MS_RE = r"^\s*[0-9]{1,15}\s*$"
FIXED = ("gio_id", "$time", "$event", "$type", BATCH_COLUMN)
LINKS = "segport_identity_links"  # DuckDB: device id -> the user it is linked to (docs/events.md, "Identity links")
DEVICE_COLUMN = "id_" + DEVICE_IDENTITY


def events_table(project_id: str) -> str:
    return f'"events_{project_id}"'


def q(name: str) -> str:
    return quote_ident_any(name)


@dataclass(slots=True)
class Staged:
    """The checked rows of one file, in the temp table ``ev_stage``: ``_row``, ``_idcol`` / ``_idval`` (the
    identity column key and its value), ``_gio`` (a ``gio_id`` given in the file), the fixed columns and one
    column per standard field and attribute, with its SQL type."""

    rows: int
    columns: dict[str, str]  # standard fields and attributes: name -> DuckDB type
    new_attributes: list[EventAttribute] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)  # identity column keys the rows resolve on
    file: str = ""
    fmt: str = "csv"
    events: dict[str, list[str]] | None = None  # event name -> attribute keys its rows carry (None: count again)
    view: bool = False  # ev_stage is a view over the file (Parquet), not a table
    diagnose: str = ""  # SQL: the first bad row of the file and its reason, checked row by row
    ids_check: str = "false"  # SQL over ev_ids: true for an identity that refuses the file
    ids_ready: bool = False  # ev_ids was made by the check pass
    # whether an identity of ev_ids refuses the file, already known from the check pass (None: ids_check tells);
    # then ``identities`` is set too
    ids_bad: bool | None = None
    links: bool = False  # the file has userId and deviceId: rows with both link the device to the user
    # SQL over ``_idraw`` (the file's one identity column as it is written, a column of ``ev_stage``): its
    # identity value. Set when rows are matched to their user on that column as written (see stage's
    # ``raw_identities``): on ev_map's ``_idval`` itself, or, with ``raw_map``, through ``ev_rawmap(_idraw,
    # gio_id)`` (made by resolve_identities from ``ev_rawids(_idraw)``, the distinct values as written).
    raw_id: str = ""
    raw_map: bool = False  # some value is written otherwise than its identity value (blanks around it, a number)
    # the file's rows are already in time order (each row's time at or after the previous row's): they are stored
    # in file order, without a sort (see in_time_order)
    in_order: bool = False

    def at(self, row: int) -> str:
        """Where row ``row`` (1-based) is in the file, as messages name it."""
        return f"{self.file}: " + _label(self.fmt).format(n=row + 1 if self.fmt == "csv" else row, r=row)


def _label(fmt: str) -> str:
    return {"csv": "line {n} (row {r})", "jsonl": "line {n}", "parquet": "row {r}"}[fmt]


def stage(
    cur: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    declared: dict[str, ValueType],
    path: Path,
    file_format: str | None,
    project_id: str,
    now_ms: int,
    *,
    raw_identities: bool = False,
) -> Staged:
    """Check every row of the file and stage them in ``ev_stage``; the first bad row refuses the file with a
    message naming its line (CSV: the header is line 1; JSON Lines: line N is the Nth record) or row.

    With ``raw_identities`` (the DuckDB engine), a Parquet file whose one identity column is ``userId`` or
    ``deviceId`` (no ``userKey``, no ``gio_id``) is grouped and later joined on that column as it is written:
    the trimming and the identity checks run on its distinct values, not on every row (``Staged.raw_id``)."""
    if not path.is_file():
        raise ImportRejected(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ImportRejected(f"{path.name} is empty: it needs at least a header (CSV) or one record")
    fmt = detect_format(path, file_format)
    src = reader(path, fmt)
    try:
        described = cur.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    except duckdb.Error as exc:
        raise ImportRejected(f"cannot read {path.name} as {fmt}: {_first_line(exc)}") from None
    numbered = fmt == "parquet"
    cols = {str(r[0]): str(r[1]) for r in described if not (numbered and r[0] == "file_row_number")}
    for need in (EVENT_COLUMN, TIME_COLUMN):
        if need not in cols:
            raise ImportRejected(f"{path.name} has no column {need!r}: every event needs a name and a time")
    if not any(c in cols for c in (USER_ID, DEVICE_ID, GIO_ID_COLUMN)):
        raise ImportRejected(f"{path.name} has none of the identity columns userId, deviceId, gio_id")

    def text(name: str) -> str:
        if name not in cols:
            return "NULL::VARCHAR"
        expr, _ = _text(f"r.{q(name)}", cols[name])
        return f"NULLIF(trim({expr}), '')"

    event, user_id, user_key, device_id = text(EVENT_COLUMN), text(USER_ID), text(USER_KEY), text(DEVICE_ID)
    time_ms = _time_ms(f"r.{q(TIME_COLUMN)}", cols[TIME_COLUMN])
    gio = f"TRY_CAST({text(GIO_ID_COLUMN)} AS BIGINT)" if GIO_ID_COLUMN in cols else "NULL::BIGINT"
    known = {e.identity for e in catalog.of_kind(KeyKind.IDENTITY)}
    idents = "[" + ", ".join(sql_string(i) for i in sorted(known)) + "]::VARCHAR[]"
    links = USER_ID in cols and DEVICE_ID in cols  # rows may carry both: they link the device to the user
    idcol = (
        f"CASE WHEN {user_id} IS NOT NULL THEN coalesce({user_key}, {sql_string(LOGIN_IDENTITY)}) "
        f"WHEN {device_id} IS NOT NULL THEN {sql_string(DEVICE_IDENTITY)} END"
    )
    problems = [
        (f"{event} IS NULL", "'event is empty'"),
        (
            f"NOT regexp_full_match({event}, {sql_string(EVENT_NAME_RE.pattern)})",
            f"'event name ' || {_shown(event)} || ' is not valid (letters, digits, _ and $, not starting with a digit, "
            "at most 100 characters)'",
        ),
        (
            f"{time_ms} IS NULL",
            f"'time ' || {_shown(_raw_text(TIME_COLUMN, cols))} || ' is not ISO 8601 with an offset "
            "(2026-05-01T10:00:00+08:00) or milliseconds since the epoch'",
        ),
        (f"{time_ms} < {MIN_TIME_MS}", "'time is before 2000-01-01'"),
        (f"{time_ms} > {now_ms + FUTURE_SKEW_MS}", "'time is more than 24 hours in the future'"),
        (
            f"{user_id} IS NULL AND {device_id} IS NULL AND {text(GIO_ID_COLUMN)} IS NOT NULL AND {gio} IS NULL",
            f"'gio_id ' || {_shown(text(GIO_ID_COLUMN))} || ' is not a number'",
        ),
        (
            f"{user_id} IS NULL AND {device_id} IS NULL AND {gio} IS NULL",
            "'no identity: userId, deviceId or gio_id is needed'",
        ),
        (f"{user_key} IS NOT NULL AND {user_id} IS NULL", "'userKey without userId'"),
        (
            f"{idcol} IS NOT NULL AND NOT list_contains({idents}, {idcol})",
            f"'identity ' || {_shown(idcol)} || ' is not an identity in the catalogue of project {project_id} "
            "(add it with segport catalog add)'",
        ),
        (
            has_control(f"concat({event}, {user_id}, {user_key}, {device_id})"),
            "'event, userId, userKey or deviceId holds a control character'",
        ),
    ]
    # Checked on distinct values rather than on every row (see the check pass below): the event name (on the
    # event names) and the identity's key and value (on the distinct identities, collect_identities). A device
    # id beside a userId is not an identity value of its own, so its control characters are checked per row.
    by_value = {0, 1, 8, 9}
    if USER_ID in cols and DEVICE_ID in cols:
        problems.append((f"{user_id} IS NOT NULL AND {has_control(device_id)}", problems[9][1]))
    # One identity column and nothing else naming the user: its rows are grouped, and later joined to their
    # user, on the column as written; whether a value names anyone (not blank) is checked on its distinct values.
    alone = [c for c in (USER_ID, DEVICE_ID) if c in cols]
    nulls = False
    as_written = raw_identities and fmt == "parquet" and len(alone) == 1 and not {USER_KEY, GIO_ID_COLUMN} & set(cols)
    if as_written:
        by_value |= {5, 6, 7}  # gio_id not a number, no identity, userKey without userId
    select = {
        "_idcol": (
            f"CASE WHEN {user_id} IS NOT NULL THEN 'id_' || coalesce({user_key}, {sql_string(LOGIN_IDENTITY)}) "
            f"WHEN {device_id} IS NOT NULL THEN {sql_string('id_' + DEVICE_IDENTITY)} END"
        ),
        "_idval": f"coalesce({user_id}, {device_id})",
        "_gio": f"CASE WHEN {user_id} IS NULL AND {device_id} IS NULL THEN {gio} END",
        "_device": f"CASE WHEN {user_id} IS NOT NULL THEN {device_id} END" if links else "NULL::VARCHAR",
        **({"_idraw": f"r.{q(alone[0])}"} if as_written else {}),
        "$time": f"epoch_ms(({time_ms})::BIGINT)",
        "$event": event,
        "$type": f"coalesce({text(TYPE_COLUMN)}, '{DEFAULT_TYPE}')" if TYPE_COLUMN in cols else f"'{DEFAULT_TYPE}'",
        BATCH_COLUMN: f"TRY_CAST({text(BATCH_COLUMN)} AS BIGINT)" if BATCH_COLUMN in cols else "NULL::BIGINT",
    }
    columns: dict[str, str] = {}
    new: list[EventAttribute] = []
    for name, dtype in cols.items():
        if name in RESERVED_COLUMNS or name in (TYPE_COLUMN, BATCH_COLUMN):
            continue
        raw = f"r.{q(name)}"
        if name.startswith("$"):
            if not STANDARD_RE.match(name) or name in FIXED:
                raise ImportRejected(f"{path.name}: column {name!r} is not a standard field ($ and letters, digits, _)")
            expr, not_scalar = _text(raw, dtype)
            select[name], columns[name] = expr, "VARCHAR"
            if not_scalar:
                problems.append((f"{raw} IS NOT NULL AND {not_scalar}", f"'{name} is not a single value'"))
            problems.append((has_control(expr), f"'{name} holds a control character'"))
            continue
        if not ATTRIBUTE_KEY_RE.match(name):
            raise ImportRejected(
                f"{path.name}: column {name[:40]!r} is not a valid event attribute key (letters, digits and _, not starting with "
                "a digit, at most 100 characters)"
            )
        vtype = declared.get(name)
        if vtype is None:
            vtype = _inferred(dtype)
            new.append(EventAttribute(name, name, vtype))
        value, bad = _scalar_plan(raw, dtype, CatalogEntry(name, KeyKind.PROPERTY, name, vtype))
        select[name], columns[name] = value, vtype.sql
        if bad:
            problems.append(
                (bad, f"'attribute {name}: value ' || {_shown(f'CAST({raw} AS VARCHAR)')} || ' is not a valid {vtype}'")
            )
        if vtype is ValueType.STRING:
            problems.append((has_control(value), f"'attribute {name} holds a control character'"))
    label = _label(fmt).replace("{n}", "' || (_row + 1) || '" if fmt == "csv" else "' || _row || '")
    label = label.replace("{r}", "' || _row || '")
    problem = "CASE " + " ".join(f"WHEN {cond} THEN {msg}" for cond, msg in problems) + " END"
    per_row = [cond for i, (cond, _) in enumerate(problems) if i not in by_value]
    fast = "CASE " + " ".join(f"WHEN {cond} THEN {i}" for i, cond in enumerate(per_row)) + " END"
    rowno = "(r.file_row_number + 1)" if numbered else "row_number() OVER ()"
    body = ", ".join(f"{expr} AS {q(name)}" for name, expr in select.items())
    diagnose = (
        f"SELECT '{label}: ' || _problem FROM (SELECT {rowno} AS _row, {problem} AS _problem FROM {src} r) "
        "WHERE _problem IS NOT NULL ORDER BY _row LIMIT 1"
    )
    staged = Staged(0, columns, new, [], path.name, fmt, None, False, diagnose, _ids_check(known))
    # A Parquet file is read where it lies (a view: each pass reads only the columns it needs, and nothing is
    # copied); a text file, or one holding spool batches (some may be dropped as already stored), is parsed once
    # into a temp table. Then one pass grouped by event name evaluates every value of every row (a value that
    # cannot even be converted fails here) and the per-row checks, and yields the row count, the event names with
    # the attribute keys each carried, and whether any row or event name is bad; for a view, a second pass over
    # the identity columns alone groups the distinct identities with their first rows. (Two passes, not one with
    # GROUPING SETS: that one computed every count for each of the millions of identity groups too, and cost a
    # third more.) Only then, for a bad file, is the full check run row by row to name the first bad row and its
    # reason (the message is the same whichever check saw it).
    staged.view = numbered and BATCH_COLUMN not in cols
    staged.links = links
    as_written = as_written and staged.view
    if as_written:
        staged.raw_id = text(alone[0]).replace(f"r.{q(alone[0])}", "_idraw")
    attrs = [c for c in columns if not c.startswith("$")]
    # the values each row stores, evaluated once here so that one that cannot be converted fails before anything
    # is stored (the identity columns: only those the rows are grouped on; a view's identity key and value are
    # evaluated by the pass that groups them)
    # ($type and $batch only when the file has no such column and they are constants: a file's own column is read
    # here like any other, so that text DuckDB cannot read refuses the file here too)
    constant = [c for c, col in (("$type", TYPE_COLUMN), (BATCH_COLUMN, BATCH_COLUMN)) if col not in cols]
    skip = {"$event", *constant, *(("_idcol", "_idval", "_gio", "_device", "_idraw") if as_written else ())}
    if staged.view:
        skip |= {"_idcol", "_idval"}
    forced = [c for c in select if c not in skip] + [c for c in columns if c not in attrs]
    aggregates = ", ".join(
        ["count(*) AS _n", "count(_problem) AS _bad"]
        + [f"count({q(a)}) AS _a{i}" for i, a in enumerate(attrs)]
        + [f"count({q(c)}) AS _f{i}" for i, c in enumerate(forced)]
    )
    name_bad = (
        f'"$event" IS NULL OR NOT regexp_full_match("$event", {sql_string(EVENT_NAME_RE.pattern)}) '
        f"OR regexp_matches(\"$event\", '{CONTROL_RE}')"
    )
    counts = ", ".join(["_n", "_bad", *(f"_a{i}" for i in range(len(attrs)))])
    try:
        cur.execute(
            f"CREATE OR REPLACE TEMP {'VIEW' if staged.view else 'TABLE'} ev_stage AS SELECT {rowno} AS _row, "
            f"{fast} AS _problem, {body} FROM {src} r"
        )
        if staged.view:  # every value and the per-row checks, by event name (a handful of groups)
            cur.execute(
                f'CREATE OR REPLACE TEMP TABLE ev_groups AS SELECT "$event", {aggregates} FROM ev_stage GROUP BY 1'
            )
        if as_written:  # the distinct values of the identity column as written, each with its first row
            raw_col = "id_" + (LOGIN_IDENTITY if alone[0] == USER_ID else DEVICE_IDENTITY)
            text_col = cols[alone[0]] == "VARCHAR"
            # A text column's distinct values are grouped straight into ev_ids, as the identity values they are
            # when each is written as its identity value (the usual file); one scan of them then tells whether
            # that holds, whether any is null (a row with no identity) and whether any holds a control character
            # (collect_identities refuses the file for it, in its turn). Otherwise (blanks around a value, a blank
            # value, a number) they are the values as written, ev_rawgroups, and are grouped again below.
            cur.execute(
                f"CREATE OR REPLACE TEMP TABLE {'ev_ids' if text_col else 'ev_rawgroups'} AS SELECT "
                f"{sql_string(raw_col) + ' AS _idcol, _idraw AS _idval' if text_col else '_idraw'}, min(_row) AS _first "
                "FROM ev_stage GROUP BY _idraw"
            )
            odd = not text_col
            if text_col:
                found = cur.execute(
                    f"SELECT bool_or(_idval IS DISTINCT FROM {staged.raw_id.replace('_idraw', '_idval')}), "
                    f"bool_or(_idval IS NULL), bool_or(regexp_matches(_idval, '{CONTROL_RE}')), count(*) FROM ev_ids"
                ).fetchone()
                assert found is not None
                odd = bool(found[0])
                if odd:
                    cur.execute("ALTER TABLE ev_ids RENAME COLUMN _idval TO _idraw")
                    cur.execute("ALTER TABLE ev_ids RENAME TO ev_rawgroups")
                else:
                    nulls = bool(found[1])
                    # _idcol is the one key above: the file is refused for it when the catalogue lacks it, else
                    # only for a value holding a control character
                    staged.ids_bad = bool(found[2]) or (found[3] > 0 and raw_col not in _catalogued(known))
                    staged.identities = [raw_col] if found[3] else []
            if odd:
                # each identity value with its first row, the values written with other blanks around them as
                # one; a null value is a row with none
                cur.execute(
                    f"CREATE OR REPLACE TEMP TABLE ev_ids AS SELECT {sql_string(raw_col)} AS _idcol, _idval, _first "
                    f"FROM (SELECT {staged.raw_id} AS _idval, min(_first) AS _first FROM ev_rawgroups GROUP BY 1)"
                )
                nulls = cur.execute("SELECT bool_or(_idval IS NULL) FROM ev_ids").fetchone()[0]  # type: ignore[index]
                # join the rows on the value as written (ev_rawmap), not on the identity value
                cur.execute("CREATE OR REPLACE TEMP TABLE ev_rawids AS SELECT _idraw FROM ev_rawgroups")
            staged.raw_map = odd
            staged.ids_ready = True
        elif staged.view:  # the distinct identities (nothing is dropped from a view later)
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE ev_ids AS SELECT _idcol, _idval, min(_row) AS _first FROM ev_stage "
                "WHERE _idcol IS NOT NULL GROUP BY _idcol, _idval"
            )
            staged.ids_ready = True
        groups = "ev_groups" if staged.view else f'(SELECT "$event", {aggregates} FROM ev_stage GROUP BY 1)'
        grouped = cur.execute(f'SELECT "$event", {counts}, ({name_bad}) AS _bad_name FROM {groups}').fetchall()
        cur.execute("DROP TABLE IF EXISTS ev_groups")
        cur.execute("DROP TABLE IF EXISTS ev_rawgroups")
        bad_row = None
    except duckdb.Error as exc:
        # a value the staging could not even convert: name its row from the file (on a connection of its own,
        # as the failed statement may have aborted the caller's transaction)
        try:
            with cur.cursor() as diag:
                bad_row = diag.execute(diagnose).fetchone()
        except duckdb.Error:
            bad_row = None
        if bad_row is None:
            raise ImportRejected(f"cannot read {path.name} as {fmt}: {_first_line(exc)}") from None
        raise ImportRejected(f"{path.name}: {bad_row[0]}") from None
    if any(g[2] or g[-1] for g in grouped):
        refuse(cur, staged)
    if as_written and nulls:
        refuse(cur, staged)  # a row with no identity
    staged.rows = sum(int(g[1]) for g in grouped)
    if staged.view and raw_identities:  # (ClickHouse sorts every insert itself)
        staged.in_order = in_time_order(cur, path, src, cols[TIME_COLUMN])
    events = {str(g[0]): [a for a, n in zip(attrs, g[3 : 3 + len(attrs)], strict=True) if n] for g in grouped}
    staged.events = dict(sorted(events.items()))
    return staged


def in_time_order(cur: duckdb.DuckDBPyConnection, path: Path, src: str, dtype: str) -> bool:
    """Whether a Parquet file's rows are in time order: no row's ``time`` before the previous row's (an integer
    or timestamp column; a text column is not looked at). The file's own statistics answer first (a row group
    starting before the previous one ends means no); otherwise one streaming pass over the time column alone
    counts the descents (``lag() OVER ()``: the scan's order is the file's, as the insert's is, with
    ``preserve_insertion_order``). About 2% of an import's time; the sort it saves costs far more."""
    if dtype not in _INT_TYPES and not dtype.startswith("TIMESTAMP"):
        return False
    if dtype in _INT_TYPES:
        stats = cur.execute(
            "SELECT stats_min_value, stats_max_value FROM parquet_metadata(?) WHERE path_in_schema = ? "
            "ORDER BY row_group_id",
            [str(path), TIME_COLUMN],
        ).fetchall()
        if stats and all(lo is not None and hi is not None for lo, hi in stats):
            bounds = [(int(lo), int(hi)) for lo, hi in stats]
            if any(lo < before for (_, before), (lo, _) in zip(bounds, bounds[1:], strict=False)):
                return False
    t = f"r.{q(TIME_COLUMN)}"
    row = cur.execute(f"SELECT count(*) FROM (SELECT {t} < lag({t}) OVER () AS d FROM {src} r) WHERE d").fetchone()
    return row is not None and int(row[0]) == 0


def _catalogued(known: set[str]) -> list[str]:
    """The identity column keys (``id_`` and the identity) of the catalogue's identities, sorted."""
    return ["id_" + i for i in sorted(known)]


def _ids_check(known: set[str]) -> str:
    """SQL over ``ev_ids``: true for an identity that is not in the catalogue or holds a control character."""
    listed = "[" + ", ".join(sql_string(k) for k in _catalogued(known)) + "]::VARCHAR[]"
    return f"NOT list_contains({listed}, _idcol) OR regexp_matches(_idcol || _idval, '{CONTROL_RE}')"


def refuse(cur: duckdb.DuckDBPyConnection, staged: Staged) -> NoReturn:
    """Refuse the file naming its first bad row (the full check, row by row, on a connection of its own)."""
    try:
        with cur.cursor() as diag:
            bad_row = diag.execute(staged.diagnose).fetchone()
    except duckdb.Error as exc:
        raise ImportRejected(f"cannot read {staged.file} as {staged.fmt}: {_first_line(exc)}") from None
    raise ImportRejected(f"{staged.file}: {bad_row[0] if bad_row else 'a row is refused'}")


def collect_identities(cur: duckdb.DuckDBPyConnection, staged: Staged) -> None:
    """The distinct identities of the staged rows with the first row naming each, in ``ev_ids(_idcol, _idval,
    _first)`` (one pass over the identity columns alone); sets ``staged.identities``."""
    if not staged.ids_ready:
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE ev_ids AS SELECT _idcol, _idval, min(_row) AS _first FROM ev_stage "
            "WHERE _idcol IS NOT NULL GROUP BY _idcol, _idval"
        )
    if staged.ids_bad is not None:  # (the check pass looked)
        if staged.ids_bad:
            refuse(cur, staged)
        return
    if cur.execute(f"SELECT 1 FROM ev_ids WHERE {staged.ids_check} LIMIT 1").fetchone() is not None:
        refuse(cur, staged)
    staged.identities = sorted(str(r[0]) for r in cur.execute("SELECT DISTINCT _idcol FROM ev_ids").fetchall())


def _raw_text(name: str, cols: dict[str, str]) -> str:
    expr, _ = _text(f"r.{q(name)}", cols[name])
    return expr


def _shown(expr: str) -> str:
    """A value in a message: quoted, cut at 40 characters, 'null' when missing."""
    return f"coalesce('''' || left({expr}, 40) || '''', 'null')"


def _time_ms(raw: str, dtype: str) -> str:
    """Milliseconds since the epoch of a ``time`` value (NULL when it is not one)."""
    if dtype in _INT_TYPES:
        return f"CAST({raw} AS BIGINT)"
    if dtype == "TIMESTAMP WITH TIME ZONE":
        return f"epoch_ms({raw})"
    if dtype.startswith("TIMESTAMP"):  # a Parquet timestamp without a zone is read as UTC
        return f"epoch_ms(CAST({raw} AS TIMESTAMP))"
    text, _ = _text(raw, dtype)
    return (
        f"(CASE WHEN regexp_full_match({text}, '{_MS_RE}') THEN TRY_CAST(trim({text}) AS BIGINT) "
        f"WHEN regexp_full_match({text}, '{_ISO_RE}') THEN epoch_ms(TRY_CAST(trim({text}) AS TIMESTAMPTZ)) END)"
    )


def _inferred(dtype: str) -> ValueType:
    """The type an attribute met for the first time is stored as: numbers and dates the file types as such
    (Parquet, JSON) keep their type; everything else, and every CSV column, is a string."""
    if dtype in _INT_TYPES:
        return ValueType.INT
    if dtype in _FLOAT_TYPES or dtype.startswith("DECIMAL"):
        return ValueType.DOUBLE
    if dtype == "DATE":
        return ValueType.DATE
    return ValueType.STRING


def event_names(cur: duckdb.DuckDBPyConnection, staged: Staged) -> dict[str, list[str]]:
    """Each staged event name and the attribute keys its rows carry."""
    if staged.events is not None:
        return staged.events
    attrs = [c for c in staged.columns if not c.startswith("$")]
    counts = ", ".join(f"count({q(a)})" for a in attrs)
    rows = cur.execute(
        f'SELECT "$event"{", " + counts if counts else ""} FROM ev_stage GROUP BY 1 ORDER BY 1'
    ).fetchall()
    return {r[0]: [a for a, n in zip(attrs, r[1:], strict=True) if n] for r in rows}


def store_columns(cur: duckdb.DuckDBPyConnection, project_id: str) -> dict[str, str]:
    """The event table's columns and their DuckDB types (empty when the project has none yet)."""
    rows = cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'",
        [f"events_{project_id}"],
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def declared_types(attributes: list[EventAttribute], have: dict[str, str]) -> dict[str, ValueType]:
    """The type each attribute is stored as: the store's column where there is one, else the catalogue's."""
    by_sql = {t.sql: t for t in ValueType}
    out = {a.key: a.type for a in attributes}
    for name, sql in have.items():
        if name not in FIXED and not name.startswith("$") and sql in by_sql:
            out[name] = by_sql[sql]
    return out


def ensure_store(cur: duckdb.DuckDBPyConnection, project_id: str, columns: dict[str, str]) -> None:
    """The project's event table, with a column for each of ``columns`` it lacks."""
    table = events_table(project_id)
    cur.execute(
        f'CREATE TABLE IF NOT EXISTS {table} (gio_id BIGINT NOT NULL, "$time" TIMESTAMP NOT NULL, '
        f'"$event" VARCHAR NOT NULL, "$type" VARCHAR NOT NULL, "{BATCH_COLUMN}" BIGINT)'
    )
    cur.execute(
        "CREATE TABLE IF NOT EXISTS segport_event_batches (project VARCHAR NOT NULL, batch BIGINT NOT NULL, "
        "PRIMARY KEY (project, batch))"
    )
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {LINKS} (project VARCHAR NOT NULL, device VARCHAR NOT NULL, "
        "gio_id BIGINT NOT NULL, merged_from BIGINT, linked_at TIMESTAMP NOT NULL DEFAULT current_timestamp, "
        "PRIMARY KEY (project, device))"
    )
    have = store_columns(cur, project_id)
    for name, sql in columns.items():
        if name not in have:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {q(name)} {sql}")


def skip_loaded_batches(cur: duckdb.DuckDBPyConnection, staged: Staged, project_id: str) -> list[int]:
    """Drop the staged rows of spool batches the store already holds; returns those batches."""
    done = [
        int(r[0])
        for r in cur.execute(
            f'SELECT DISTINCT s."{BATCH_COLUMN}" FROM ev_stage s JOIN segport_event_batches b '
            f'ON b.project = ? AND b.batch = s."{BATCH_COLUMN}" ORDER BY 1',
            [project_id],
        ).fetchall()
    ]
    if done:
        drop_batches(cur, staged, done)
    return done


def drop_batches(cur: duckdb.DuckDBPyConnection, staged: Staged, batches: list[int]) -> None:
    """Drop the staged rows of ``batches`` (staged rows holding batches are always a table, never a view)."""
    cur.execute(f'DELETE FROM ev_stage WHERE "{BATCH_COLUMN}" IN (SELECT unnest(?::BIGINT[]))', [batches])
    staged.rows = int(cur.execute("SELECT count(*) FROM ev_stage").fetchone()[0])  # type: ignore[index]
    staged.events = None


def resolve_identities(
    cur: duckdb.DuckDBPyConnection, catalog: Catalog, staged: Staged, users: str, project_id: str
) -> int:
    """Map every staged identity to a ``gio_id`` in ``ev_map(_idcol, _idval, gio_id)``, adding a user for each
    identity value no user holds yet, numbered in the order of their first rows. Returns the users added."""
    bad = None
    if not staged.raw_id:  # (a file grouped on its one identity column as written has no gio_id column)
        bad = cur.execute(
            f"SELECT s._row, s._gio FROM ev_stage s WHERE s._gio IS NOT NULL AND s._gio NOT IN (SELECT gio_id FROM {users}) "
            "ORDER BY s._row LIMIT 1"
        ).fetchone()
    if bad is not None:
        raise ImportRejected(f"{staged.at(int(bad[0]))}: gio_id {bad[1]} is not a user of project {project_id}")
    collect_identities(cur, staged)
    cur.execute("CREATE OR REPLACE TEMP TABLE ev_map (_idcol VARCHAR, _idval VARCHAR, gio_id BIGINT)")
    for col in staged.identities:
        entry = catalog.get(col)
        assert entry is not None  # the rows were checked against the catalogue
        c = q(col)
        held = (
            f"(SELECT gio_id, unnest({c}) AS v FROM {users})"
            if entry.multi
            else f"(SELECT gio_id, {c} AS v FROM {users})"
        )
        linked = ""
        if col == DEVICE_COLUMN:  # a device linked to a user is that user, whoever else holds its id
            cur.execute(
                f"INSERT INTO ev_map SELECT ?, i._idval, l.gio_id FROM ev_ids i JOIN {LINKS} l ON l.project = ? "
                "AND l.device = i._idval WHERE i._idcol = ?",
                [col, project_id, col],
            )
            linked = f" AND i._idval NOT IN (SELECT _idval FROM ev_map WHERE _idcol = {sql_string(col)})"
        cur.execute(
            f"INSERT INTO ev_map SELECT ?, i._idval, min(u.gio_id) FROM ev_ids i JOIN {held} u ON u.v = i._idval "
            f"WHERE i._idcol = ?{linked} GROUP BY i._idval",
            [col, col],
        )
    held = cur.execute("SELECT 1 FROM ev_map LIMIT 1").fetchone() is not None  # some identity has a user already
    nxt = int(cur.execute("SELECT next_gio_id FROM segport_state WHERE project = ?", [project_id]).fetchone()[0])  # type: ignore[index]
    cur.execute(new_users_sql(nxt))
    added = int(cur.execute("SELECT count(*) FROM ev_new").fetchone()[0])  # type: ignore[index]
    if added:
        for col in staged.identities:
            entry = catalog.get(col)
            assert entry is not None
            value = "[_idval]" if entry.multi else "_idval"
            # (ev_new is in gio_id order, and a scan of it keeps that order: the users are appended in it)
            cur.execute(
                f"INSERT INTO {users} (gio_id, {q(col)}) SELECT gio_id, {value} FROM ev_new WHERE _idcol = ?",
                [col],
            )
        cur.execute("UPDATE segport_state SET next_gio_id = next_gio_id + ? WHERE project = ?", [added, project_id])
        if held:
            cur.execute("INSERT INTO ev_map SELECT * FROM ev_new")
        else:  # every identity is new (a first import): ev_new is the map, renamed rather than copied
            cur.execute("DROP TABLE ev_map")
            cur.execute("ALTER TABLE ev_new RENAME TO ev_map")
    if held or not added:
        cur.execute("DROP TABLE ev_new")
    if staged.raw_map:  # each value as written -> its user (ev_map holds one identity column)
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE ev_rawmap AS SELECT r._idraw, m.gio_id FROM ev_rawids r "
            f"JOIN ev_map m ON m._idval = {staged.raw_id.replace('_idraw', 'r._idraw')}"
        )
    return added


def new_users_sql(next_gio_id: int) -> str:
    """``ev_new``: the staged identities no user holds, numbered from ``next_gio_id`` in the order of the rows
    that first name them (no two identities share a first row), and stored in that order: one sort numbers them
    (``row_number() OVER ()`` over the sorted rows, which keeps their order with ``preserve_insertion_order``) and
    leaves them in ``gio_id`` order for the users insert, which then needs no sort of its own."""
    return (
        f"CREATE OR REPLACE TEMP TABLE ev_new AS SELECT _idcol, _idval, {next_gio_id - 1} + row_number() OVER () "
        "AS gio_id FROM (SELECT _idcol, _idval FROM ev_ids i WHERE NOT EXISTS (SELECT 1 FROM ev_map m "
        "WHERE m._idcol = i._idcol AND m._idval = i._idval) ORDER BY _first)"
    )


def final_rows(staged: Staged, ordered: bool = True) -> tuple[list[str], str]:
    """(the event table's columns, the SELECT of the staged rows with their ``gio_id``, in time order unless
    ``ordered`` is false: ClickHouse sorts each insert by its own key). Rows of the same time come in no
    particular order."""
    names = [*FIXED, *staged.columns]
    if staged.raw_id:  # one identity column, matched as written: one key, nothing computed per row
        on = "ev_rawmap m ON m._idraw = s._idraw" if staged.raw_map else "ev_map m ON m._idval = s._idraw"
        gio, join = "m.gio_id AS gio_id", on
    else:
        gio, join = "coalesce(s._gio, m.gio_id) AS gio_id", "ev_map m ON m._idcol = s._idcol AND m._idval = s._idval"
    values = [gio, *(f"s.{q(n)}" for n in names[1:])]
    return names, f"SELECT {', '.join(values)} FROM ev_stage s LEFT JOIN {join}" + (
        ' ORDER BY s."$time"' if ordered else ""
    )


def staged_links(cur: duckdb.DuckDBPyConnection) -> None:
    """``ev_links(device, gio_id, _first)``: each device id that rows carry beside a userId, with the user of the
    first such row (a device links to one user: the first one wins) and that row."""
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE ev_links AS SELECT s._device AS device, arg_min(m.gio_id, s._row) AS gio_id, "
        "min(s._row) AS _first FROM ev_stage s JOIN ev_map m ON m._idcol = s._idcol AND m._idval = s._idval "
        "WHERE s._device IS NOT NULL GROUP BY s._device"
    )


def anonymous_test(catalog: Catalog, alias: str) -> str:
    """SQL: true where the user ``alias`` holds no single-valued identity (no login id of any kind)."""
    single = [e.key for e in catalog.of_kind(KeyKind.IDENTITY) if not e.multi]
    if not single:
        return "true"
    return " AND ".join(f"{alias}.{q(k)} IS NULL" for k in single)


def plan_links(cur: duckdb.DuckDBPyConnection) -> int:
    """From ``ev_holders(device, gio_id, _first, holder, anonymous, devices)`` (each device to link, the user of
    its first row, that row, the user holding the device now if any, whether that one holds no login id, and its
    other device ids not linked yet): ``ev_moves(merged_from, gio_id)``, the anonymous users merged into a login
    user (each into the user its first-linked device names), and ``ev_newlinks(device, gio_id, merged_from)``.
    Returns the users merged."""
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE ev_moves AS SELECT holder AS merged_from, arg_min(gio_id, _first) AS gio_id "
        "FROM ev_holders WHERE holder IS NOT NULL AND anonymous AND holder <> gio_id GROUP BY holder"
    )
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE ev_newlinks AS SELECT device, gio_id, CASE WHEN holder <> gio_id THEN holder "
        "END AS merged_from FROM ev_holders h WHERE holder IS NULL OR holder = gio_id "
        "OR holder IN (SELECT merged_from FROM ev_moves m WHERE m.gio_id = h.gio_id)"
    )
    # the merged users' other device ids follow them
    cur.execute(
        "INSERT INTO ev_newlinks SELECT DISTINCT ON (d.v) d.v, m.gio_id, m.merged_from FROM (SELECT DISTINCT holder, "
        "unnest(devices) AS v FROM ev_holders WHERE holder IS NOT NULL) d JOIN ev_moves m ON m.merged_from = d.holder "
        "WHERE d.v NOT IN (SELECT device FROM ev_newlinks) ORDER BY d.v, m.gio_id"
    )
    return int(cur.execute("SELECT count(*) FROM ev_moves").fetchone()[0])  # type: ignore[index]


def link_devices(cur: duckdb.DuckDBPyConnection, catalog: Catalog, staged: Staged, users: str, project_id: str) -> int:
    """Link each device id that rows carry beside a userId to that user (docs/events.md, "Identity links"):
    a device not linked yet is linked to the user of its first such row; if an anonymous user (one holding no
    login id) held it, that user's events move to the login user and its other device ids are linked too. A
    device already linked, or held by another user with a login id, stays as it is. Returns the users merged."""
    if not staged.links:
        return 0
    staged_links(cur)
    dev = q(DEVICE_COLUMN)
    linked = f"(SELECT device FROM {LINKS} WHERE project = {sql_string(project_id)})"
    # the user holding each device now (the lowest gio_id, as identities resolve), whether it is anonymous, and
    # its device ids
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE ev_holders AS SELECT l.device, l.gio_id, l._first, h.holder, h.anonymous, "
        "h.devices FROM ev_links l LEFT JOIN (SELECT v, arg_min(gio_id, gio_id) AS holder, arg_min(anonymous, gio_id) "
        "AS anonymous, arg_min(devices, gio_id) AS devices FROM (SELECT u.gio_id, unnest(u." + dev + ") AS v, "
        f"({anonymous_test(catalog, 'u')}) AS anonymous, u.{dev} AS devices "
        f"FROM {users} u) GROUP BY v) h ON h.v = l.device WHERE l.device NOT IN {linked}"
    )
    merged = plan_links(cur)
    cur.execute(
        f"INSERT INTO {LINKS} (project, device, gio_id, merged_from) SELECT ?, * FROM ev_newlinks", [project_id]
    )
    if merged:
        cur.execute(
            f"UPDATE {events_table(project_id)} e SET gio_id = m.gio_id FROM ev_moves m WHERE e.gio_id = m.merged_from"
        )
    for table in ("ev_links", "ev_holders", "ev_moves", "ev_newlinks"):
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    return merged
