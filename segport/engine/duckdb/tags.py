"""Tags computed from events, in DuckDB: each user's value (:mod:`segport.engine.tag_sql`, in DuckDB's spelling:
``arg_min``/``arg_max`` over row values) written into the tag's column of the users table (the table rewritten
with that column replaced, in the caller's transaction), so an export, a page or a rule reads a computed tag exactly like an
imported one, and reads see the old values or the new, never a mix."""

from __future__ import annotations

import duckdb

from segport.domain.behaviour_parse import parse_tag_definition
from segport.domain.keys import quote_ident
from segport.engine.base import ComputeResult, TagComputation
from segport.engine.duckdb.behaviour import DuckDBEventSQL, event_table
from segport.engine.duckdb.rules import DuckDBRules
from segport.engine.duckdb.sql import users_table
from segport.engine.tag_sql import TagSQL


class DuckDBTagSQL(TagSQL):
    def arg_min(self, value: str, key: list[str]) -> str:
        return f"arg_min({value}, ROW({', '.join(key)}))"

    def arg_max(self, value: str, key: list[str]) -> str:
        return f"arg_max({value}, ROW({', '.join(key)}))"

    def integer(self, expr: str) -> str:
        return f"CAST({expr} AS BIGINT)"


def compute_tag(cur: duckdb.DuckDBPyConnection, project_id: str, tag: TagComputation) -> ComputeResult:
    """Compute ``tag`` into its column, in the caller's transaction; returns the users holding a value."""
    ctx = tag.behaviour
    defn = parse_tag_definition(tag.definition, "definition", ctx.events, tag.catalog)
    entry = tag.catalog.get(tag.key)
    assert entry is not None, f"{tag.key} is not in the catalogue"
    rules = DuckDBRules(tag.catalog, "u", behaviour=ctx)
    table, columns = event_table(cur, project_id)
    users = users_table(project_id)
    query, fill = DuckDBTagSQL(DuckDBEventSQL(ctx, rules, table, columns), users).values(defn)
    col, kind = quote_ident(tag.key), entry.type.sql
    # the column written in place: every user to the empty value, then the users the query gives one. DuckDB
    # keeps an UPDATE's new values per column, so only the tag's column is written, where rewriting the table
    # (every column of every user) cost the whole table's width
    cur.execute(f"UPDATE {users} SET {col} = CAST({fill} AS {kind})")
    if query is not None:
        cur.execute(
            f"UPDATE {users} AS u SET {col} = CAST(x.v AS {kind}) FROM ({query}) AS x WHERE u.gio_id = x.gio_id",
            rules.params,
        )
    row = cur.execute(f"SELECT count(*) FROM {users} WHERE {col} IS NOT NULL").fetchone()
    return ComputeResult(int(row[0]) if row else 0)
