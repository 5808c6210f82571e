"""ClickHouse SQL for segport: column types, and how values are rendered in exports and pages (its rule SQL is
:mod:`segport.engine.clickhouse.rules`).

Every expression here mirrors one in :mod:`segport.engine.duckdb.sql` / :mod:`segport.engine.duckdb.pages` for
DuckDB, so that the two engines write the same bytes for the same data.
Where ClickHouse renders a value differently from DuckDB (a double: ``100`` against ``100.0``) the expression
spells DuckDB's rendering out.

Storage: single-valued keys are ``Nullable(T)``; multi-valued keys are ``Array(T)`` (ClickHouse has no
nullable arrays), where an empty array is a missing value — as in DuckDB, where imports store an empty list as
NULL and every reader treats the two alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from segport.domain.export import EXCEL_FORMULA_START
from segport.domain.keys import CatalogEntry, KeyKind, ValueType, quote_ident

CH_TYPES = {ValueType.STRING: "String", ValueType.INT: "Int64", ValueType.DOUBLE: "Float64", ValueType.DATE: "Date32"}


def column_type(entry: CatalogEntry) -> str:
    base = CH_TYPES[entry.type]
    return f"Array({base})" if entry.multi else f"Nullable({base})"


def ch_string(text: str) -> str:
    """A ClickHouse string literal (backslash escapes, unlike standard SQL)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ch_ident(name: str) -> str:
    """A quoted identifier for any text (display names become column aliases in CSV headers)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def duckdb_double(x: str) -> str:
    """A non-null Float64 as DuckDB's ``CAST(x AS VARCHAR)`` writes it (Python's ``repr``):
    the shortest round-trip digits, fixed notation for decimal exponents -4..15 (``100.0``, ``0.0001``), else
    scientific with a signed exponent of at least two digits (``1e+16``, ``2.5e-07``).

    ClickHouse's ``toString`` gives the same shortest digits in another layout (``100``, ``1e21``,
    ``0.00001``), so the digits and the exponent are taken from it and laid out again."""
    s = f"toString(abs({x}))"
    mant = f"splitByChar('e', {s})[1]"
    exp = f"if(position({s}, 'e') > 0, toInt32(splitByChar('e', {s})[2]), 0)"
    ip = f"splitByChar('.', {mant})[1]"
    fp = f"if(position({mant}, '.') > 0, splitByChar('.', {mant})[2], '')"
    digits_all = f"concat({ip}, {fp})"
    lead = f"(length({digits_all}) - length(trimLeft({digits_all}, '0')))"
    d = f"trimRight(trimLeft({digits_all}, '0'), '0')"
    e = f"({exp} + length({ip}) - 1 - {lead})"  # the exponent of the first significant digit
    n = f"length({d})"
    fixed = (
        f"multiIf({e} >= {n} - 1, concat({d}, repeat('0', toUInt32({e} - {n} + 1)), '.0'), "
        f"{e} >= 0, concat(substring({d}, 1, {e} + 1), '.', substring({d}, {e} + 2)), "
        f"concat('0.', repeat('0', toUInt32(-{e} - 1)), {d}))"
    )
    sci = (
        f"concat(substring({d}, 1, 1), if({n} > 1, concat('.', substring({d}, 2)), ''), 'e', "
        f"if({e} < 0, '-', '+'), if(abs({e}) < 10, '0', ''), toString(abs({e})))"
    )
    body = f"if({e} >= -4 AND {e} < 16, {fixed}, {sci})"
    sign = f"if(startsWith(toString({x}), '-'), '-', '')"  # -0.0 too, which DuckDB writes as -0.0
    return f"concat({sign}, if({d} = '', '0.0', {body}))"


def scalar_text(entry: CatalogEntry, expr: str) -> str:
    """A non-null scalar value of ``entry``'s type as text."""
    if entry.type is ValueType.STRING:
        return expr
    if entry.type is ValueType.DOUBLE:
        return duckdb_double(expr)
    return f"toString({expr})"


def _excel(expr: str) -> str:
    """Mirror of the DuckDB engine's ``_excel``: the same regular expression (RE2 in both)."""
    return f"if(match({expr}, {ch_string(EXCEL_FORMULA_START)}), concat('''', {expr}), {expr})"


def rendered(entry: CatalogEntry, alias: str = "u", *, excel_safe: bool = False) -> str:
    """Mirror of :func:`segport.engine.duckdb.sql.rendered`: a ``Nullable(String)``, lists joined by ``||``."""
    col = f"{alias}.{quote_ident(entry.key)}"
    if entry.multi:
        items = col if entry.type is ValueType.STRING else f"arrayMap(x -> {scalar_text(entry, 'x')}, {col})"
        expr = f"nullIf(arrayStringConcat({items}, '||'), '')"
    elif entry.type is ValueType.STRING:
        expr = col
    else:
        expr = f"if(isNull({col}), NULL, {scalar_text(entry, f'assumeNotNull({col})')})"
    if excel_safe and entry.type is ValueType.STRING:
        expr = _excel(expr)
    return f"CAST({expr}, 'Nullable(String)')"


def json_value(entry: CatalogEntry, alias: str = "u", *, excel_safe: bool = False) -> tuple[str, str]:
    """Mirror of :func:`segport.engine.duckdb.sql.json_value`: (expression, ClickHouse type) of a key in JSON Lines.

    A multi-valued identity is ``Array(String)`` written as a JSON list — except an empty one, which is
    ``null``; ClickHouse cannot make an array nullable, so such a value is a ``Variant`` of the two."""
    if not (entry.multi and entry.kind is KeyKind.IDENTITY):
        return rendered(entry, alias, excel_safe=excel_safe), "Nullable(String)"
    col = f"{alias}.{quote_ident(entry.key)}"
    items = f"arrayMap(x -> {_excel('x')}, {col})" if excel_safe else col
    return f"if(empty({col}), NULL, {items})", "Variant(Array(String))"


def identity_list(entry: CatalogEntry, alias: str = "u") -> str:
    """An identity as an array of strings (empty when the user has none; the caller turns that into None)."""
    col = f"{alias}.{quote_ident(entry.key)}"
    if entry.multi:
        return col if entry.type is ValueType.STRING else f"arrayMap(x -> toString(x), {col})"
    return f"if(isNull({col}), CAST([], 'Array(String)'), [toString(assumeNotNull({col}))])"


def page_select_list(columns: list[CatalogEntry], alias: str = "u") -> str:
    """Mirror of :func:`segport.engine.duckdb.pages.select_list`."""
    parts = [f"toString({alias}.gio_id)"]
    for c in columns:
        parts.append(identity_list(c, alias) if c.kind is KeyKind.IDENTITY else rendered(c, alias))
    return ", ".join(parts)


def present(entry: CatalogEntry, alias: str = "u") -> str:
    """True where the user has a value for ``entry`` (a tag's members)."""
    col = f"{alias}.{quote_ident(entry.key)}"
    return f"notEmpty({col})" if entry.multi else f"isNotNull({col})"


class ClickHouseHandle(Protocol):
    """What the import and the writer use of :class:`segport.engine.clickhouse.engine.ClickHouseEngine`
    (described here rather than imported: the engine module imports them)."""

    scratch: Path
    import_memory_limit: str
    # ClickHouse runs in this process (chdb): its own file writer and reader reach this host's files
    local_files: bool

    def client(self) -> Any: ...

    def table(self, name: str) -> str: ...

    def columns(self, table: str) -> list[str]: ...
