"""Event conditions and event tags from their JSON: checked against the project's event catalogue and turned
into the values of :mod:`segport.domain.behaviour`.

Every refusal is an :class:`InvalidRule` (400 ``INVALID_RULE``) whose message starts with the path of the part at
fault, as the property rules' messages do: ``rule.and[1].sequence[0].where: unknown attribute 'amt'``. The
grammar, the limits below and the messages are documented in docs/behaviour.md.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from segport.domain.behaviour import (
    ATTRIBUTE_MEASURES,
    DAY_MS,
    HOUR_MS,
    MEASURE_OPS,
    NUMERIC_MEASURES,
    AggregatedTag,
    AttributionTag,
    Condition,
    DropOffCondition,
    EventCondition,
    EventSchema,
    HorizontalTag,
    Layer,
    Measure,
    SequenceCondition,
    Step,
    TagDefinition,
    TimeSpec,
    TopNTag,
    is_date,
)
from segport.domain.event_files import TYPE_COLUMN, EventAttribute
from segport.domain.events import STD_DOUBLES, STD_INTS, STD_STRINGS
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType, canonical_key
from segport.domain.property_rules import INT_MAX, INT_MIN, PropertyRuleCompiler, is_event_condition
from segport.errors import InvalidRule

__all__ = [
    "MAX_DAYS",
    "MAX_LAYERS",
    "MAX_STEPS",
    "STANDARD_FIELDS",
    "event_schema",
    "is_event_condition",
    "parse_condition",
    "parse_measure",
    "parse_step",
    "parse_tag_definition",
    "parse_time",
]

# --- limits (docs/behaviour.md) -------------------------------------------------------------------------
MAX_STEPS = 10  # steps of a sequence (at least 2)
MAX_DAYS = 3660  # last_days, and the longest max_gap / within (about ten years); last_hours: MAX_DAYS * 24
MAX_LAYERS = 20  # layers of a HORIZONTAL tag
MAX_LAYER_NAME = 100  # characters of a layer's name
MAX_TIME_TEXT = 40  # characters of a between / since bound

# the standard fields an event row may carry, as the event table's text columns ($type, then the SDK's fields)
STANDARD_FIELDS: tuple[str, ...] = (
    TYPE_COLUMN,
    *("$" + f for f in (*STD_STRINGS, *STD_INTS, *STD_DOUBLES, "resourceItemId", "resourceItemKey")),
)

_TIME_KINDS = ("last_days", "last_hours", "between", "since")
_DURATION_MS = {"minutes": 60_000, "hours": HOUR_MS, "days": DAY_MS}
_SIMPLE_MEASURES = ("count", "distinct_days")
_CONDITION_FIELDS = ("event", "where", "measure", "op", "value", "time")
_DROP_OFF_FIELDS = ("event", "where", "time", "not_followed_by")
_SEQUENCE_FIELDS = ("sequence", "time", "max_gap")
_TAG_TYPES = ("AGGREGATED", "ATTRIBUTION_ATTRIBUTE", "TOP_N_ATTRIBUTE", "HORIZONTAL")


def event_schema(names: list[str], attributes: list[EventAttribute]) -> EventSchema:
    """The schema event conditions are checked against: the project's event names and its attribute catalogue,
    with the standard fields (``$type``, ``$path``, ``$domain`` …) as string entries."""
    entries = [CatalogEntry(a.key, KeyKind.PROPERTY, a.name, a.type) for a in attributes]
    entries += [CatalogEntry(f, KeyKind.PROPERTY, f, ValueType.STRING) for f in STANDARD_FIELDS]
    return EventSchema(sorted(set(names)), Catalog(entries))


# --- conditions ---------------------------------------------------------------------------------------------
def parse_condition(node: dict[str, Any], where: str, events: EventSchema) -> Condition:
    """An event condition (``node`` holds ``event`` or ``sequence``) at path ``where`` of a rule."""
    if not isinstance(node, dict):
        raise InvalidRule(f"{where}: expected an object, got {type(node).__name__}")
    if "sequence" in node:
        if "event" in node:
            raise InvalidRule(f"{where}: an event condition has either 'event' or 'sequence', not both")
        return _sequence(node, where, events)
    if "not_followed_by" in node:
        return _drop_off(node, where, events)
    _fields(node, where, _CONDITION_FIELDS)
    step = _step(node, where, events)
    measure = parse_measure(node["measure"], f"{where}.measure", events) if "measure" in node else Measure()
    op = node.get("op", "gte")
    if op not in MEASURE_OPS:
        raise InvalidRule(f"{where}.op: unknown op {op!r}; a measure compares with one of {', '.join(MEASURE_OPS)}")
    if "value" in node:
        value = _measure_value(node["value"], op, f"{where}.value")
    elif "op" in node:
        raise InvalidRule(f"{where}: op {op!r} needs a 'value'")
    else:
        value = 1
    time = parse_time(node["time"], f"{where}.time") if "time" in node else None
    return EventCondition(step, measure, op, value, time)


def _sequence(node: dict[str, Any], where: str, events: EventSchema) -> SequenceCondition:
    _fields(node, where, _SEQUENCE_FIELDS)
    raw = node["sequence"]
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_STEPS:
        got = f"{len(raw)} step(s)" if isinstance(raw, list) else type(raw).__name__
        raise InvalidRule(f"{where}.sequence: a sequence is a list of 2 to {MAX_STEPS} steps; got {got}")
    steps = tuple(parse_step(s, f"{where}.sequence[{i}]", events) for i, s in enumerate(raw))
    time = parse_time(node["time"], f"{where}.time") if "time" in node else None
    gap = _duration(node["max_gap"], f"{where}.max_gap") if "max_gap" in node else None
    return SequenceCondition(steps, time, gap)


def _drop_off(node: dict[str, Any], where: str, events: EventSchema) -> DropOffCondition:
    _fields(node, where, _DROP_OFF_FIELDS)
    step = _step(node, where, events)
    then_path = f"{where}.not_followed_by"
    then = node["not_followed_by"]
    if not isinstance(then, dict):
        raise InvalidRule(f"{then_path}: expected an object {{event, where, within}}, got {type(then).__name__}")
    _fields(then, then_path, ("event", "where", "within"))
    if "within" not in then:
        raise InvalidRule(f"{then_path}: 'within' is missing (e.g. {{\"hours\": 24}})")
    then_step = _step(then, then_path, events)
    within = _duration(then["within"], f"{then_path}.within")
    time = parse_time(node["time"], f"{where}.time") if "time" in node else None
    return DropOffCondition(step, then_step, within, time)


def parse_step(obj: Any, where: str, events: EventSchema) -> Step:
    """A sequence's step ``{"event": E, "where": R}``: a known event name, and ``R`` (optional) a property rule
    over the event attributes and standard fields."""
    if not isinstance(obj, dict):
        raise InvalidRule(f"{where}: expected a step {{event, where}}, got {type(obj).__name__}")
    _fields(obj, where, ("event", "where"))
    return _step(obj, where, events)


def _step(obj: dict[str, Any], where: str, events: EventSchema) -> Step:
    if "event" not in obj:
        raise InvalidRule(f"{where}: 'event' is missing")
    name = obj["event"]
    if not isinstance(name, str):
        raise InvalidRule(f"{where}.event: expected an event name, got {type(name).__name__}")
    if name not in events.names:
        raise InvalidRule(f"{where}.event: unknown event {name[:100]!r} (not in the project's event catalogue)")
    rule = obj.get("where")
    if rule is not None:
        PropertyRuleCompiler(events.attributes, "e", on_events=True).node(rule, f"{where}.where", 0)
    return Step(name, rule)


def parse_measure(obj: Any, where: str, events: EventSchema) -> Measure:
    """``"count"`` | ``"distinct_days"`` | ``{"sum"|"avg"|"min"|"max"|"distinct": ATTRIBUTE}``; sum, avg, min
    and max need a numeric (int or double) attribute."""
    if isinstance(obj, str):
        if obj not in _SIMPLE_MEASURES:
            raise InvalidRule(
                f"{where}: unknown measure {obj[:40]!r}; expected 'count', 'distinct_days' or "
                f"{{{' | '.join(ATTRIBUTE_MEASURES)}: attribute}}"
            )
        return Measure(obj)  # type: ignore[arg-type]
    if not isinstance(obj, dict) or len(obj) != 1:
        raise InvalidRule(
            f"{where}: expected 'count', 'distinct_days' or an object of one of {', '.join(ATTRIBUTE_MEASURES)} "
            "naming an attribute"
        )
    ((kind, attribute),) = obj.items()
    if kind not in ATTRIBUTE_MEASURES:
        raise InvalidRule(f"{where}: unknown measure {kind[:40]!r}; expected one of {', '.join(ATTRIBUTE_MEASURES)}")
    entry = _attribute(attribute, f"{where}.{kind}", events)
    if kind in NUMERIC_MEASURES and entry.type not in (ValueType.INT, ValueType.DOUBLE):
        raise InvalidRule(
            f"{where}.{kind}: {kind} needs a numeric attribute; {entry.key!r} is {entry.type.value} "
            "(count its distinct values with 'distinct')"
        )
    return Measure(kind, entry.key)


def _attribute(name: Any, where: str, events: EventSchema) -> CatalogEntry:
    if not isinstance(name, str):
        raise InvalidRule(f"{where}: expected an attribute key, got {type(name).__name__}")
    entry = events.attributes.entries.get(name)
    if entry is None:
        raise InvalidRule(f"{where}: unknown attribute {name[:100]!r}")
    return entry


def _measure_value(value: Any, op: str, where: str) -> Any:
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise InvalidRule(f"{where}: 'between' needs a value of two numbers [low, high]")
        low, high = (_number(v, where) for v in value)
        if low > high:
            raise InvalidRule(f"{where}: 'between' needs low <= high; got [{low}, {high}]")
        return [low, high]
    return _number(value, where)


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRule(f"{where}: a measure compares with a number; got {_shown(value)}")
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise InvalidRule(f"{where}: {value} is outside the 64-bit integer range")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRule(f"{where}: a measure compares with a finite number")
    return value


# --- time ---------------------------------------------------------------------------------------------------
def parse_time(obj: Any, where: str) -> TimeSpec:
    """``{"last_days": N}`` | ``{"last_hours": N}`` | ``{"between": [START, END]}`` | ``{"since": START}``."""
    if not isinstance(obj, dict) or len(obj) != 1:
        raise InvalidRule(f"{where}: expected one of {{{' | '.join(_TIME_KINDS)}: ...}}")
    ((kind, arg),) = obj.items()
    if kind == "last_days":
        return TimeSpec("last_days", n=_count(arg, f"{where}.last_days", MAX_DAYS, "days"))
    if kind == "last_hours":
        return TimeSpec("last_hours", n=_count(arg, f"{where}.last_hours", MAX_DAYS * 24, "hours"))
    if kind == "since":
        return TimeSpec("since", start=_bound(arg, f"{where}.since"))
    if kind == "between":
        if not isinstance(arg, list) or len(arg) != 2:
            raise InvalidRule(f"{where}.between: expected [START, END], two dates or times")
        start, end = _bound(arg[0], f"{where}.between[0]"), _bound(arg[1], f"{where}.between[1]")
        if _ends_before_start(start, end):
            raise InvalidRule(f"{where}.between: the window ends ({end}) before it starts ({start})")
        return TimeSpec("between", start=start, end=end)
    raise InvalidRule(f"{where}: unknown time window {kind[:40]!r}; expected one of {', '.join(_TIME_KINDS)}")


def _count(value: Any, where: str, limit: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise InvalidRule(f"{where}: expected a whole number of {unit} from 1 to {limit}; got {_shown(value)}")
    return value


def _bound(value: Any, where: str) -> str:
    problem = f"{where}: expected a date (2026-05-01) or a time with an offset (2026-05-01T08:00:00+08:00)"
    if not isinstance(value, str) or len(value) > MAX_TIME_TEXT:
        raise InvalidRule(f"{problem}; got {_shown(value)}")
    text = value.strip()
    try:
        if is_date(text):
            dt.date.fromisoformat(text)
        else:
            moment = dt.datetime.fromisoformat(text)
            if moment.tzinfo is None:
                raise InvalidRule(f"{where}: time {text!r} has no offset (add +08:00, Z …, or give a date)")
            moment.timestamp()
    except (ValueError, OverflowError):
        raise InvalidRule(f"{problem}; got {text!r}") from None
    return text


def _ends_before_start(start: str, end: str) -> bool:
    """Dates compare as days; times as instants; a date against a time compares in UTC (in another zone a
    window of a few hours may come out empty: it then holds no events)."""
    if is_date(start) and is_date(end):
        return end < start
    return _utc_ms(end, end=True) <= _utc_ms(start)


def _utc_ms(text: str, *, end: bool = False) -> int:
    if is_date(text):
        day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end else 0)
        return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000) + (1 if end else 0)


def _duration(obj: Any, where: str) -> int:
    """``{"minutes"|"hours"|"days": N}`` in milliseconds, at most :data:`MAX_DAYS` days."""
    if not isinstance(obj, dict) or len(obj) != 1:
        raise InvalidRule(f"{where}: expected one of {{minutes | hours | days: N}}")
    ((unit, n),) = obj.items()
    if unit not in _DURATION_MS:
        raise InvalidRule(f"{where}: unknown unit {unit[:40]!r}; expected minutes, hours or days")
    limit = MAX_DAYS * DAY_MS // _DURATION_MS[unit]
    return _count(n, f"{where}.{unit}", limit, unit) * _DURATION_MS[unit]


# --- tags ---------------------------------------------------------------------------------------------------
def parse_tag_definition(obj: Any, where: str, events: EventSchema, catalog: Catalog) -> TagDefinition:
    """A computed tag's definition (``type``: AGGREGATED, ATTRIBUTION_ATTRIBUTE, TOP_N_ATTRIBUTE or HORIZONTAL);
    ``catalog`` is the project's, for a HORIZONTAL tag layering another tag."""
    if not isinstance(obj, dict):
        raise InvalidRule(f"{where}: expected an object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind not in _TAG_TYPES:
        raise InvalidRule(f"{where}.type: expected one of {', '.join(_TAG_TYPES)}; got {_shown(kind)}")
    if kind == "AGGREGATED":
        return _aggregated(obj, where, events)
    if kind == "HORIZONTAL":
        return _horizontal(obj, where, events, catalog)
    _fields(obj, where, ("type", "event", "where", "attribute", "pick", "time"))
    step = _step(obj, where, events)
    if "attribute" not in obj:
        raise InvalidRule(f"{where}: 'attribute' is missing")
    attribute = _attribute(obj["attribute"], f"{where}.attribute", events).key
    time = parse_time(obj["time"], f"{where}.time") if "time" in obj else None
    picks = ("first", "last") if kind == "ATTRIBUTION_ATTRIBUTE" else ("most_frequent", "max", "min")
    pick = obj.get("pick")
    if pick not in picks:
        raise InvalidRule(f"{where}.pick: expected one of {', '.join(picks)}; got {_shown(pick)}")
    if kind == "ATTRIBUTION_ATTRIBUTE":
        return AttributionTag(step, attribute, pick, time)  # type: ignore[arg-type]
    return TopNTag(step, attribute, pick, time)  # type: ignore[arg-type]


def _aggregated(obj: dict[str, Any], where: str, events: EventSchema) -> AggregatedTag:
    _fields(obj, where, ("type", "event", "where", "measure", "time"))
    step = _step(obj, where, events)
    measure = parse_measure(obj["measure"], f"{where}.measure", events) if "measure" in obj else Measure()
    time = parse_time(obj["time"], f"{where}.time") if "time" in obj else None
    return AggregatedTag(step, measure, time)


def _horizontal(obj: dict[str, Any], where: str, events: EventSchema, catalog: Catalog) -> HorizontalTag:
    _fields(obj, where, ("type", "source", "layers"))
    if "source" not in obj:
        raise InvalidRule(f"{where}: 'source' is missing (a tag key or an AGGREGATED definition)")
    raw = obj["source"]
    source: str | AggregatedTag
    if isinstance(raw, str):
        key = canonical_key(raw)
        entry = catalog.get(key)
        if entry is None or entry.kind is not KeyKind.TAG:
            raise InvalidRule(f"{where}.source: unknown tag {raw[:100]!r}")
        if entry.multi or entry.type not in (ValueType.INT, ValueType.DOUBLE):
            raise InvalidRule(f"{where}.source: layers need a numeric tag; {key!r} is {entry.type_name}")
        source = key
    elif isinstance(raw, dict):
        if raw.get("type", "AGGREGATED") != "AGGREGATED":
            raise InvalidRule(f"{where}.source.type: a HORIZONTAL tag layers a tag key or an AGGREGATED definition")
        source = _aggregated({"type": "AGGREGATED", **raw}, f"{where}.source", events)
    else:
        raise InvalidRule(f"{where}.source: expected a tag key or an AGGREGATED definition")
    layers = obj.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise InvalidRule(f"{where}.layers: expected a list of 1 to {MAX_LAYERS} layers {{name, gte}}")
    out: list[Layer] = []
    for i, layer in enumerate(layers):
        path = f"{where}.layers[{i}]"
        if not isinstance(layer, dict):
            raise InvalidRule(f"{path}: expected an object {{name, gte}}")
        _fields(layer, path, ("name", "gte"))
        name = layer.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_LAYER_NAME:
            raise InvalidRule(f"{path}.name: expected a name of 1 to {MAX_LAYER_NAME} characters")
        if any(o.name == name for o in out):
            raise InvalidRule(f"{path}.name: layer {name!r} is named twice")
        if out and out[-1].gte is None:
            raise InvalidRule(
                f"{path}: follows a layer without 'gte', which takes every value left; it is never chosen"
            )
        gte = layer.get("gte")
        if gte is not None:
            gte = float(_number(gte, f"{path}.gte"))
            if out and out[-1].gte is not None and gte >= out[-1].gte:
                raise InvalidRule(
                    f"{path}.gte: bounds go down layer by layer; {gte:g} is not below {out[-1].gte:g}, so this "
                    "layer is never chosen"
                )
        out.append(Layer(name, gte))
    return HorizontalTag(source, tuple(out))


def _shown(value: Any) -> str:
    """A value in a message: a string quoted, anything else as JSON writes it, cut at 40 characters."""
    if isinstance(value, str):
        return repr(value[:40])
    return json.dumps(value, ensure_ascii=False, default=str)[:40]


def _fields(obj: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise InvalidRule(
            f"{where}: unexpected field(s) {sorted(str(k)[:40] for k in extra)}; expected {', '.join(allowed)}"
        )
