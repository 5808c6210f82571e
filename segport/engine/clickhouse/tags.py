"""Tags computed from events, in ClickHouse: each user's value as one aggregate over the project's event table,
written into a new users table (the current one's columns, the tag's replaced) that the next snapshot names
(:mod:`segport.engine.clickhouse.snapshots`), so an export, a page or a rule reads a computed tag exactly like an
imported one, and a reader on the old snapshot keeps its old values.

The same values as the DuckDB engine (:mod:`segport.engine.duckdb.tags`, :mod:`segport.domain.tags`):
``argMin(a, (time, a))`` / ``argMax`` for first / last, ``argMin(a, (-n, a))`` for the most frequent value,
``uniqExact`` for distinct counts (days in the project's time zone).
"""

from __future__ import annotations

from typing import Any

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
from segport.domain.keys import ValueType, quote_ident
from segport.domain.rules import compile_rule, rule_keys
from segport.domain.tags import parse_tag
from segport.engine.base import ComputeResult, TagComputation
from segport.engine.clickhouse import events
from segport.engine.clickhouse.rules import ClickHouseRules, rule_parameters
from segport.engine.clickhouse.sql import ch_string, column_type

TIME = "e.`$time`"


def compute_tag(engine: Any, project_id: str, tag: TagComputation, built: list[str]) -> ComputeResult:
    """Build the next users table with ``tag``'s column computed and publish it (the caller holds the writer
    lock); tables made are listed in ``built`` (dropped by the caller if this fails)."""
    ctx = tag.behaviour
    defn = parse_tag(tag.definition, ctx.events, tag.catalog, key=tag.key)
    entry = tag.catalog.get(tag.key)
    assert entry is not None, f"{tag.key} is not in the catalogue"
    events._ensure_store(engine, project_id, _columns_read(defn, ctx))
    snap = engine.current(project_id)
    client = engine.client()
    params: list[Any] = []
    query, fill = _values(engine, defn, ctx, project_id, snap.users, params)
    name = f"u_{project_id}_{snap.seq + 1}"
    built.append(name)
    old, new = engine.table(snap.users), engine.table(name)
    columns = list(engine.column_types(snap.users))
    col = quote_ident(tag.key)
    kind = column_type(entry)
    select = ", ".join(
        f"CAST(coalesce(x.v, {fill}) AS {kind})" if c == tag.key else f"u.{quote_ident(c)}" for c in columns
    )
    client.command(f"CREATE TABLE {new} AS {old}")
    client.command(
        f"INSERT INTO {new} ({', '.join(quote_ident(c) for c in columns)}) SELECT {select} FROM {old} AS u "
        f"LEFT JOIN ({query}) AS x ON x.gio_id = u.gio_id SETTINGS join_use_nulls = 1",
        parameters=rule_parameters(params),
    )
    total = int(client.query(f"SELECT count() FROM {new} WHERE {col} IS NOT NULL").result_rows[0][0])
    engine.publish(snap.next(data_version=snap.data_version + 1, users=name))
    return ComputeResult(total)


def _columns_read(defn: TagDefinition, ctx: BehaviourContext) -> dict[str, str]:
    """The event table's columns the definition reads, as DuckDB types (see the DuckDB engine's twin)."""
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
    engine: Any, defn: TagDefinition, ctx: BehaviourContext, project_id: str, users: str, params: list[Any]
) -> tuple[str, str]:
    """(``SELECT gio_id, v``, the value of users it leaves out: ``NULL`` or ``0``); rule parameters go to
    ``params``."""
    if isinstance(defn, HorizontalTag):
        return _horizontal(engine, defn, ctx, project_id, users, params)
    where = _matching(defn.step, defn.time, ctx, params)
    table = events.events_table(engine, project_id)
    if isinstance(defn, AggregatedTag):
        m = defn.measure
        a = f"e.{quote_ident(m.attribute)}" if m.attribute else ""
        if m.kind == "count":
            agg = "toInt64(count())"
        elif m.kind == "distinct_days":
            agg = f"toInt64(uniqExact(toDate(toTimeZone({TIME}, {ch_string(ctx.time_zone)}))))"
        elif m.kind == "distinct":
            agg = f"toInt64(uniqExact({a}))"
        elif m.kind == "sum":
            agg = f"coalesce(sum({a}), 0)"
        else:
            agg = f"{m.kind}({a})"
        fill = "0" if m.kind in ZERO_MEASURES else "NULL"
        return f"SELECT e.gio_id AS gio_id, {agg} AS v FROM {table} AS e WHERE {where} GROUP BY e.gio_id", fill
    a = f"e.{quote_ident(defn.attribute)}"
    where = f"{where} AND {a} IS NOT NULL"
    if isinstance(defn, AttributionTag):
        pick = "argMin" if defn.pick == "first" else "argMax"
        agg = f"{pick}(assumeNotNull({a}), ({TIME}, assumeNotNull({a})))"
    elif isinstance(defn, TopNTag) and defn.pick in ("min", "max"):
        agg = f"{defn.pick}({a})"
    else:
        counts = (
            f"SELECT e.gio_id AS gio_id, assumeNotNull({a}) AS a, count() AS n FROM {table} AS e WHERE {where} "
            "GROUP BY gio_id, a"
        )
        return f"SELECT gio_id, argMin(a, (-toInt64(n), a)) AS v FROM ({counts}) GROUP BY gio_id", "NULL"
    return f"SELECT e.gio_id AS gio_id, {agg} AS v FROM {table} AS e WHERE {where} GROUP BY e.gio_id", "NULL"


def _matching(step: Step, time: TimeSpec | None, ctx: BehaviourContext, params: list[Any]) -> str:
    parts = [f"e.`$event` = {ch_string(step.event)}"]
    window = resolve_window(time, ctx.now_ms, ctx.time_zone)
    if window.start_ms is not None:
        parts.append(f"{TIME} >= fromUnixTimestamp64Milli(toInt64({int(window.start_ms)}), 'UTC')")
    if window.end_ms is not None:
        parts.append(f"{TIME} < fromUnixTimestamp64Milli(toInt64({int(window.end_ms)}), 'UTC')")
    if step.where is not None:
        rule = compile_rule(step.where, ctx.events.attributes, ClickHouseRules, alias="e")
        parts.append(rule.sql)
        params.extend(rule.params)
    return " AND ".join(parts)


def _horizontal(
    engine: Any, defn: HorizontalTag, ctx: BehaviourContext, project_id: str, users: str, params: list[Any]
) -> tuple[str, str]:
    table = engine.table(users)
    if isinstance(defn.source, str):
        gio, value, source = "u.gio_id", f"u.{quote_ident(defn.source)}", f"{table} AS u"
    else:
        inner, fill = _values(engine, defn.source, ctx, project_id, users, params)
        if fill == "NULL":
            gio, value, source = "s.gio_id", "s.v", f"({inner}) AS s"
        else:
            gio, value = "u.gio_id", f"coalesce(s.v, {fill})"
            source = f"{table} AS u LEFT JOIN ({inner}) AS s ON s.gio_id = u.gio_id"
    cases, rest = [], "NULL"
    for layer in defn.layers:
        if layer.gte is None:
            rest = ch_string(layer.name)
        else:
            cases.append(f"WHEN toFloat64({value}) >= {float(layer.gte)!r} THEN {ch_string(layer.name)}")
    case = f"CASE WHEN {value} IS NULL THEN NULL {' '.join(cases)} ELSE {rest} END"
    return f"SELECT {gio} AS gio_id, CAST({case} AS Nullable(String)) AS v FROM {source}", "NULL"
