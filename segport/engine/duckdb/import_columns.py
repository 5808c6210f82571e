"""Reading an import file into typed columns: its DuckDB reader, and one checked SQL expression per catalogue key
(how a raw value becomes a typed one, and when it is invalid). Used by :mod:`segport.engine.duckdb.importer`,
which loads and merges the rows (and by the ClickHouse engine, which stages its imports in DuckDB). The file's
format is told by :func:`segport.domain.formats.detect_format`, before any engine sees the file.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, ValueType, canonical_key
from segport.engine.duckdb.import_jsonl import DOUBLE_DIGITS, RISKY, checked_jsonl, diagnose_jsonl
from segport.engine.duckdb.messages import engine_words
from segport.engine.duckdb.sql import sql_string
from segport.errors import ImportRejected

Progress = Callable[[str], None]
BAD = "segport: invalid value"  # raised by error() inside a load statement
# Control characters other than tab and line breaks are refused in imported text (docs/limits.md): a NUL ends
# strings in many readers of the exported files, and PostgreSQL's text type refuses it outright.
CONTROL_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
# Every character CONTROL_RE finds and tab and line breaks too, as a GLOB pattern (built with chr: a SQL literal
# cannot hold a NUL). DuckDB evaluates a GLOB of a dictionary-encoded Parquet column once per dictionary entry
# (it cannot throw; a regular expression can, so it runs on every row), and a GLOB with two ranges is no slower
# than the regular expression on a column read row by row (docs/performance.md, branch w4).
_CONTROL_GLOB = "('*[' || chr(0) || '-' || chr(31) || chr(127) || ']*')"


def has_control(expr: str) -> str:
    """SQL: whether the text ``expr`` holds a character of CONTROL_RE (null for null), as
    ``regexp_matches(expr, CONTROL_RE)`` answers: the GLOB first, the regular expression only on the values it
    finds (those with a tab or a line break among them)."""
    return f"({expr} GLOB {_CONTROL_GLOB} AND regexp_matches({expr}, '{CONTROL_RE}'))"


_INT_RE = r"^\s*[+-]?[0-9]+\s*$"
_DOUBLE_RE = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
_DATE_RE = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$"
_TEXT_RE = {ValueType.INT: _INT_RE, ValueType.DOUBLE: _DOUBLE_RE, ValueType.DATE: _DATE_RE}
_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "HUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}


# JSON Lines: DuckDB would read a string that looks like a date or a time as one (``"2020-1-1"`` as 2020-01-01,
# where CSV refuses it); such columns are read as text and checked by the same rules as CSV's
_TEMPORAL = re.compile(r"\b(?:DATE|TIME|TIMESTAMP(?:_[A-Z]+)?(?: WITH TIME ZONE)?|UUID|INTERVAL)\b")


@contextlib.contextmanager
def open_source(
    cur: duckdb.DuckDBPyConnection, path: Path, fmt: str, catalog: Catalog
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """The file as a DuckDB relation (SQL) and its columns ``(name, type)``; unreadable files are refused in
    segport's words. A JSON Lines file's numbers are checked by :func:`checked_jsonl` (a copy it makes is
    removed when the block ends)."""
    staged = path
    try:
        described = _describe(cur, path, fmt, path)
        if fmt == "parquet":
            described = [d for d in described if d[0] != "file_row_number"]
        if fmt == "jsonl":
            if [d[0] for d in described] == ["json"]:  # DuckDB names a line that is no object 'json'
                diagnose_jsonl(path)  # refuses the first line that is not an object
                raise ImportRejected(f'{path.name} has no keys: each line is one user, {{"key": value, ...}}')
            text = ("VARCHAR", "VARCHAR[]", "NULL")  # a date-like string is still text
            numbered = any(_is_string(catalog, n) and _TEMPORAL.sub("VARCHAR", t) not in text for n, t in described)
            staged = checked_jsonl(path, catalog, _scratch(cur), risky=None if numbered else _risky_lines(cur, path))
            if staged != path:
                described = _describe(cur, staged, fmt, path)
            described = [(n, _TEMPORAL.sub("VARCHAR", t)) for n, t in described]
            cols = "{" + ", ".join(f"{sql_string(n)}: {sql_string(t)}" for n, t in described) + "}"
            src = f"read_json({sql_string(str(staged))}, format='newline_delimited', columns={cols})"
        else:
            src = reader(path, fmt)
        yield src, described
    finally:
        if staged != path:
            staged.unlink(missing_ok=True)


def _describe(cur: duckdb.DuckDBPyConnection, path: Path, fmt: str, original: Path) -> list[tuple[str, str]]:
    """The columns DuckDB reads from ``path`` (the user's file ``original``, or a copy of it)."""
    try:
        return [(str(r[0]), str(r[1])) for r in cur.execute(f"DESCRIBE SELECT * FROM {reader(path, fmt)}").fetchall()]
    except duckdb.Error as exc:
        if fmt == "jsonl":
            diagnose_jsonl(original)
        raise ImportRejected(f"cannot read {original.name} as {fmt}: {_first_line(exc)}") from None


def _risky_lines(cur: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[int, int | None, bytes]] | None:
    """The lines of a JSON Lines file that may hold a double Python must look at (line number, row number, text),
    found by DuckDB; None (read every line) if DuckDB cannot read the file as lines."""
    lines = (
        f"read_csv({sql_string(str(path))}, header=false, columns={{'line': 'VARCHAR'}}, delim='\\0', quote='', "
        "escape='', auto_detect=false, strict_mode=false)"
    )
    try:
        found = cur.execute(
            f"SELECT n, r, line FROM (SELECT row_number() OVER () AS n, line, count(NULLIF(trim(line), '')) OVER "
            f"(ROWS UNBOUNDED PRECEDING) AS r FROM {lines}) WHERE regexp_matches(line, ?) ORDER BY n",
            [RISKY],
        ).fetchall()
    except duckdb.Error:
        return None
    return [(int(n), int(r), str(line).encode()) for n, r, line in found]


def _is_string(catalog: Catalog, name: str) -> bool:
    entry = catalog.get(canonical_key(name.strip()))
    return entry is not None and entry.type is ValueType.STRING


def _scratch(cur: duckdb.DuckDBPyConnection) -> Path:
    """The folder of the database being imported into (a copy of a file goes there, not to a small /tmp)."""
    row = cur.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return Path(row[0]).parent if row and row[0] else Path(tempfile.gettempdir())


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
    except UnicodeDecodeError:
        raise ImportRejected(f"{path.name} is not UTF-8 text (save it as UTF-8)") from None
    except (OSError, csv.Error) as exc:
        raise ImportRejected(
            f"cannot read the header of {path.name}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not header or not any(h.strip() for h in header):
        raise ImportRejected(f"{path.name} has no header line")
    names = [h.strip() for h in header]
    empty = [i for i, n in enumerate(names, 1) if not n]
    if empty:  # checked here: DuckDB would report it as an internal binder error (struct_pack)
        raise ImportRejected(f"column {empty[0]} of the header of {path.name} has no name: every column needs a key")
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
    text: str | None = None  # SQL: a string key's text (multi-valued: its items joined), for the control check
    problems: tuple[tuple[str, str], ...] = ()  # (SQL condition, why) tried first when a row is diagnosed


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
    exact = f" OR {_inexact_double(text)}" if t is ValueType.DOUBLE else ""
    bad = f"({blank_free} IS NOT NULL AND (NOT regexp_full_match({text}, '{_TEXT_RE[t]}') OR {value} IS NULL{exact}))"
    if not_scalar:
        bad = f"(({raw} IS NOT NULL AND {not_scalar}) OR {bad})"
    return value, bad


def _inexact_double(text: str) -> str:
    """SQL: true where a valid decimal ``text`` would not be stored as written (the rule of
    :func:`segport.engine.duckdb.import_jsonl.double_problem`): beyond the range of a double, a non-zero value
    that would be 0, or more than 17 significant digits."""
    digits = f"length(trim(replace(regexp_extract({text}, '^\\s*[+-]?([0-9]*\\.?[0-9]*)', 1), '.', ''), '0'))"
    value = f"TRY_CAST(trim({text}) AS DOUBLE)"
    # at most 17 characters and no exponent: always exact enough (the common case, checked cheaply)
    return (
        f"((length({text}) > {DOUBLE_DIGITS} OR contains(lower({text}), 'e')) AND (NOT isfinite({value}) "
        f"OR ({value} = 0 AND {digits} > 0) OR {digits} > {DOUBLE_DIGITS}))"
    )


def list_problems(raw: str, dtype: str) -> tuple[tuple[str, str], ...]:
    """What may be wrong with a list value as a whole: (SQL condition on the raw column, why)."""
    if not dtype.endswith("[]"):
        return ()
    inner = dtype[:-2]
    found = [(f"len(list_filter({raw}, lambda x: x IS NULL)) > 0", NULL_ITEM)]
    if inner == "JSON":
        found.insert(0, (f"len(list_filter({raw}, lambda x: json_type(x) = 'NULL')) > 0", NULL_ITEM))
        found.append((f"len(list_filter({raw}, lambda x: json_type(x) IN ('ARRAY', 'OBJECT'))) > 0", NESTED_ITEM))
    elif inner.endswith("]") or inner.startswith(("STRUCT", "MAP", "UNION")):
        found.append((f"len({raw}) > 0", NESTED_ITEM))
    return tuple(found)


NULL_ITEM = "holds a null item (leave nulls out of a list: an empty or missing list is the null)"
NESTED_ITEM = "holds a list or an object as an item (a multi-valued key takes a flat list of values)"


def _multi_plan(raw: str, dtype: str, entry: CatalogEntry) -> tuple[str, str | None]:
    """A multi-valued key: a list column, or text ``a||b``. Empty text or an empty list is null.

    A list holding a null, a list or an object is refused (engines would store a null item differently, and a
    nested list has no ``a||b`` form)."""
    nested = None
    if dtype.endswith("[]"):
        inner = dtype[:-2]
        item = _json_text("x") if inner == "JSON" else ("x" if inner == "VARCHAR" else "CAST(x AS VARCHAR)")
        items = f"list_transform({raw}, lambda x: {item})"
        if inner == "JSON":
            nested = f"len(list_filter({raw}, lambda x: json_type(x) IN ('ARRAY', 'OBJECT'))) > 0"
        elif inner.endswith("]") or inner.startswith(("STRUCT", "MAP", "UNION")):
            nested = f"len({raw}) > 0"
    else:
        text, _ = _text(raw, dtype)
        items = f"string_split({text}, '||')"
    items = f"(CASE WHEN {raw} IS NULL OR len({items}) = 0 OR {items} = [''] THEN NULL ELSE {items} END)"
    odd = f"len(list_filter({items}, lambda x: x IS NULL)) > 0" + (f" OR {nested}" if nested else "")
    if entry.type is ValueType.STRING:
        return items, f"({items} IS NOT NULL AND ({odd}))"
    value = f"list_transform({items}, lambda x: TRY_CAST(trim(x) AS {entry.type.sql}))"
    regex = _TEXT_RE[entry.type]
    exact = f" OR {_inexact_double('x')}" if entry.type is ValueType.DOUBLE else ""
    bad = (
        f"({items} IS NOT NULL AND ({odd} OR len(list_filter({items}, lambda x: x IS NULL OR NOT regexp_full_match(x, "
        f"'{regex}'){exact})) > 0 OR list_contains({value}, NULL)))"
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
        if entry.key in catalog.computed:  # its values belong to its definition (docs/tags.md)
            raise ImportRejected(
                f"column {name!r} is the computed tag {entry.key}: its values come from its definition, not from "
                "a profile import; leave the column out of the file"
            )
        if key in seen:
            raise ImportRejected(f"column {name!r} appears twice")
        seen.add(key)
        raw = f"r.{quote_ident_any(name)}"
        value, bad = (_multi_plan if entry.multi else _scalar_plan)(raw, dtype, entry)
        text = None
        if entry.type is ValueType.STRING:
            text = f"array_to_string({value}, '')" if entry.multi else value
        problems = list_problems(raw, dtype) if entry.multi else ()
        columns.append(_Column(name, entry, value, bad, text, problems))
    return columns


def quote_ident_any(name: str) -> str:
    """Quote a column name read from a file (any text)."""
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: Exception) -> str:
    return engine_words(exc, internal="its columns are not laid out in a way segport can read")
