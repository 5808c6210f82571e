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
    AggregatedTag,
    AttributionTag,
    EventSchema,
    HorizontalTag,
    Layer,
    Measure,
    TagDefinition,
    TopNTag,
)
from segport.domain.keys import ValueType

TAG_TYPES = ("AGGREGATED", "ATTRIBUTION_ATTRIBUTE", "TOP_N_ATTRIBUTE", "HORIZONTAL")
IMPORTED_TYPE = "DATA_SET_ATTRIBUTE"  # what the tag list says of a tag loaded with the profiles
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
