"""The users table's columns against the catalogue: one column per key, of the key's type.

The catalogue (metadata store) and the columns (the engine) live in two databases, so a change to both is two
commits; these helpers let the engine close any gap between them: add what is missing, replace a column of
the wrong type or case, and (at start-up, when nothing else runs) drop columns no key owns.
:func:`column_steps` plans that for either engine; the cursor helpers are DuckDB's.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from segport.domain.keys import GIO_ID, Catalog, quote_ident
from segport.engine.duckdb.sql import users_table

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


@dataclass(frozen=True, slots=True)
class Step:
    """One ``ALTER TABLE``: drop ``column``, or add it of type ``kind``; ``note`` is the log line, if any."""

    drop: bool
    column: str
    kind: str = ""
    note: str = ""


def column_steps(have: Columns, want: Columns, *, prune: bool) -> list[Step]:
    """What turns the columns ``have`` into ``want`` (key -> type, without ``gio_id``), for any engine: add
    the missing keys, replace a column of another type or case (drop + add: its values are not this key's),
    and with ``prune`` drop the columns no key owns."""
    folded = {name.lower(): name for name in have}
    steps: list[Step] = []
    for key, kind in want.items():
        current = folded.pop(key.lower(), None)
        if current == key and have[current] == kind:
            continue
        if current is not None:  # a column of another life of this key
            steps.append(Step(True, current, note=f"replaced column {current} ({have[current]})"))
        steps.append(Step(False, key, kind, "" if current is not None else f"added column {key}"))
    folded.pop(GIO_ID, None)
    if prune:
        steps += [Step(True, name, note=f"dropped column {name} (no catalogue key)") for name in folded.values()]
    return steps


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
