"""DuckDB's SQL for the API family's reads (pages of members, one user's profile, tag counts).

Values are rendered in SQL exactly as the export renders them (:func:`segport.engine.duckdb.sql.rendered`), so a
page of ``/users`` and a downloaded file agree on every value: strings, numbers and dates as strings,
multi-valued non-identity keys joined with ``||``, missing values ``NULL``. Identities are the exception the
GrowingIO docs ask for: they come back as lists.
"""

from __future__ import annotations

from segport.domain.keys import CatalogEntry, KeyKind, quote_ident
from segport.engine.duckdb.sql import rendered


def identity_list(entry: CatalogEntry, alias: str = "u") -> str:
    """An identity as a list of strings; ``NULL`` when the user has no value (or an empty list)."""
    col = f"{alias}.{quote_ident(entry.key)}"
    if entry.multi:
        as_text = f"list_transform({col}, lambda x: CAST(x AS VARCHAR))"
        return f"(CASE WHEN {col} IS NULL OR len({col}) = 0 THEN NULL ELSE {as_text} END)"
    return f"(CASE WHEN {col} IS NULL THEN NULL ELSE list_value(CAST({col} AS VARCHAR)) END)"


def value_expr(entry: CatalogEntry, alias: str = "u") -> str:
    """How one key is read for the API: identities as lists, everything else as the export writes it."""
    if entry.kind is KeyKind.IDENTITY:
        return identity_list(entry, alias)
    return rendered(entry, alias)


def select_list(columns: list[CatalogEntry], alias: str = "u") -> str:
    """``gio_id`` as a string, then each column rendered for the API."""
    parts = [f"CAST({alias}.gio_id AS VARCHAR)"] + [value_expr(c, alias) for c in columns]
    return ", ".join(parts)


def tag_counts_sql(users: str, tags: list[CatalogEntry]) -> str:
    """One scan counting, per tag, the users with a non-null value (a tag's members)."""
    counts = ", ".join(f"count(u.{quote_ident(t.key)})" for t in tags)
    return f"SELECT {counts} FROM {users} u"
