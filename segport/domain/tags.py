"""Tags computed from events: their types, the value type each definition gives, and the choices the semantics
of :mod:`segport.domain.behaviour` leave open for tags (written here once; both engines and the tests'
reference follow them; docs/tags.md tells them to users).

* ``AGGREGATED``: the measure of the user's matching events, as a segment's event condition measures it:
  ``count``, ``distinct_days``, ``distinct`` and ``sum`` are 0 for a user with no matching event (so every user
  holds the tag), ``avg``, ``min`` and ``max`` have no value (null) then.
* ``ATTRIBUTION_ATTRIBUTE``: among the user's matching events whose attribute has a value, the value of the
  earliest (``first``) or the latest (``last``). Several such events at the same time: ``first`` takes the
  smallest of their values, ``last`` the largest (values ordered as the attribute's type orders them, text by
  code point); the pick is thus the least (``first``) or the greatest (``last``) pair (time, value).
* ``TOP_N_ATTRIBUTE``: among the same values, ``max``, ``min``, or ``most_frequent``: the value carried by the
  most events; several values equally frequent: the smallest of them.
* ``HORIZONTAL``: a layer name per user, from the value of the source (a numeric tag's current value, or an
  ``AGGREGATED`` definition computed with it): the first layer, in the order written, whose ``gte`` the value
  reaches (``value >= gte``); a layer without ``gte`` (only the last may lack one) takes every other value. A user
  whose source has no value gets no layer (null).

A user with no value is null in the tag's column, so "the users holding the tag" (E6/E7, the tag's export) are
the users with a value.
"""

from __future__ import annotations

import json
from typing import Any

from segport.domain.behaviour import (
    ATTRIBUTE_MEASURES,
    NUMERIC_MEASURES,
    AggregatedTag,
    AttributionTag,
    EventSchema,
    HorizontalTag,
    Layer,
    Measure,
    Step,
    TagDefinition,
    TimeSpec,
    TopNTag,
)
from segport.domain.keys import Catalog, KeyKind, ValueType, canonical_key
from segport.errors import InvalidRule

TAG_TYPES = ("AGGREGATED", "ATTRIBUTION_ATTRIBUTE", "TOP_N_ATTRIBUTE", "HORIZONTAL")
IMPORTED_TYPE = "DATA_SET_ATTRIBUTE"  # what the tag list says of a tag loaded with the profiles
MAX_LAYERS = 50
MAX_DEFINITION_CHARS = 64_000


def tag_type(defn: TagDefinition) -> str:
    if isinstance(defn, AggregatedTag):
        return "AGGREGATED"
    if isinstance(defn, AttributionTag):
        return "ATTRIBUTION_ATTRIBUTE"
    if isinstance(defn, TopNTag):
        return "TOP_N_ATTRIBUTE"
    return "HORIZONTAL"


def measure_type(measure: Measure, events: EventSchema) -> ValueType:
    """count, distinct_days, distinct: INT; avg: DOUBLE; sum, min, max: the attribute's type."""
    if measure.kind in ("count", "distinct_days", "distinct"):
        return ValueType.INT
    if measure.kind == "avg":
        return ValueType.DOUBLE
    return _attribute_type(measure.attribute or "", events)


def value_type(defn: TagDefinition, events: EventSchema) -> ValueType:
    """The type of a definition's values: what its catalogue entry (and so E4/E5's ``valueType``) says."""
    if isinstance(defn, AggregatedTag):
        return measure_type(defn.measure, events)
    if isinstance(defn, (AttributionTag, TopNTag)):
        return _attribute_type(defn.attribute, events)
    return ValueType.STRING


def _attribute_type(key: str, events: EventSchema) -> ValueType:
    entry = events.attributes.get(key)
    return entry.type if entry is not None else ValueType.STRING


def layer_of(value: float | None, layers: tuple[Layer, ...]) -> str | None:
    """The HORIZONTAL layer of ``value`` (see the module's semantics)."""
    if value is None:
        return None
    for layer in layers:
        if layer.gte is None or value >= layer.gte:
            return layer.name
    return None


def source_tag(defn: TagDefinition) -> str | None:
    """The tag key a HORIZONTAL definition reads, if it reads one."""
    if isinstance(defn, HorizontalTag) and isinstance(defn.source, str):
        return defn.source
    return None


def definition_text(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --- parsing (the minimal form; the rule grammar's parser is segport.domain.behaviour_parse) ---------------
_COMMON = {"type", "event", "where", "time"}
_FIELDS = {
    "AGGREGATED": _COMMON | {"measure"},
    "ATTRIBUTION_ATTRIBUTE": _COMMON | {"attribute", "pick"},
    "TOP_N_ATTRIBUTE": _COMMON | {"attribute", "pick"},
    "HORIZONTAL": {"type", "source", "layers"},
}
_PICKS = {"ATTRIBUTION_ATTRIBUTE": ("first", "last"), "TOP_N_ATTRIBUTE": ("most_frequent", "max", "min")}


def parse_tag(
    obj: Any, events: EventSchema, catalog: Catalog, *, key: str = "", where: str = "definition"
) -> TagDefinition:
    """A tag definition (JSON) checked against the project's events and catalogue: :class:`InvalidRule` naming
    the part at fault (``definition.layers[2].gte: ...``)."""
    if not isinstance(obj, dict):
        raise InvalidRule(f"{where}: expected an object with a 'type'")
    kind = obj.get("type")
    if kind not in TAG_TYPES:
        raise InvalidRule(f"{where}.type: expected one of {', '.join(TAG_TYPES)}, got {kind!r}")
    extra = set(obj) - _FIELDS[kind]
    if extra:
        raise InvalidRule(f"{where}: unexpected field(s) {sorted(extra)} for a {kind} tag")
    if kind == "HORIZONTAL":
        return _horizontal(obj, events, catalog, key, where)
    step = _step(obj, events, where)
    time = _time(obj.get("time"), f"{where}.time")
    if kind == "AGGREGATED":
        return AggregatedTag(step, _measure(obj.get("measure", "count"), events, f"{where}.measure"), time)
    attribute = _attribute(obj.get("attribute"), events, f"{where}.attribute")
    pick = obj.get("pick")
    if pick not in _PICKS[kind]:
        raise InvalidRule(f"{where}.pick: expected one of {', '.join(_PICKS[kind])}, got {pick!r}")
    if kind == "ATTRIBUTION_ATTRIBUTE":
        return AttributionTag(step, attribute, pick, time)
    return TopNTag(step, attribute, pick, time)


def _step(obj: dict[str, Any], events: EventSchema, where: str) -> Step:
    from segport.domain.rules import check_rule

    event = obj.get("event")
    if not isinstance(event, str) or not event:
        raise InvalidRule(f"{where}.event: expected an event name")
    if event not in events.names:
        raise InvalidRule(f"{where}.event: unknown event {event!r}")
    cond = obj.get("where")
    if cond is not None:
        try:
            check_rule(cond, events.attributes)
        except InvalidRule as exc:
            raise InvalidRule(f"{where}.where: {exc.message}") from None
    return Step(event, cond)


def _attribute(name: Any, events: EventSchema, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRule(f"{where}: expected an event attribute")
    if name not in events.attributes:
        raise InvalidRule(f"{where}: unknown attribute {name!r}")
    return name


def _measure(obj: Any, events: EventSchema, where: str) -> Measure:
    if obj in ("count", "distinct_days"):
        return Measure(obj)
    if isinstance(obj, dict) and len(obj) == 1:
        ((kind, attribute),) = obj.items()
        if kind in ATTRIBUTE_MEASURES:
            attribute = _attribute(attribute, events, f"{where}.{kind}")
            if kind in NUMERIC_MEASURES and _attribute_type(attribute, events) not in (ValueType.INT, ValueType.DOUBLE):
                raise InvalidRule(f"{where}.{kind}: attribute {attribute!r} is not numeric")
            return Measure(kind, attribute)
    raise InvalidRule(f'{where}: expected "count", "distinct_days" or {{sum|avg|min|max|distinct: ATTRIBUTE}}')


def _time(obj: Any, where: str) -> TimeSpec | None:
    if obj is None:
        return None
    from segport.domain.behaviour import instant_ms

    if not isinstance(obj, dict) or len(obj) != 1:
        raise InvalidRule(f"{where}: expected one of last_days, last_hours, between, since")
    ((kind, arg),) = obj.items()
    if kind in ("last_days", "last_hours"):
        if not isinstance(arg, int) or isinstance(arg, bool) or not 1 <= arg <= 100_000:
            raise InvalidRule(f"{where}.{kind}: expected a whole number from 1 to 100000")
        return TimeSpec(kind, n=arg)
    from zoneinfo import ZoneInfo

    utc = ZoneInfo("UTC")

    def bound(text: Any, at: str, *, end: bool = False) -> int:
        try:
            return instant_ms(text, utc, end=end) if isinstance(text, str) else int("x")
        except (ValueError, OverflowError):
            raise InvalidRule(f"{at}: expected a date (2026-05-01) or a time with an offset") from None

    if kind == "since":
        bound(arg, f"{where}.since")
        return TimeSpec("since", start=arg)
    if kind == "between":
        if not isinstance(arg, list) or len(arg) != 2:
            raise InvalidRule(f"{where}.between: expected [START, END]")
        if bound(arg[1], f"{where}.between[1]", end=True) <= bound(arg[0], f"{where}.between[0]"):
            raise InvalidRule(f"{where}.between: the window ends before it starts")
        return TimeSpec("between", start=arg[0], end=arg[1])
    raise InvalidRule(f"{where}: unknown window {kind!r} (expected last_days, last_hours, between, since)")


def _horizontal(obj: dict[str, Any], events: EventSchema, catalog: Catalog, key: str, where: str) -> HorizontalTag:
    source = obj.get("source")
    if isinstance(source, str):
        entry = catalog.get(source) or catalog.get(f"tag_{source}")
        if entry is None or entry.kind is not KeyKind.TAG:
            raise InvalidRule(f"{where}.source: unknown tag {source!r}")
        if entry.key == canonical_key(key):
            raise InvalidRule(f"{where}.source: a tag cannot be layered on itself")
        if entry.type not in (ValueType.INT, ValueType.DOUBLE) or entry.multi:
            raise InvalidRule(f"{where}.source: tag {entry.key!r} is {entry.type_name}, not a number")
        src: Any = entry.key
    elif isinstance(source, dict):
        inner = dict(source)
        if inner.setdefault("type", "AGGREGATED") != "AGGREGATED":
            raise InvalidRule(f"{where}.source.type: a layered measure is an AGGREGATED definition")
        src = parse_tag(inner, events, catalog, where=f"{where}.source")
        assert isinstance(src, AggregatedTag)
        if measure_type(src.measure, events) not in (ValueType.INT, ValueType.DOUBLE):
            raise InvalidRule(f"{where}.source.measure: layers need a numeric measure")
    else:
        raise InvalidRule(f"{where}.source: expected a tag key or an AGGREGATED definition")
    layers_in = obj.get("layers")
    if not isinstance(layers_in, list) or not layers_in or len(layers_in) > MAX_LAYERS:
        raise InvalidRule(f"{where}.layers: expected a list of 1 to {MAX_LAYERS} layers")
    layers: list[Layer] = []
    for i, item in enumerate(layers_in):
        at = f"{where}.layers[{i}]"
        if not isinstance(item, dict) or set(item) - {"name", "gte"}:
            raise InvalidRule(f'{at}: expected {{"name": ..., "gte": NUMBER}} (gte left out: the rest)')
        name, gte = item.get("name"), item.get("gte")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidRule(f"{at}.name: expected a name of 1 to 200 characters")
        if any(layer.name == name for layer in layers):
            raise InvalidRule(f"{at}.name: layer {name!r} appears twice")
        if gte is not None and (isinstance(gte, bool) or not isinstance(gte, (int, float)) or not -1e300 < gte < 1e300):
            raise InvalidRule(f"{at}.gte: expected a number (at most 1e300 in size)")
        if gte is None and i != len(layers_in) - 1:
            raise InvalidRule(f"{at}: only the last layer may have no gte (it takes the rest)")
        layers.append(Layer(name, None if gte is None else float(gte)))
    return HorizontalTag(src, tuple(layers))
