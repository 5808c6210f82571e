"""An independent reference for event conditions: plain Python over a list of events, written from the semantics
in :mod:`segport.domain.behaviour` (its module docstring) and :mod:`segport.domain.rules` (property leaves),
never from either engine's SQL. The engines' agreement tests compare their members with these.

Events are :class:`Ev` values (``gio_id``, ``time_ms``, ``event``, ``attrs``); the users are the gio_ids of the
project's users table (a condition matches users only: an event of a gio_id that is no user matches nobody).
Rule trees may mix property leaves (``{"key": "usr_x", "op": ..., "value": ...}`` over a user's properties) with
parsed event conditions (:data:`segport.domain.behaviour.Condition` values, in place of their JSON) under
``and``/``or``/``not``: see :func:`rule_members`.

Everything here is deliberately brute force (every pair of events in a sequence is tried), so that nothing in
it resembles the engines' ASOF joins.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from segport.domain.behaviour import (
    AggregatedTag,
    Condition,
    DropOffCondition,
    EventCondition,
    Measure,
    SequenceCondition,
    Step,
    Window,
    day_of,
    resolve_window,
)


@dataclass(frozen=True)
class Ev:
    """One event: the user's gio_id, its time (ms since the epoch, UTC), its name and its attributes (standard
    fields such as ``$path`` included, by their column name); a missing attribute is a null."""

    gio_id: int
    time_ms: int
    event: str
    attrs: Mapping[str, Any] = field(default_factory=dict)


# --- property-rule semantics (segport.domain.rules), over one value map ---------------------------------------
def _coerce(v: Any, like: Any) -> Any:
    """A rule value in the type of the stored value ``like`` (rules may write 5 for 5.0, "3" for 3)."""
    if isinstance(like, bool):
        return v
    if isinstance(like, int):
        return int(v) if not isinstance(v, str) else int(v.strip())
    if isinstance(like, float):
        return float(v) if not isinstance(v, str) else float(v.strip())
    if isinstance(like, dt.date):
        return dt.date.fromisoformat(v.strip()) if isinstance(v, str) else v
    return v


def leaf_holds(leaf: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """A property leaf over a map of single values (event attributes): it matches only where the key has a
    value, except ``is_null``."""
    op = leaf["op"]
    have = values.get(leaf["key"])
    if op == "is_null":
        return have is None
    if op == "not_null":
        return have is not None
    if have is None:
        return False
    value = leaf.get("value")
    if op in ("in", "not_in"):
        inside = any(have == _coerce(v, have) for v in value)
        return inside if op == "in" else not inside
    if op == "between":
        lo, hi = (_coerce(v, have) for v in value)
        return lo <= have <= hi
    if op == "contains":
        return str(value) in have
    other = _coerce(value, have)
    return {
        "eq": have == other,
        "ne": have != other,
        "gt": have > other,
        "gte": have >= other,
        "lt": have < other,
        "lte": have <= other,
    }[op]


def where_holds(rule: Any, values: Mapping[str, Any]) -> bool:
    """A ``where`` rule tree (property grammar) over one event's attributes; ``None`` holds for every event."""
    if rule is None:
        return True
    if "and" in rule:
        return all(where_holds(r, values) for r in rule["and"])
    if "or" in rule:
        return any(where_holds(r, values) for r in rule["or"])
    if "not" in rule:
        return not where_holds(rule["not"], values)
    return leaf_holds(rule, values)


# --- event conditions -------------------------------------------------------------------------------------------
def step_events(step: Step, events: Iterable[Ev], window: Window) -> list[Ev]:
    """The events matching a step (its name, its ``where``) inside ``window``."""
    return [e for e in events if e.event == step.event and window.holds(e.time_ms) and where_holds(step.where, e.attrs)]


def measure_value(measure: Measure, matching: list[Ev], tz: str) -> Any:
    """A user's measure over their matching events; ``None`` is "no value" (avg/min/max of nothing)."""
    if measure.kind == "count":
        return len(matching)
    if measure.kind == "distinct_days":
        return len({day_of(e.time_ms, tz) for e in matching})
    assert measure.attribute is not None
    values = [e.attrs.get(measure.attribute) for e in matching]
    present = [v for v in values if v is not None]
    if measure.kind == "distinct":
        return len(set(present))
    if measure.kind == "sum":
        return sum(present)
    if not present:
        return None
    if measure.kind == "avg":
        return sum(present) / len(present)
    return min(present) if measure.kind == "min" else max(present)


def compares(measured: Any, op: str, value: Any) -> bool:
    """``measured OP value``; no value compares false whatever the op."""
    if measured is None:
        return False
    if op == "between":
        lo, hi = value
        return lo <= measured <= hi
    return {
        "eq": measured == value,
        "ne": measured != value,
        "gt": measured > value,
        "gte": measured >= value,
        "lt": measured < value,
        "lte": measured <= value,
    }[op]


def _by_user(events: Iterable[Ev]) -> dict[int, list[Ev]]:
    out: dict[int, list[Ev]] = defaultdict(list)
    for e in events:
        out[e.gio_id].append(e)
    return out


def _sequence_holds(cond: SequenceCondition, mine: list[Ev], window: Window) -> bool:
    # the events that can end a valid chain of the first i steps, for i = 1, 2, ...: every pair is tried
    reach = step_events(cond.steps[0], mine, window)
    for step in cond.steps[1:]:
        candidates = step_events(step, mine, window)
        reach = [
            x
            for x in candidates
            if any(
                r.time_ms < x.time_ms and (cond.max_gap_ms is None or x.time_ms - r.time_ms <= cond.max_gap_ms)
                for r in reach
            )
        ]
        if not reach:
            return False
    return bool(reach)


def _drop_off_holds(cond: DropOffCondition, mine: list[Ev], window: Window) -> bool:
    followers = step_events(cond.then, mine, Window(None, None))  # B may lie outside the window
    return any(
        not any(a.time_ms < b.time_ms <= a.time_ms + cond.within_ms for b in followers)
        for a in step_events(cond.step, mine, window)
    )


def holds(cond: Condition, mine: list[Ev], now_ms: int, tz: str) -> bool:
    """Whether a user with the events ``mine`` (all theirs, any name, any time) matches ``cond``."""
    window = resolve_window(cond.time, now_ms, tz)
    if isinstance(cond, EventCondition):
        measured = measure_value(cond.measure, step_events(cond.step, mine, window), tz)
        return compares(measured, cond.op, cond.value)
    if isinstance(cond, SequenceCondition):
        return _sequence_holds(cond, mine, window)
    assert isinstance(cond, DropOffCondition)
    return _drop_off_holds(cond, mine, window)


def members(cond: Condition, events: Iterable[Ev], users: Iterable[int], now_ms: int, tz: str) -> set[int]:
    """The users (gio_ids of the users table) matching an event condition."""
    by_user = _by_user(events)
    return {g for g in users if holds(cond, by_user.get(g, []), now_ms, tz)}


def rule_members(
    rule: Any, users: Mapping[int, Mapping[str, Any]], events: Iterable[Ev], now_ms: int, tz: str
) -> set[int]:
    """The users matching a rule tree whose nodes are ``and``/``or``/``not`` dicts, property leaves over the
    users' single-valued properties (``users``: gio_id -> {key: value}), or parsed event conditions."""
    by_user = _by_user(events)

    def test(node: Any, gio_id: int) -> bool:
        if isinstance(node, (EventCondition, SequenceCondition, DropOffCondition)):
            return holds(node, by_user.get(gio_id, []), now_ms, tz)
        if "and" in node:
            return all(test(n, gio_id) for n in node["and"])
        if "or" in node:
            return any(test(n, gio_id) for n in node["or"])
        if "not" in node:
            return not test(node["not"], gio_id)
        return leaf_holds(node, users[gio_id])

    return {g for g in users if test(rule, g)}


def aggregated(tag: AggregatedTag, events: Iterable[Ev], users: Iterable[int], now_ms: int, tz: str) -> dict[int, Any]:
    """An AGGREGATED tag's value per user (the measure over the window; 0 / None for a user without events)."""
    window = resolve_window(tag.time, now_ms, tz)
    by_user = _by_user(events)
    return {g: measure_value(tag.measure, step_events(tag.step, by_user.get(g, []), window), tz) for g in users}
