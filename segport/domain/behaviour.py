"""Behaviour: the parsed form of event conditions (segments) and event tags, and their time windows.

A rule (:mod:`segport.domain.rules`) may hold event conditions beside property leaves, under ``and``/``or``/
``not``. The parser (:mod:`segport.domain.behaviour_parse`) checks them against the project's event catalogue and
turns them into the frozen values below; each engine compiles those values to its SQL, and the tests' reference
evaluator reads the same values. The semantics written here are the contract all three follow.

Time
    Every event has a time in milliseconds since the epoch (UTC). A :class:`TimeSpec` is what a rule says; it is
    resolved at each computation, in the project's time zone, to a :class:`Window` ``[start_ms, end_ms)``:

    * ``{"last_hours": N}``: ``[now - N h, now]``;
    * ``{"last_days": N}``: from 00:00 of the day ``N - 1`` days before today (so ``last_days: 1`` is today) to
      ``now``, both in the project's time zone;
    * ``{"between": [START, END]}``: both bounds included. A date (``2026-05-01``) means that whole day in the
      project's time zone (START from its 00:00, END to its end); a time with an offset
      (``2026-05-01T08:00:00+08:00``) is that instant;
    * ``{"since": START}``: from START (as above) to ``now``;
    * no ``time``: every event the project has, whatever its time.

    ``now`` is the computation's clock, taken once per computation. An event stamped after ``now`` (the collect
    endpoints allow a small skew) is outside every relative window. A window that ends before it starts is
    refused when the rule is parsed; a window that is empty at computation time (``since`` a future day) holds no
    events.

Measures over a user's matching events (events of the step's name, passing its ``where``, inside the window)
    * ``count``: the number of such events; ``distinct_days``: the number of calendar days (project time zone)
      with one; ``distinct``: the number of distinct non-null values of the attribute; ``sum``: the sum of the
      attribute's non-null values. For a user with no matching events (or no events at all) these are 0.
    * ``avg``, ``min``, ``max`` over the attribute's non-null values. A user with none has no value, and a
      comparison with no value is false (as for a property leaf with no value).
    * A condition matches the users (of the project's users table) whose measure compares true with ``value``:
      ``count lt 1`` and ``{"not": {"event": E}}`` both match users with no events at all.

Sequences and drop-off
    * A sequence matches a user with events ``e1 … ek`` (``ei`` matching step ``i``), all inside the window, each
      strictly later than the one before (equal times are not an order), and, with ``max_gap``, each at most
      ``max_gap`` after the one before. One event may serve one step only.
    * A drop-off ``{"event": A, "time": T, "not_followed_by": {"event": B, "within": W}}`` matches a user with an
      event ``a`` (matching A, inside T) after which no event matching B comes in ``(a.time, a.time + W]``; the B
      event may lie outside T.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from segport.domain.keys import Catalog

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

MeasureKind = Literal["count", "distinct_days", "sum", "avg", "min", "max", "distinct"]
ZERO_MEASURES = ("count", "distinct_days", "distinct", "sum")  # measures that are 0 for a user with no events
ATTRIBUTE_MEASURES = ("sum", "avg", "min", "max", "distinct")  # measures of an attribute
NUMERIC_MEASURES = ("sum", "avg", "min", "max")  # ... of a numeric (int or double) attribute
MEASURE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")


@dataclass(frozen=True, slots=True)
class TimeSpec:
    """A time window as a rule writes it; :func:`resolve_window` turns it into a :class:`Window`."""

    kind: Literal["last_days", "last_hours", "between", "since"]
    n: int | None = None  # last_days / last_hours
    start: str | None = None  # between / since: a date "YYYY-MM-DD" or an ISO time with an offset
    end: str | None = None  # between


@dataclass(frozen=True, slots=True)
class Window:
    """A resolved window: the events with ``start_ms <= time < end_ms`` (``None``: unbounded on that side)."""

    start_ms: int | None
    end_ms: int | None

    def holds(self, t_ms: int) -> bool:
        return (self.start_ms is None or t_ms >= self.start_ms) and (self.end_ms is None or t_ms < self.end_ms)


@dataclass(frozen=True, slots=True)
class Measure:
    kind: MeasureKind = "count"
    attribute: str | None = None  # for sum / avg / min / max / distinct


@dataclass(frozen=True, slots=True)
class Step:
    """Events of one name that pass ``where``: a rule tree (today's grammar) whose keys name event attributes
    or standard fields (``$path`` …), already checked against the event catalogue."""

    event: str
    where: Any = None


@dataclass(frozen=True, slots=True)
class EventCondition:
    """``{"event": E, "where": R, "measure": M, "op": OP, "value": V, "time": T}``."""

    step: Step
    measure: Measure = Measure()
    op: str = "gte"
    value: Any = 1  # a number, or [low, high] for between
    time: TimeSpec | None = None


@dataclass(frozen=True, slots=True)
class SequenceCondition:
    """``{"sequence": [{"event": E, "where": R}, ...], "time": T, "max_gap": {...}}``."""

    steps: tuple[Step, ...]
    time: TimeSpec | None = None
    max_gap_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DropOffCondition:
    """``{"event": E, "where": R, "time": T, "not_followed_by": {"event": E2, "where": R2, "within": {...}}}``."""

    step: Step
    then: Step
    within_ms: int
    time: TimeSpec | None = None


Condition = EventCondition | SequenceCondition | DropOffCondition


@dataclass(frozen=True, slots=True)
class AggregatedTag:
    """``{"type": "AGGREGATED", "event": E, "where": R, "measure": M, "time": T}``: the measure per user."""

    step: Step
    measure: Measure
    time: TimeSpec | None = None


@dataclass(frozen=True, slots=True)
class AttributionTag:
    """``{"type": "ATTRIBUTION_ATTRIBUTE", "event": E, "attribute": A, "pick": "first"|"last", "time": T}``."""

    step: Step
    attribute: str
    pick: Literal["first", "last"]
    time: TimeSpec | None = None


@dataclass(frozen=True, slots=True)
class TopNTag:
    """``{"type": "TOP_N_ATTRIBUTE", "event": E, "attribute": A, "pick": "most_frequent"|"max"|"min", "time": T}``."""

    step: Step
    attribute: str
    pick: Literal["most_frequent", "max", "min"]
    time: TimeSpec | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    gte: float | None = None  # the first layer whose bound the value reaches; a layer without one takes the rest


@dataclass(frozen=True, slots=True)
class HorizontalTag:
    """``{"type": "HORIZONTAL", "source": TAG_OR_MEASURE, "layers": [...]}``: a layer name per user."""

    source: Any  # a tag key (str) or an AggregatedTag
    layers: tuple[Layer, ...]


TagDefinition = AggregatedTag | AttributionTag | TopNTag | HorizontalTag


@dataclass(frozen=True, slots=True)
class EventSchema:
    """What an event condition is checked against: the project's known event names, and its event attributes
    and standard fields (``$path`` …) as catalogue entries (key, type), so ``where`` rules compile with the
    property rule compiler over the event table."""

    names: list[str]
    attributes: Catalog


@dataclass(frozen=True, slots=True)
class BehaviourContext:
    """What an engine needs, beside the rule, to compute event conditions and event tags: the project (its
    event table), the event schema, the computation's clock (taken once, when the computation is asked for) and the
    project's time zone (IANA name). Travels to the engine process with the segment or tag definition."""

    project_id: str
    events: EventSchema
    now_ms: int
    time_zone: str


# --- time --------------------------------------------------------------------------------------------------
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def is_date(text: str) -> bool:
    return bool(_DATE_RE.match(text))


def _day_start_ms(day: dt.date, tz: ZoneInfo) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp() * 1000)


def instant_ms(text: str, tz: ZoneInfo, *, end: bool = False) -> int:
    """A bound as written: a date is its day's 00:00 in ``tz`` (with ``end``, the next day's 00:00); a time
    with an offset is that instant (with ``end``, one millisecond after it, since bounds are included).
    Raises ``ValueError`` for anything else."""
    if is_date(text):
        day = dt.date.fromisoformat(text)
        return _day_start_ms(day + dt.timedelta(days=1) if end else day, tz)
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset")
    ms = int(moment.timestamp() * 1000)
    return ms + 1 if end else ms


def resolve_window(spec: TimeSpec | None, now_ms: int, tz_name: str) -> Window:
    """The window ``spec`` covers at ``now_ms`` in the time zone ``tz_name`` (see the module's semantics)."""
    if spec is None:
        return Window(None, None)
    tz = ZoneInfo(tz_name)
    until_now = now_ms + 1  # "to now", now included
    if spec.kind == "last_hours":
        assert spec.n is not None
        return Window(now_ms - spec.n * HOUR_MS, until_now)
    if spec.kind == "last_days":
        assert spec.n is not None
        today = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
        return Window(_day_start_ms(today - dt.timedelta(days=spec.n - 1), tz), until_now)
    assert spec.start is not None
    start = instant_ms(spec.start, tz)
    if spec.kind == "since":
        return Window(start, until_now)
    assert spec.end is not None
    return Window(start, instant_ms(spec.end, tz, end=True))


def day_of(t_ms: int, tz_name: str) -> dt.date:
    """The calendar day of an event time in the project's time zone (for ``distinct_days``)."""
    return dt.datetime.fromtimestamp(t_ms / 1000, ZoneInfo(tz_name)).date()
