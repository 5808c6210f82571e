"""SQL fragments shared by the DuckDB engine: table names and how values are rendered in exports."""

from __future__ import annotations

from segport.domain.export import EXCEL_FORMULA_START
from segport.domain.keys import CatalogEntry, KeyKind, ValueType, quote_ident


def users_table(project_id: str) -> str:
    return f'"users_{project_id}"'


def members_table(project_id: str, segment_key: str) -> str:
    return f'"m_{project_id}_{segment_key}"'


def idlist_table(project_id: str, segment_key: str) -> str:
    return f'"l_{project_id}_{segment_key}"'


def sql_string(text: str) -> str:
    """A SQL string literal (for COPY targets and struct keys, which cannot be parameters)."""
    return "'" + text.replace("'", "''") + "'"


def rendered(entry: CatalogEntry, alias: str = "u", *, excel_safe: bool = False) -> str:
    """The value of a key as GrowingIO renders it: a string, lists joined by ``||``, null when missing."""
    col = f"{alias}.{quote_ident(entry.key)}"
    if entry.multi:
        inner = "x" if entry.type is ValueType.STRING else "CAST(x AS VARCHAR)"
        expr = f"NULLIF(array_to_string(list_transform({col}, lambda x: {inner}), '||'), '')"
    elif entry.type is ValueType.STRING:
        expr = col
    else:
        expr = f"CAST({col} AS VARCHAR)"
    if excel_safe and entry.type is ValueType.STRING:  # numbers and dates are never formulas
        expr = _excel(expr)
    return expr


def _excel(expr: str) -> str:
    """``expr`` as :func:`segport.domain.export.excel_safe_text` writes it (DuckDB: no escapes in literals)."""
    pattern = sql_string(EXCEL_FORMULA_START)
    return f"(CASE WHEN regexp_matches({expr}, {pattern}) THEN '''' || {expr} ELSE {expr} END)"


def json_value(entry: CatalogEntry, alias: str = "u", *, excel_safe: bool = False) -> str:
    """A key's value in a JSON Lines export: a multi-valued identity is a list of strings (as the API family
    answers it; null when the user has none), everything else as :func:`rendered` writes it (``||`` joins)."""
    if not (entry.multi and entry.kind is KeyKind.IDENTITY):
        return rendered(entry, alias, excel_safe=excel_safe)
    col = f"{alias}.{quote_ident(entry.key)}"
    item = _excel("x") if excel_safe else "x"
    return f"(CASE WHEN {col} IS NULL OR len({col}) = 0 THEN NULL ELSE list_transform({col}, lambda x: {item}) END)"
