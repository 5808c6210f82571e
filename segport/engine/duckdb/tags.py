"""Tags computed from events, in DuckDB: each user's value as one aggregate over the project's event table, then
written into the tag's column of the users table (two ``UPDATE`` statements in the caller's transaction), so an
export, a page or a rule reads a computed tag exactly like an imported one.

The values follow :mod:`segport.domain.tags` (ties, users without events); the per-user query of each type:

* ``AGGREGATED``: ``count(*)``, ``count(DISTINCT day)`` (the day in the project's time zone), ``count(DISTINCT a)``,
  ``sum/avg/min/max(a)`` over the user's matching events;
* ``ATTRIBUTION_ATTRIBUTE``: ``arg_min(a, (time, a))`` (first) or ``arg_max(a, (time, a))`` (last);
* ``TOP_N_ATTRIBUTE``: ``min(a)``, ``max(a)``, or ``arg_min(a, (-n, a))`` over the counts ``n`` per value;
* ``HORIZONTAL``: a ``CASE`` over the source's value (a tag's column, or an ``AGGREGATED`` query).
"""

from __future__ import annotations

from typing import Any

import duckdb

from segport.domain.behaviour import (
    ZERO_MEASURES,
    AggregatedTag,
    AttributionTag,
    BehaviourContext,
    HorizontalTag,
    Step,
    TagDefinition,
    TimeSpec,
    TopNTag,
    resolve_window,
)
from segport.domain.keys import Catalog, ValueType, quote_ident
from segport.domain.rules import compile_rule, rule_keys
from segport.domain.tags import parse_tag
from segport.engine.base import ComputeResult, TagComputation
from segport.engine.duckdb import events as ev
from segport.engine.duckdb.rules import DuckDBRules
from segport.engine.duckdb.sql import users_table


def compute_tag(cur: duckdb.DuckDBPyConnection, project_id: str, tag: TagComputation) -> ComputeResult:
    """Compute ``tag`` into its column, in the caller's transaction; returns the users holding a value."""
    ctx = tag.behaviour
    defn = parse_tag(tag.definition, ctx.events, tag.catalog, key=tag.key)
    entry = tag.catalog.get(tag.key)
    assert entry is not None, f"{tag.key} is not in the catalogue"
    ev.ensure_store(cur, project_id, _columns_read(defn, ctx))
    query, params, fill = _values(defn, ctx, tag.catalog, project_id)
    users, col, kind = users_table(project_id), quote_ident(tag.key), entry.type.sql
    cur.execute(f"UPDATE {users} SET {col} = CAST({fill} AS {kind})")
    cur.execute(
        f"UPDATE {users} AS u SET {col} = CAST(x.v AS {kind}) FROM ({query}) AS x WHERE u.gio_id = x.gio_id", params
    )
    row = cur.execute(f"SELECT count(*) FROM {users} WHERE {col} IS NOT NULL").fetchone()
    return ComputeResult(int(row[0]) if row else 0)


def _columns_read(defn: TagDefinition, ctx: BehaviourContext) -> dict[str, str]:
    """The event table's columns the definition reads (a declared attribute no event carried yet has none:
    it is added, empty, so the query reads nulls)."""
    if isinstance(defn, HorizontalTag):
        return _columns_read(defn.source, ctx) if isinstance(defn.source, AggregatedTag) else {}
    names = set(rule_keys(defn.step.where)) if defn.step.where is not None else set()
    if isinstance(defn, AggregatedTag):
        if defn.measure.attribute:
            names.add(defn.measure.attribute)
    else:
        names.add(defn.attribute)
    out = {}
    for name in sorted(names):
        entry = ctx.events.attributes.get(name)
        out[name] = (entry.type if entry is not None else ValueType.STRING).sql
    return out


def _values(
    defn: TagDefinition, ctx: BehaviourContext, catalog: Catalog, project_id: str
) -> tuple[str, list[Any], str]:
    """(``SELECT gio_id, v``, its parameters, the value of users it leaves out: ``NULL`` or ``0``)."""
    if isinstance(defn, HorizontalTag):
        return _horizontal(defn, ctx, catalog, project_id)
    params: list[Any] = []
    where = _matching(defn.step, defn.time, ctx, params)
    table = ev.events_table(project_id)
    if isinstance(defn, AggregatedTag):
        m = defn.measure
        a = f"e.{quote_ident(m.attribute)}" if m.attribute else ""
        if m.kind == "count":
            agg = "count(*)"
        elif m.kind == "distinct_days":
            params.insert(0, ctx.time_zone)  # the select list comes before the WHERE
            agg = "count(DISTINCT CAST(timezone(?, timezone('UTC', e.\"$time\")) AS DATE))"
        elif m.kind == "distinct":
            agg = f"count(DISTINCT {a})"
        else:
            agg = f"{m.kind}({a})"
        fill = "0" if m.kind in ZERO_MEASURES else "NULL"
        if m.kind == "sum":  # sum of no value (all null) is 0, like a sum of no event
            agg = f"coalesce(sum({a}), 0)"
        return f"SELECT e.gio_id, {agg} AS v FROM {table} e WHERE {where} GROUP BY e.gio_id", params, fill
    a = f"e.{quote_ident(defn.attribute)}"
    where = f"{where} AND {a} IS NOT NULL"
    if isinstance(defn, AttributionTag):
        pick = "arg_min" if defn.pick == "first" else "arg_max"
        agg = f'{pick}({a}, ROW(e."$time", {a}))'
    elif isinstance(defn, TopNTag) and defn.pick in ("min", "max"):
        agg = f"{defn.pick}({a})"
    else:
        counts = f"SELECT e.gio_id, {a} AS a, count(*) AS n FROM {table} e WHERE {where} GROUP BY e.gio_id, {a}"
        return f"SELECT gio_id, arg_min(a, ROW(-n, a)) AS v FROM ({counts}) GROUP BY gio_id", params, "NULL"
    return f"SELECT e.gio_id, {agg} AS v FROM {table} e WHERE {where} GROUP BY e.gio_id", params, "NULL"


def _matching(step: Step, time: TimeSpec | None, ctx: BehaviourContext, params: list[Any]) -> str:
    """The WHERE of a step's events inside the window (the window resolved now, from the context's clock)."""
    parts = ['e."$event" = ?']
    params.append(step.event)
    window = resolve_window(time, ctx.now_ms, ctx.time_zone)
    if window.start_ms is not None:
        parts.append('e."$time" >= epoch_ms(CAST(? AS BIGINT))')
        params.append(window.start_ms)
    if window.end_ms is not None:
        parts.append('e."$time" < epoch_ms(CAST(? AS BIGINT))')
        params.append(window.end_ms)
    if step.where is not None:
        rule = compile_rule(step.where, ctx.events.attributes, DuckDBRules, alias="e")
        parts.append(rule.sql)
        params.extend(rule.params)
    return " AND ".join(parts)


def _horizontal(
    defn: HorizontalTag, ctx: BehaviourContext, catalog: Catalog, project_id: str
) -> tuple[str, list[Any], str]:
    users = users_table(project_id)
    params: list[Any] = []
    if isinstance(defn.source, str):
        gio, value, source = "u.gio_id", f"u.{quote_ident(defn.source)}", f"{users} u"
    else:
        inner, inner_params, fill = _values(defn.source, ctx, catalog, project_id)
        params.extend(inner_params)
        if fill == "NULL":
            gio, value, source = "s.gio_id", "s.v", f"({inner}) s"
        else:
            gio, value = "u.gio_id", f"coalesce(s.v, {fill})"
            source = f"{users} u LEFT JOIN ({inner}) s ON s.gio_id = u.gio_id"
    cases, case_params, rest = [], [], "NULL"
    for layer in defn.layers:
        if layer.gte is None:  # the last layer, without a bound: the rest
            rest = "CAST(? AS VARCHAR)"
        else:
            cases.append(f"WHEN {value} >= CAST(? AS DOUBLE) THEN CAST(? AS VARCHAR)")
            case_params.append(layer.gte)
        case_params.append(layer.name)
    sql = (
        f"SELECT {gio} AS gio_id, CASE WHEN {value} IS NULL THEN NULL {' '.join(cases)} ELSE {rest} END AS v "
        f"FROM {source}"
    )
    # the CASE's parameters come before the source's in the text
    return sql, case_params + params, "NULL"
