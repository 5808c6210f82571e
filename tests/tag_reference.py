"""A plain-Python reference for tags computed from events, written from the semantics in segport/domain/behaviour.py
and segport/domain/tags.py (docs/tags.md), not from either engine's SQL: the tests compare both engines to it.

Events are ``(gio_id, time_ms, event, attrs)``; a definition is the JSON a user writes; the answer is each user's
value (``None``: no value)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

from segport.domain.behaviour import TimeSpec, resolve_window

Event = tuple[int, int, str, dict[str, Any]]


def tag_values(
    defn: dict[str, Any], events: list[Event], users: list[int], now_ms: int, tz: str, tags: dict[str, dict[int, Any]]
) -> dict[int, Any]:
    """Each user's value of ``defn``; ``tags`` holds the values of tags a HORIZONTAL definition may name."""
    kind = defn["type"]
    if kind == "HORIZONTAL":
        source = defn["source"]
        if isinstance(source, str):
            values = tags[source]
        else:
            values = tag_values({"type": "AGGREGATED", **source}, events, users, now_ms, tz, tags)
        return {u: _layer(values.get(u), defn["layers"]) for u in users}
    window = resolve_window(_time(defn.get("time")), now_ms, tz)
    mine: dict[int, list[Event]] = {u: [] for u in users}
    for e in events:
        gio, t, name, attrs = e
        if name == defn["event"] and window.holds(t) and _matches(defn.get("where"), attrs) and gio in mine:
            mine[gio].append(e)
    out = {}
    for user, evs in mine.items():
        if kind == "AGGREGATED":
            out[user] = _measure(defn.get("measure", "count"), evs, tz)
            continue
        attr = defn["attribute"]
        values = [(t, a[attr]) for _, t, _, a in evs if a.get(attr) is not None]
        if not values:
            out[user] = None
        elif kind == "ATTRIBUTION_ATTRIBUTE":
            out[user] = (min(values) if defn["pick"] == "first" else max(values))[1]
        elif defn["pick"] == "max":
            out[user] = max(v for _, v in values)
        elif defn["pick"] == "min":
            out[user] = min(v for _, v in values)
        else:  # most frequent; the smallest of equally frequent values
            counts = Counter(v for _, v in values)
            top = max(counts.values())
            out[user] = min(v for v, n in counts.items() if n == top)
    return out


def _measure(measure: Any, evs: list[Event], tz: str) -> Any:
    if measure == "count":
        return len(evs)
    if measure == "distinct_days":
        zone = ZoneInfo(tz)
        return len({dt.datetime.fromtimestamp(t / 1000, zone).date() for _, t, _, _ in evs})
    ((kind, attr),) = measure.items()
    values = [a[attr] for _, _, _, a in evs if a.get(attr) is not None]
    if kind == "distinct":
        return len(set(values))
    if kind == "sum":
        return sum(values) if values else 0
    if not values:
        return None
    if kind == "avg":
        return sum(values) / len(values)
    return min(values) if kind == "min" else max(values)


def _layer(value: Any, layers: list[dict[str, Any]]) -> str | None:
    if value is None:
        return None
    for layer in layers:
        if "gte" not in layer or value >= layer["gte"]:
            return str(layer["name"])
    return None


def _time(obj: dict[str, Any] | None) -> TimeSpec | None:
    if obj is None:
        return None
    ((kind, arg),) = obj.items()
    if kind in ("last_days", "last_hours"):
        return TimeSpec(kind, n=arg)
    if kind == "since":
        return TimeSpec("since", start=arg)
    return TimeSpec("between", start=arg[0], end=arg[1])


def _matches(rule: Any, attrs: dict[str, Any]) -> bool:
    """Today's rule grammar over one event's attributes: a leaf on a missing value is false (but ``is_null``)."""
    if rule is None:
        return True
    if "and" in rule:
        return all(_matches(r, attrs) for r in rule["and"])
    if "or" in rule:
        return any(_matches(r, attrs) for r in rule["or"])
    if "not" in rule:
        return not _matches(rule["not"], attrs)
    op, have, want = rule["op"], attrs.get(rule["key"]), rule.get("value")
    if op == "is_null":
        return have is None
    if have is None:
        return False
    return {
        "not_null": lambda: True,
        "eq": lambda: have == want,
        "ne": lambda: have != want,
        "gt": lambda: have > want,
        "gte": lambda: have >= want,
        "lt": lambda: have < want,
        "lte": lambda: have <= want,
        "in": lambda: have in want,
        "not_in": lambda: have not in want,
    }[op]()
