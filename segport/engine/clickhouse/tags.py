"""Tags computed from events, in ClickHouse: each user's value (:mod:`segport.engine.tag_sql`, in ClickHouse's
spelling: ``minArgMin``/``maxArgMax``) written into the tag's column of a new users table that the next
snapshot names (:mod:`segport.engine.clickhouse.snapshots`), so an export, a page or a rule reads a computed tag
exactly like an imported one, and a reader on the old snapshot keeps its old values.

The new table is a clone of the current one that shares its parts (``ATTACH PARTITION ALL FROM`` hard-links
them), whose tag column alone is then rewritten by a mutation reading the values from a ``Join``-engine table
(``joinGetOrNull``): a mutation writes only the columns it assigns, so a tag costs what its values cost, not a
copy of every column of every user. The old table's parts are never written (a mutation makes new parts of the
new table), and the new table is named by no snapshot until it is published, so a failure or a kill before the
publish leaves the current snapshot as it was. A database whose name holds a ``.`` (which ``joinGet`` cannot
name) gets the copy instead: every column read and written again with the tag's values joined in.
"""

from __future__ import annotations

import contextlib
from typing import Any

from segport.domain.behaviour_parse import parse_tag_definition
from segport.domain.keys import quote_ident
from segport.engine.base import ComputeResult, TagComputation
from segport.engine.clickhouse.behaviour import ClickHouseEventSQL
from segport.engine.clickhouse.rules import ClickHouseRules, rule_parameters
from segport.engine.clickhouse.sql import ch_string, column_type
from segport.engine.tag_sql import TagSQL


class ClickHouseTagSQL(TagSQL):
    def arg_min(self, value: str, key: list[str]) -> str:
        return _pick("min", value, key)

    def arg_max(self, value: str, key: list[str]) -> str:
        return _pick("max", value, key)

    def integer(self, expr: str) -> str:
        return f"toInt64({expr})"


def _pick(direction: str, value: str, key: list[str]) -> str:
    """``argMin``/``argMax`` of ``value`` by the tuple ``key``. Where the key is (k, value) (the value breaks
    ties: every use here), that is the least/greatest value among the rows with the least/greatest ``k``:
    ClickHouse's ``-ArgMin``/``-ArgMax`` combinator (``maxArgMax(v, t)``), which compares ``k`` alone as a plain
    number and costs what ``argMax(v, t)`` without a tie-break costs, where ``min``/``max`` of the tuples compared
    tuples per row (~25% more for the whole values statement, bench/ch_tag_statements.py)."""
    if len(key) == 2 and key[-1] == value:
        return f"{direction}Arg{direction.capitalize()}({_not_null(value)}, {_not_null(key[0])})"
    keys = ", ".join(_not_null(k) for k in key)
    return f"arg{direction.capitalize()}(assumeNotNull({value}), tuple({keys}))"


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
    table, columns = engine.event_table(project_id)  # kept by the engine until an event import
    old = engine.table(snap.users)
    query, fill = ClickHouseTagSQL(ClickHouseEventSQL(ctx, rules, table, columns), old).values(defn)
    name = f"u_{project_id}_{snap.seq + 1}"
    built.append(name)
    new = engine.table(name)
    client.command(f"DROP TABLE IF EXISTS {new}")  # left by a computation killed before its publish
    client.command(f"CREATE TABLE {new} AS {old}")
    if "." in engine.db_name:
        _copy(engine, snap.users, new, tag.key, column_type(entry), query, fill, rule_parameters(rules.params))
    else:
        _update(engine, project_id, snap.seq + 1, old, new, tag.key, column_type(entry), query, fill, rules)
    total = int(client.query(f"SELECT count() FROM {new} WHERE {quote_ident(tag.key)} IS NOT NULL").result_rows[0][0])
    engine.publish(snap.next(data_version=snap.data_version + 1, users=name))
    return ComputeResult(total)


def _update(
    engine: Any,
    project_id: str,
    seq: int,
    old: str,
    new: str,
    key: str,
    kind: str,
    query: str | None,
    fill: str,
    rules: ClickHouseRules,
) -> None:
    """``new`` (empty, ``old``'s structure) made ``old``'s parts with ``key`` holding the values of ``query``
    (``fill`` for users it leaves out): the parts hard-linked, then one mutation rewriting that column only."""
    client = engine.client()
    client.command(f"ALTER TABLE {new} ATTACH PARTITION ALL FROM {old}")
    if query is None:
        client.command(
            f"ALTER TABLE {new} UPDATE {quote_ident(key)} = CAST({fill} AS {kind}) WHERE 1",
            settings={"mutations_sync": 2},
        )
        return
    name = f"tv_{project_id}_{seq}"  # the values hashed by gio_id, in memory only, for joinGetOrNull
    values = engine.table(name)
    try:
        client.command(f"DROP TABLE IF EXISTS {values}")  # left by a computation killed before its end
        client.command(
            f"CREATE TABLE {values} ENGINE = Join(ANY, LEFT, gio_id) SETTINGS persistent = 0 "
            f"AS SELECT gio_id, v FROM ({query})",
            parameters=rule_parameters(rules.params),
        )
        value = f"joinGetOrNull({ch_string(f'{engine.db_name}.{name}')}, 'v', gio_id)"
        value = value if fill == "NULL" else f"coalesce({value}, {fill})"
        client.command(
            f"ALTER TABLE {new} UPDATE {quote_ident(key)} = CAST({value} AS {kind}) WHERE 1",
            settings={"mutations_sync": 2},
        )
    finally:
        with contextlib.suppress(Exception):  # a failed drop must not hide the computation's own error
            client.command(f"DROP TABLE IF EXISTS {values}")


def _copy(
    engine: Any, users: str, new: str, key: str, kind: str, query: str | None, fill: str, params: dict[str, Any]
) -> None:
    """``new`` filled with every row of ``users``, ``key`` replaced by the values of ``query`` (``fill`` for
    users it leaves out)."""
    old = engine.table(users)
    have = list(engine.column_types(users))
    value = fill if query is None else f"coalesce(x.v, {fill})"
    select = ", ".join(f"CAST({value} AS {kind})" if c == key else f"u.{quote_ident(c)}" for c in have)
    joined = f"{old} AS u" if query is None else f"{old} AS u LEFT JOIN ({query}) AS x ON x.gio_id = u.gio_id"
    engine.client().command(
        f"INSERT INTO {new} ({', '.join(quote_ident(c) for c in have)}) SELECT {select} FROM {joined} "
        "SETTINGS join_use_nulls = 1",
        parameters=params,
    )
