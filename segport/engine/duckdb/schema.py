"""DuckDB's users tables against the catalogue: read their columns, and apply
:func:`segport.engine.columns.column_steps` to them."""

from __future__ import annotations

import duckdb

from segport.domain.keys import GIO_ID, Catalog, quote_ident
from segport.engine.columns import Columns, column_steps
from segport.engine.duckdb.sql import users_table


def columns_of(cur: duckdb.DuckDBPyConnection, project_id: str) -> Columns:
    rows = cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
        [f"users_{project_id}"],
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def all_columns(cur: duckdb.DuckDBPyConnection) -> dict[str, Columns]:
    """Every project's users-table columns, in one read (project id -> columns)."""
    out: dict[str, Columns] = {}
    rows = cur.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_name LIKE 'users\\_%' ESCAPE '\\'"
    ).fetchall()
    for table, name, kind in rows:
        out.setdefault(str(table)[len("users_") :], {})[str(name)] = str(kind)
    return out


def differs(have: Columns | None, catalog: Catalog) -> bool:
    if have is None:
        return True
    want = {GIO_ID: "BIGINT", **{e.key: e.sql_type for e in catalog.entries.values()}}
    return have != want


def align_columns(
    cur: duckdb.DuckDBPyConnection, project_id: str, catalog: Catalog, have: Columns, *, prune: bool
) -> list[str]:
    """Apply :func:`column_steps` to a DuckDB users table, inside the caller's transaction. Returns what it
    did."""
    table = users_table(project_id)
    want = {e.key: e.sql_type for e in catalog.entries.values()}
    done: list[str] = []
    for step in column_steps(have, want, prune=prune):
        if step.drop:
            cur.execute(f"ALTER TABLE {table} DROP COLUMN {quote_ident(step.column)}")
        else:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(step.column)} {step.kind}")
        if step.note:
            done.append(step.note)
    return done
