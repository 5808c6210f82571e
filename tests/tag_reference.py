"""A plain-Python reference for tags computed from events, written from the semantics in segport/domain/behaviour.py
and segport/domain/tags.py (docs/tags.md), not from either engine's SQL: the tests compare both engines to it.

Events are ``(gio_id, time_ms, event, attrs)``; a definition is the JSON a user writes; the answer is each user's
value (``None``: no value). The ``where`` rules and the measures are the event conditions' reference
(tests/behaviour_reference.py); the picks, their ties and the layers are written here."""

from __future__ import annotations

from collections import Counter
from typing import Any

from segport.domain.behaviour import Measure, TimeSpec, resolve_window
from tests.behaviour_reference import Ev, measure_value, where_holds

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
        if name == defn["event"] and window.holds(t) and where_holds(defn.get("where"), attrs) and gio in mine:
            mine[gio].append(e)
    out = {}
    for user, evs in mine.items():
        if kind == "AGGREGATED":
            out[user] = measure_value(_measure(defn.get("measure", "count")), [Ev(*e) for e in evs], tz)
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


def _measure(measure: Any) -> Measure:
    if isinstance(measure, str):
        return Measure(measure)  # type: ignore[arg-type]
    ((kind, attr),) = measure.items()
    return Measure(kind, attr)


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
