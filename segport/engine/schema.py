"""The users table's columns against the catalogue: one column per key, of the key's type.

The catalogue (metadata store) and the columns (DuckDB) live in two databases, so a change to both is two
commits; these helpers let the engine close any gap between them: add what is missing, replace a column of
the wrong type or case, and (at start-up, when nothing else runs) drop columns no key owns.
"""

from __future__ import annotations

import duckdb

from segport.domain.keys import GIO_ID, Catalog, quote_ident
from segport.engine.sql import users_table

Columns = dict[str, str]  # column name -> DuckDB type, as information_schema spells them


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
    """Add the catalogue's missing columns and replace mismatched ones; with ``prune`` also drop the columns
    no key owns. Runs inside the caller's transaction. Returns what it did."""
    table = users_table(project_id)
    folded = {name.lower(): name for name in have}
    done: list[str] = []
    for entry in catalog.entries.values():
        current = folded.pop(entry.key.lower(), None)
        if current == entry.key and have[current] == entry.sql_type:
            continue
        if current is not None:  # a column of another life of this key: its values are not this key's
            cur.execute(f"ALTER TABLE {table} DROP COLUMN {quote_ident(current)}")
            done.append(f"replaced column {current} ({have[current]})")
        cur.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(entry.key)} {entry.sql_type}")
        if current is None:
            done.append(f"added column {entry.key}")
    folded.pop(GIO_ID, None)
    if prune:
        for name in folded.values():
            cur.execute(f"ALTER TABLE {table} DROP COLUMN {quote_ident(name)}")
            done.append(f"dropped column {name} (no catalogue key)")
    return done
