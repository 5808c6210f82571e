"""Event conditions as SQL: the statements both engines write for :mod:`segport.domain.behaviour`'s conditions,
with each engine's spelling (time literals, days in a time zone, ASOF joins) left to its subclass
(:mod:`segport.engine.duckdb.behaviour`, :mod:`segport.engine.clickhouse.behaviour`).

A condition becomes a boolean expression over the users alias ``u``, the way one writes it by hand:

* a measure: ``u.gio_id IN (SELECT gio_id FROM events e WHERE <name, window, where> GROUP BY gio_id HAVING
  <measure OP value>)``; when the measure's zero value (``count``, ``distinct_days``, ``distinct``, ``sum`` of a
  user without matching events) satisfies the comparison, the complement instead: ``u.gio_id NOT IN (... HAVING
  NOT <measure OP value>)``, so users without events are counted without scanning them. "Did" (``count >= 1``)
  and "did not" (``count < 1``) need no aggregate: ``[NOT] IN (SELECT DISTINCT gio_id ...)``.
* a sequence: each step's events (one scan each, bounded by the window); without ``max_gap`` only each user's
  earliest reachable time matters (``min`` of step 1, then ``min`` of step 2 strictly after it, ...); with
  ``max_gap`` every reachable event of step ``i`` is kept and an event of step ``i + 1`` is reachable when the
  *latest* reachable step-``i`` event strictly before it (an ASOF join) lies within ``max_gap``: if that one is
  too far, every earlier one is too.
* a drop-off: each A event ASOF-joined to the user's *first* B event strictly after it; the A event counts when
  there is none or it is later than ``within``. The B scan is bounded by the window's start and its end plus
  ``within``.

Every scan is bounded by the window on ``$time`` with literal timestamps, so DuckDB's zone maps and ClickHouse's
partitions and primary key skip what lies outside. Event names and time bounds are literals (names are checked
against ``[A-Za-z0-9_$]``, bounds are numbers we computed); the values of a step's ``where`` are parameters
appended, in text order, to the rule compiler's own list (the step's ``where`` compiles with the same dialect,
over the event table's alias ``e``).

Several segments computed together (the DAILY recompute, a users import's recompute) share passes over the
events: :func:`shared_groups` picks the measures of one event name with overlapping windows that two or
more conditions ask for, :meth:`EventSQL.shared_pass` computes them in one ``GROUP BY gio_id`` into a table (the
engine's; each aggregate filtered only by what its measure asks beyond the pass's scan), and each condition
then reads its column there (:class:`SharedPass`).

A project without an event table sees no events: a measure is then its zero value for everyone, a sequence or a
drop-off matches nobody. An attribute the catalogue knows but the table has no column for (no event carried it
yet) is null on every event.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from segport.domain.behaviour import (
    HOUR_MS,
    ZERO_MEASURES,
    BehaviourContext,
    Condition,
    DropOffCondition,
    EventCondition,
    EventSchema,
    Measure,
    SequenceCondition,
    Step,
    Window,
    resolve_window,
)
from segport.domain.behaviour_parse import parse_condition
from segport.domain.keys import GIO_ID, ValueType, quote_ident
from segport.domain.rules import RuleCompiler, is_event_condition
from segport.errors import InvalidRule

MAX_OFFSET_SCAN_MS = 400 * 24 * HOUR_MS  # longer windows are not checked for one UTC offset
MAX_MS = 9_999_999_999_999  # 2286-11-20: bounds beyond are clamped (every event lies well inside)
_CMP = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def compares(measured: float, op: str, value: Any) -> bool:
    """``measured OP value`` in Python (to decide which form a condition takes)."""
    if op == "between":
        return bool(value[0] <= measured <= value[1])
    return {
        "eq": measured == value,
        "ne": measured != value,
        "gt": measured > value,
        "gte": measured >= value,
        "lt": measured < value,
        "lte": measured <= value,
    }[op]


def fixed_offset_ms(time_zone: str, window: Window | None) -> int | None:
    """The time zone's UTC offset in ms when it is the same all through ``window`` (checked every hour: a zone
    changes its offset for months, not minutes), so a day in that zone is the date of the time shifted by it;
    ``None`` when it changes, or the window is unbounded or longer than 400 days."""
    if window is None or window.start_ms is None or window.end_ms is None:
        return None
    if window.end_ms - window.start_ms > MAX_OFFSET_SCAN_MS:
        return None
    tz = ZoneInfo(time_zone)
    offsets = set()
    for t in [*range(window.start_ms, window.end_ms, HOUR_MS), window.end_ms]:
        offset = dt.datetime.fromtimestamp(t / 1000, tz).utcoffset()
        offsets.add(offset)
        if len(offsets) > 1:
            return None
    (offset,) = offsets
    return None if offset is None else int(offset.total_seconds() * 1000)


def where_keys(rule: Any) -> set[str]:
    """The attribute keys a step's ``where`` names."""
    if not isinstance(rule, dict):
        return set()
    if "key" in rule:
        return {str(rule["key"])}
    out: set[str] = set()
    for child in rule.get("and", []) + rule.get("or", []) + ([rule["not"]] if "not" in rule else []):
        out |= where_keys(child)
    return out


@dataclass(frozen=True, slots=True)
class SharedPass:
    """Measures computed for several segments by shared passes over the events: by :func:`measure_key`, the table
    (``gio_id`` and one column per measure; users with no matching event have no row) and the column."""

    columns: Mapping[str, tuple[str, str]]


def shared_groups(conds: list[EventCondition], now_ms: int, time_zone: str) -> list[list[EventCondition]]:
    """The measure conditions worth one pass each: of one event name, two or more different measures whose windows
    overlap (chained: each overlaps the ones before it), so the pass reads no event the separate statements would
    not (windows apart would make it read the time between them). Distinct counts (``distinct``,
    ``distinct_days``) are left to their own statements: a hash of distinct values per user for many users at
    once costs more than the scans it saves."""
    by_name: dict[str, dict[str, tuple[EventCondition, Window]]] = {}
    for cond in conds:
        if cond.measure.kind in ("distinct", "distinct_days"):
            continue
        window = resolve_window(cond.time, now_ms, time_zone)
        by_name.setdefault(cond.step.event, {}).setdefault(measure_key(cond, window, time_zone), (cond, window))
    groups: list[list[EventCondition]] = []
    for found in by_name.values():
        # by start (unbounded first); a window joins the group while it starts before the group's end
        ordered = sorted(found.values(), key=lambda cw: -math.inf if cw[1].start_ms is None else cw[1].start_ms)
        group: list[EventCondition] = []
        end: float = -math.inf
        for cond, window in ordered:
            start = -math.inf if window.start_ms is None else window.start_ms
            if group and start >= end:
                groups.append(group)
                group, end = [], -math.inf
            group.append(cond)
            end = max(end, math.inf if window.end_ms is None else window.end_ms)
        groups.append(group)
    return [group for group in groups if len(group) >= 2]


def measure_key(cond: EventCondition, window: Window, time_zone: str) -> str:
    """What a measure condition's per-user value depends on: its step, its measure, its resolved window (and the
    time zone, for days)."""
    where = json.dumps(cond.step.where, sort_keys=True, ensure_ascii=False)
    return repr((cond.step.event, where, cond.measure.kind, cond.measure.attribute, window, time_zone))


def shared_conditions(segments: list[Any]) -> tuple[BehaviourContext, list[EventCondition]] | None:
    """The measure conditions of several segments' rules that passes may share: those of the segments computed at
    the first one's clock and time zone (a segment whose rule does not parse is left to its own compilation,
    which says what is wrong); ``None`` when fewer than two segments have event conditions."""
    contexts = [s.behaviour for s in segments if s.behaviour is not None and s.rule_tree is not None]
    if len(contexts) < 2:
        return None
    ctx = contexts[0]
    conds: list[EventCondition] = []
    for seg in segments:
        if seg.behaviour is not None and (seg.behaviour.now_ms, seg.behaviour.time_zone) == (ctx.now_ms, ctx.time_zone):
            try:
                conds += measure_conditions(seg.rule_tree, seg.behaviour.events)
            except InvalidRule:
                continue
    return ctx, conds


def measure_conditions(rule: Any, events: EventSchema) -> list[EventCondition]:
    """The measure conditions (``{"event": E, ...}`` without ``not_followed_by``) of a JSON rule, parsed."""
    if not isinstance(rule, dict):
        return []
    if is_event_condition(rule):
        cond = parse_condition(rule, "rule", events)
        return [cond] if isinstance(cond, EventCondition) else []
    out: list[EventCondition] = []
    for name in ("and", "or"):
        if isinstance(rule.get(name), list):
            for child in rule[name]:
                out += measure_conditions(child, events)
    if "not" in rule:
        out += measure_conditions(rule["not"], events)
    return out


class EventSQL:
    """Writes the SQL of event conditions for one rule compilation. ``rules`` is the rule compiler of the
    enclosing rule (its dialect writes the steps' ``where`` and its parameter list takes their values);
    ``table`` is the project's event table (``None``: it has none yet) and ``columns`` its column names."""

    def __init__(
        self,
        ctx: BehaviourContext,
        rules: RuleCompiler,
        table: str | None,
        columns: Mapping[str, Any],
        shared: SharedPass | None = None,
    ) -> None:
        self.ctx = ctx
        self.rules = rules
        self.table = table
        self.columns = columns
        self.shared = shared

    # --- the dialect ----------------------------------------------------------------------------------------
    def timestamp(self, ms: int) -> str:
        """A literal of the ``$time`` column's type at ``ms``."""
        raise NotImplementedError

    def millis(self, col: str) -> str:
        """``$time`` as milliseconds since the epoch (a 64-bit integer)."""
        raise NotImplementedError

    def day(self, col: str, window: Window | None = None) -> str:
        """The calendar day of ``$time`` in the project's time zone (for events inside ``window``)."""
        raise NotImplementedError

    def count_distinct(self, expr: str) -> str:
        raise NotImplementedError

    def distinct_days(self, col: str, window: Window | None = None) -> str:
        """The number of distinct days (:meth:`day`) of ``col`` over the rows aggregated, all inside ``window``."""
        return self.count_distinct(self.day(col, window))

    def double(self, value: float) -> str:
        """A double literal."""
        raise NotImplementedError

    def null_of(self, value_type: ValueType) -> str:
        """A typed null (for a catalogued attribute the table has no column for)."""
        raise NotImplementedError

    def aggregate_if(self, fn: str, arg: str, test: str) -> str:
        """``fn`` (count, distinct, sum, avg, min, max) over the rows where ``test`` holds (``arg``: its argument;
        ``*`` for count)."""
        if fn == "distinct":
            return f"count(DISTINCT {arg}) FILTER (WHERE {test})"
        return f"{fn}({arg}) FILTER (WHERE {test})"

    def asof(self, left: str, right: str, key: str, kind: str = "") -> str:
        """``left [kind] ASOF JOIN right ON <same gio_id> AND <key>`` (``key`` names the aliases x/r)."""
        return f"{left} ASOF {kind + ' ' if kind else ''}JOIN {right} ON x.gio_id = r.gio_id AND {key}"

    # --- conditions -------------------------------------------------------------------------------------------
    def condition(self, cond: Condition) -> str:
        window = resolve_window(cond.time, self.ctx.now_ms, self.ctx.time_zone)
        if isinstance(cond, EventCondition):
            return self.measure_condition(cond, window)
        if isinstance(cond, SequenceCondition):
            return self.sequence(cond, window)
        return self.drop_off(cond, window)

    def measure_condition(self, cond: EventCondition, window: Window) -> str:
        kind = cond.measure.kind
        zero_holds = kind in ZERO_MEASURES and compares(0, cond.op, cond.value)
        if self.table is None:  # no events: every user's measure is its zero value, or none
            return "true" if zero_holds else "false"
        found = self.shared.columns.get(measure_key(cond, window, self.ctx.time_zone)) if self.shared else None
        if found is not None:  # computed by a shared pass over the events
            table, column = found
            value = f"b.{column}"
            test = self.comparison(f"coalesce({value}, 0)" if kind in ZERO_MEASURES else value, cond.op, cond.value)
            if zero_holds:
                return f"(u.gio_id NOT IN (SELECT b.gio_id FROM {table} AS b WHERE NOT {test}))"
            return f"(u.gio_id IN (SELECT b.gio_id FROM {table} AS b WHERE {test}))"
        src = self.step_scan(cond.step, window, [cond.measure.attribute] if cond.measure.attribute else [])
        if kind == "count":
            did = cond.op in ("gt", "gte") and not zero_holds and compares(1, cond.op, cond.value)
            did_not = cond.op in ("lt", "lte", "eq", "between") and zero_holds and not compares(1, cond.op, cond.value)
            if did or did_not:  # the count only needs telling 0 from 1 or more: is there one matching event
                ids = f"SELECT DISTINCT e.gio_id {src}"
                return f"(u.gio_id NOT IN ({ids}))" if did_not else f"(u.gio_id IN ({ids}))"
        test = self.comparison(self.aggregate(cond.measure, window), cond.op, cond.value)
        if zero_holds:
            return f"(u.gio_id NOT IN (SELECT e.gio_id {src} GROUP BY e.gio_id HAVING NOT {test}))"
        return f"(u.gio_id IN (SELECT e.gio_id {src} GROUP BY e.gio_id HAVING {test}))"

    def aggregate(self, measure: Measure, window: Window | None = None) -> str:
        attr = f"e.{quote_ident(measure.attribute)}" if measure.attribute else ""
        if measure.kind == "count":
            return "count(*)"
        if measure.kind == "distinct_days":
            return self.distinct_days('e."$time"', window)
        if measure.kind == "distinct":
            return self.count_distinct(attr)
        if measure.kind == "sum":
            return f"coalesce(sum({attr}), 0)"
        return f"{measure.kind}({attr})"

    def comparison(self, expr: str, op: str, value: Any) -> str:
        if op == "between":
            return f"coalesce({expr} BETWEEN {self.number(value[0])} AND {self.number(value[1])}, false)"
        return f"coalesce({expr} {_CMP[op]} {self.number(value)}, false)"

    def number(self, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"a measure compares with a number, not {value!r}")
        if isinstance(value, int):
            return str(value)
        if not math.isfinite(value):
            raise ValueError(f"a measure compares with a finite number, not {value!r}")
        return self.double(value)

    def sequence(self, cond: SequenceCondition, window: Window) -> str:
        if self.table is None:
            return "false"
        gap = cond.max_gap_ms
        parts: list[str] = []
        t = self.millis('e."$time"')
        for i, step in enumerate(cond.steps, start=1):
            scan = self.step_scan(step, window, [])
            if gap is None:
                if i == 1:
                    parts.append(f"r1 AS (SELECT e.gio_id, min({t}) AS t {scan} GROUP BY e.gio_id)")
                else:
                    parts.append(f"s{i} AS (SELECT e.gio_id, {t} AS t {scan})")
                    parts.append(
                        f"r{i} AS (SELECT x.gio_id, min(x.t) AS t FROM s{i} AS x INNER JOIN r{i - 1} AS r "
                        f"ON x.gio_id = r.gio_id WHERE x.t > r.t GROUP BY x.gio_id)"
                    )
            elif i == 1:  # no DISTINCT: a repeated (user, time) changes no ASOF match, and costs a hash table
                parts.append(f"r1 AS (SELECT e.gio_id, {t} AS t {scan})")
            else:
                parts.append(f"s{i} AS (SELECT e.gio_id, {t} AS t {scan})")
                joined = self.asof(f"s{i} AS x", f"r{i - 1} AS r", "x.t > r.t")
                parts.append(f"r{i} AS (SELECT x.gio_id, x.t FROM {joined} WHERE x.t - r.t <= {int(gap)})")
        last = len(cond.steps)
        return f"(u.gio_id IN (WITH {', '.join(parts)} SELECT gio_id FROM r{last}))"

    def drop_off(self, cond: DropOffCondition, window: Window) -> str:
        if self.table is None:
            return "false"
        t = self.millis('e."$time"')
        within = int(cond.within_ms)
        first = self.step_scan(cond.step, window, [])
        # a B event that can follow an A event of the window lies in (start, end + within)
        after = Window(window.start_ms, None if window.end_ms is None else window.end_ms + within)
        then = self.step_scan(cond.then, after, [])
        joined = self.asof(
            f"(SELECT e.gio_id, {t} AS t {first}) AS x",
            f"(SELECT e.gio_id, {t} AS t, 1 AS hit {then}) AS r",
            "x.t < r.t",
            "LEFT",
        )
        return f"(u.gio_id IN (SELECT x.gio_id FROM {joined} WHERE coalesce(r.hit, 0) = 0 OR r.t > x.t + {within}))"

    # --- scans ------------------------------------------------------------------------------------------------
    def step_tests(self, step: Step, window: Window) -> list[str]:
        """The tests of a step's matching events: its name, the window on ``$time``, its ``where``."""
        tests = [f'e."$event" = {self.string(step.event)}', *self.window_tests(window)]
        if step.where is not None:
            tests.append(self.where(step.where))
        return tests

    def window_tests(self, window: Window) -> list[str]:
        tests = []
        if window.start_ms is not None:
            tests.append(f'e."$time" >= {self.timestamp(max(0, min(window.start_ms, MAX_MS)))}')
        if window.end_ms is not None:
            tests.append(f'e."$time" < {self.timestamp(max(0, min(window.end_ms, MAX_MS)))}')
        return tests

    def step_scan(self, step: Step, window: Window, extra: list[str]) -> str:
        """``FROM <events> e WHERE <name> AND <window> AND <where>``: a step's matching events."""
        tests = self.step_tests(step, window)
        return f"FROM {self.source(where_keys(step.where) | set(extra))} AS e WHERE {' AND '.join(tests)}"

    def shared_pass(self, conds: list[EventCondition]) -> tuple[str, dict[str, str]] | None:
        """One ``SELECT gio_id, <measure 0>, <measure 1>, ... GROUP BY gio_id`` over the events for measure
        conditions of several segments (one group of :func:`shared_groups`), and the column of each condition's
        measure (by :func:`measure_key`); ``None`` when there is nothing to share. The scan is bounded by the
        names and the windows together; each measure is an aggregate filtered by what its step asks beyond that
        (a plain aggregate when nothing: its name is the only one, its window the widest)."""
        if self.table is None:
            return None
        picked: dict[str, tuple[EventCondition, Window]] = {}
        for cond in conds:
            window = resolve_window(cond.time, self.ctx.now_ms, self.ctx.time_zone)
            picked.setdefault(measure_key(cond, window, self.ctx.time_zone), (cond, window))
        if not picked:
            return None
        names = sorted({cond.step.event for cond, _ in picked.values()})
        starts = [w.start_ms for _, w in picked.values()]
        ends = [w.end_ms for _, w in picked.values()]
        bounded = Window(
            None if None in starts else min(s for s in starts if s is not None),
            None if None in ends else max(e for e in ends if e is not None),
        )
        aggregates, columns, keys = [], {}, set()
        for i, (key, (cond, window)) in enumerate(picked.items()):
            tests = [f'e."$event" = {self.string(cond.step.event)}'] if len(names) > 1 else []
            tests += self.window_tests(
                Window(
                    None if window.start_ms == bounded.start_ms else window.start_ms,
                    None if window.end_ms == bounded.end_ms else window.end_ms,
                )
            )
            if cond.step.where is not None:  # its values join the parameters in text order: the aggregates first
                tests.append(self.where(cond.step.where))
            measure = cond.measure
            attr = f"e.{quote_ident(measure.attribute)}" if measure.attribute else ""
            fn, arg = measure.kind, attr
            if measure.kind == "count":
                arg = "*"
            elif measure.kind == "distinct_days":
                fn, arg = "distinct", self.day('e."$time"', bounded)
            if tests:
                agg = self.aggregate_if(fn, arg, " AND ".join(tests))
            else:
                agg = self.count_distinct(arg) if fn == "distinct" else f"{fn}({arg})"
            aggregates.append(f"{agg} AS m{i}")
            columns[key] = f"m{i}"
            keys |= where_keys(cond.step.where) | ({measure.attribute} if measure.attribute else set())
        tests = [f'e."$event" IN ({", ".join(self.string(n) for n in names)})', *self.window_tests(bounded)]
        sql = (
            f"SELECT e.gio_id, {', '.join(aggregates)} FROM {self.source(keys)} AS e "
            f"WHERE {' AND '.join(tests)} GROUP BY e.gio_id"
        )
        return sql, columns

    def where(self, rule: Any) -> str:
        """A step's ``where`` in the rule compiler's dialect over the event alias ``e``, its values appended to
        the enclosing rule's parameters."""
        return self.rules.step_where(rule, "e")

    def source(self, keys: set[str]) -> str:
        """The event table, with a typed null for every named attribute it has no column for."""
        assert self.table is not None
        missing = sorted(k for k in keys if k != GIO_ID and k not in self.columns)
        if not missing:
            return self.table
        nulls = []
        for key in missing:
            entry = self.ctx.events.attributes.get(key)
            nulls.append(f"{self.null_of(entry.type if entry else ValueType.STRING)} AS {quote_ident(key)}")
        return f"(SELECT *, {', '.join(nulls)} FROM {self.table})"


class EventTableRules(RuleCompiler):
    """A rule dialect that compiles event conditions over a project's event table: each engine's dialect
    (``DuckDBRules``, ``ClickHouseRules``) derives from it and names its writer of event SQL in ``event_sql``."""

    event_sql: type[EventSQL]
    # the project's event table, as event conditions read it: set by :meth:`on_events` for one computation
    event_table: str | None = None
    event_columns: Mapping[str, Any] | None = None
    event_shared: SharedPass | None = None  # measures computed for several segments in one pass

    @classmethod
    def on_events(
        cls, table: str | None, columns: Mapping[str, Any], shared: SharedPass | None = None
    ) -> type[EventTableRules]:
        """This dialect over a project's event table (``None``: the project has none yet) and its columns."""
        attrs = {"event_table": table, "event_columns": dict(columns), "event_shared": shared}
        return type(cls.__name__, (cls,), attrs)

    def event_condition(self, cond: Condition) -> str:
        """An event condition as a boolean expression over the users alias ``u``; its steps' ``where`` values
        join this compiler's parameters in text order."""
        if self.behaviour is None or self.event_columns is None:
            raise RuntimeError(
                f"event conditions compile over an event table: use {type(self).__name__}.on_events(...)"
            )
        sql = self.event_sql(self.behaviour, self, self.event_table, self.event_columns, self.event_shared)
        return sql.condition(cond)
