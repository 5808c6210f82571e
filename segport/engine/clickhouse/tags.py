"""Tags computed from events, in ClickHouse: each user's value (:mod:`segport.engine.tag_sql`, in ClickHouse's
spelling: ``argMin``/``argMax`` over tuples) written into a new users table (the current one's columns, the tag's
replaced) that the next snapshot names (:mod:`segport.engine.clickhouse.snapshots`), so an export, a page or a
rule reads a computed tag exactly like an imported one, and a reader on the old snapshot keeps its old values."""

from __future__ import annotations

from typing import Any

from segport.domain.behaviour_parse import parse_tag_definition
from segport.domain.keys import quote_ident
from segport.engine.base import ComputeResult, TagComputation
from segport.engine.clickhouse.behaviour import ClickHouseEventSQL, event_table
from segport.engine.clickhouse.rules import ClickHouseRules, rule_parameters
from segport.engine.clickhouse.sql import column_type
from segport.engine.tag_sql import TagSQL


class ClickHouseTagSQL(TagSQL):
    def arg_min(self, value: str, key: list[str]) -> str:
        return f"argMin(assumeNotNull({value}), tuple({', '.join(_not_null(k) for k in key)}))"

    def arg_max(self, value: str, key: list[str]) -> str:
        return f"argMax(assumeNotNull({value}), tuple({', '.join(_not_null(k) for k in key)}))"

    def integer(self, expr: str) -> str:
        return f"toInt64({expr})"


def _not_null(expr: str) -> str:
    """Tuples of Nullable elements would sort nulls apart: every key element here is filtered non-null."""
    return expr if expr.startswith("-") else f"assumeNotNull({expr})"


def compute_tag(engine: Any, project_id: str, tag: TagComputation, built: list[str]) -> ComputeResult:
    """Build the next users table with ``tag``'s column computed and publish it (the caller holds the writer
    lock); tables made are listed in ``built`` (dropped by the caller if this fails)."""
    ctx = tag.behaviour
    defn = parse_tag_definition(tag.definition, "definition", ctx.events, tag.catalog)
    entry = tag.catalog.get(tag.key)
    assert entry is not None, f"{tag.key} is not in the catalogue"
    snap = engine.current(project_id)
    client = engine.client()
    rules = ClickHouseRules(tag.catalog, "u", behaviour=ctx)
    table, columns = event_table(engine, project_id)
    old = engine.table(snap.users)
    query, fill = ClickHouseTagSQL(ClickHouseEventSQL(ctx, rules, table, columns), old).values(defn)
    name = f"u_{project_id}_{snap.seq + 1}"
    built.append(name)
    new = engine.table(name)
    have = list(engine.column_types(snap.users))
    value = fill if query is None else f"coalesce(x.v, {fill})"
    select = ", ".join(
        f"CAST({value} AS {column_type(entry)})" if c == tag.key else f"u.{quote_ident(c)}" for c in have
    )
    joined = f"{old} AS u" if query is None else f"{old} AS u LEFT JOIN ({query}) AS x ON x.gio_id = u.gio_id"
    client.command(f"CREATE TABLE {new} AS {old}")
    client.command(
        f"INSERT INTO {new} ({', '.join(quote_ident(c) for c in have)}) SELECT {select} FROM {joined} "
        "SETTINGS join_use_nulls = 1",
        parameters=rule_parameters(rules.params),
    )
    total = int(client.query(f"SELECT count() FROM {new} WHERE {quote_ident(tag.key)} IS NOT NULL").result_rows[0][0])
    engine.publish(snap.next(data_version=snap.data_version + 1, users=name))
    return ComputeResult(total)
