"""Tags computed from events as SQL: each user's value of a tag definition (:mod:`segport.domain.tags` holds the
semantics), as one ``SELECT gio_id, v`` that both engines write with their own spelling
(:mod:`segport.engine.duckdb.tags`, :mod:`segport.engine.clickhouse.tags`). The scans of a step's events (name,
window, ``where``, attributes the table lacks read as nulls, no event table at all) and the measures are the
event conditions' (:class:`segport.engine.behaviour_sql.EventSQL`), so a tag and a segment condition over the
same measure agree by construction.

* ``AGGREGATED``: the condition's aggregate per user (``count(*)``, distinct days in the project's time zone, ...);
* ``ATTRIBUTION_ATTRIBUTE``: the value of the least (``first``) or greatest (``last``) pair (time, value) of the
  user's matching events with a value;
* ``TOP_N_ATTRIBUTE``: ``min`` / ``max`` of those values, or the value of the least pair (-count, value) over the
  counts per value (the most frequent; the smallest of equally frequent ones);
* ``HORIZONTAL``: a ``CASE`` over the source's value, the first layer whose ``gte`` it reaches.

A definition also says what users it leaves out hold (:meth:`TagSQL.values`' ``fill``): 0 for the measures that
are 0 without events, else null.
"""

from __future__ import annotations

from segport.domain.behaviour import (
    ZERO_MEASURES,
    AggregatedTag,
    AttributionTag,
    HorizontalTag,
    TagDefinition,
    TopNTag,
    resolve_window,
)
from segport.domain.keys import quote_ident
from segport.engine.behaviour_sql import EventSQL

TIME = 'e."$time"'


class TagSQL:
    """Writes a tag's per-user values over ``events`` (the engine's :class:`EventSQL` for this computation: its
    rule compiler collects the ``where`` parameters) and the users table ``users`` (aliased ``u``)."""

    def __init__(self, events: EventSQL, users: str) -> None:
        self.ev = events
        self.users = users

    # --- the dialect ----------------------------------------------------------------------------------------
    def arg_min(self, value: str, key: list[str]) -> str:
        """The ``value`` of the row with the least ``key`` (a tuple compared element by element)."""
        raise NotImplementedError

    def arg_max(self, value: str, key: list[str]) -> str:
        raise NotImplementedError

    def integer(self, expr: str) -> str:
        """``expr`` as a 64-bit signed integer."""
        raise NotImplementedError

    # --- values ---------------------------------------------------------------------------------------------
    def values(self, defn: TagDefinition) -> tuple[str | None, str]:
        """(``SELECT gio_id, v`` of the users the query gives a value, or ``None`` when the project has no
        event table; the value of every other user: ``0`` or ``NULL``)."""
        if isinstance(defn, HorizontalTag):
            return self.horizontal(defn), "NULL"
        ctx = self.ev.ctx
        window = resolve_window(defn.time, ctx.now_ms, ctx.time_zone)
        if isinstance(defn, AggregatedTag):
            m = defn.measure
            fill = "0" if m.kind in ZERO_MEASURES else "NULL"
            if self.ev.table is None:
                return None, fill
            scan = self.ev.step_scan(defn.step, window, [m.attribute] if m.attribute else [])
            agg = self.ev.aggregate(m, window)  # days: the engine's cheapest form for this window
            if m.kind in ("count", "distinct_days", "distinct"):
                agg = self.integer(agg)
            return f"SELECT e.gio_id AS gio_id, {agg} AS v {scan} GROUP BY e.gio_id", fill
        if self.ev.table is None:
            return None, "NULL"
        a = f"e.{quote_ident(defn.attribute)}"
        scan = f"{self.ev.step_scan(defn.step, window, [defn.attribute])} AND {a} IS NOT NULL"
        if isinstance(defn, AttributionTag):
            pick = self.arg_min if defn.pick == "first" else self.arg_max
            agg = pick(a, [TIME, a])
        elif isinstance(defn, TopNTag) and defn.pick in ("min", "max"):
            agg = f"{defn.pick}({a})"
        else:
            counts = f"SELECT e.gio_id AS gio_id, {a} AS a, count(*) AS n {scan} GROUP BY e.gio_id, {a}"
            most = self.arg_min("c.a", [f"-{self.integer('c.n')}", "c.a"])
            return f"SELECT c.gio_id AS gio_id, {most} AS v FROM ({counts}) AS c GROUP BY c.gio_id", "NULL"
        return f"SELECT e.gio_id AS gio_id, {agg} AS v {scan} GROUP BY e.gio_id", "NULL"

    def horizontal(self, defn: HorizontalTag) -> str:
        """Every user with a source value and their layer (the CASE's ``NULL`` for the others)."""
        if isinstance(defn.source, str):
            gio, value, source = "u.gio_id", f"u.{quote_ident(defn.source)}", f"{self.users} AS u"
        else:
            inner, fill = self.values(defn.source)
            if inner is None:
                gio, value, source = "u.gio_id", fill, f"{self.users} AS u"
            elif fill == "NULL":
                gio, value, source = "s.gio_id", "s.v", f"({inner}) AS s"
            else:
                gio, value = "u.gio_id", f"coalesce(s.v, {fill})"
                source = f"{self.users} AS u LEFT JOIN ({inner}) AS s ON s.gio_id = u.gio_id"
        cases, rest = [], "NULL"
        for layer in defn.layers:
            if layer.gte is None:  # the last layer, without a bound: the rest
                rest = self.ev.string(layer.name)
            else:
                cases.append(f"WHEN {value} >= {self.ev.double(layer.gte)} THEN {self.ev.string(layer.name)}")
        case = f"CASE WHEN {value} IS NULL THEN NULL {' '.join(cases)} ELSE {rest} END"
        return f"SELECT {gio} AS gio_id, {case} AS v FROM {source}"
