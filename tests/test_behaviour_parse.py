"""Event conditions and event tags from JSON: the values they parse to, and the exact 400 naming the part at fault."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from segport.domain.behaviour import (
    DAY_MS,
    HOUR_MS,
    AggregatedTag,
    AttributionTag,
    DropOffCondition,
    EventCondition,
    HorizontalTag,
    Layer,
    Measure,
    SequenceCondition,
    Step,
    TimeSpec,
    TopNTag,
)
from segport.domain.behaviour_parse import (
    MAX_DAYS,
    MAX_LAYERS,
    MAX_STEPS,
    event_schema,
    is_event_condition,
    parse_condition,
    parse_tag_definition,
    parse_time,
)
from segport.domain.event_files import EventAttribute
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.domain.rules import (
    MAX_NODES,
    RuleCompiler,
    check_rule,
    compile_rule,
    has_event_conditions,
    rule_keys,
)
from segport.errors import InvalidRule

EVENTS = event_schema(
    ["pay", "add_to_cart", "login", "$page"],
    [
        EventAttribute("amount", "amount", ValueType.DOUBLE),
        EventAttribute("qty", "qty", ValueType.INT),
        EventAttribute("sku", "sku", ValueType.STRING),
        EventAttribute("ids_x", "ids_x", ValueType.STRING),  # an attribute whose key looks like an identity's
    ],
)
CATALOG = Catalog(
    [
        CatalogEntry("usr_age", KeyKind.PROPERTY, "age", ValueType.INT),
        CatalogEntry("tag_spend", KeyKind.TAG, "spend", ValueType.DOUBLE),
        CatalogEntry("tag_city", KeyKind.TAG, "city", ValueType.STRING),
    ]
)


def refused(node: Any, message: str) -> None:
    """``node`` as a whole rule is refused with exactly ``message``."""
    with pytest.raises(InvalidRule) as err:
        check_rule(node, CATALOG, EVENTS)
    assert err.value.message == message


# --- what each form parses to -------------------------------------------------------------------------------
def test_defaults_are_count_gte_1_over_all_time() -> None:
    assert parse_condition({"event": "pay"}, "rule", EVENTS) == EventCondition(Step("pay"), Measure("count"), "gte", 1)


def test_every_field_of_an_event_condition() -> None:
    node = {
        "event": "pay",
        "where": {"and": [{"key": "amount", "op": "gt", "value": 10}, {"key": "$path", "op": "eq", "value": "/x"}]},
        "measure": {"sum": "amount"},
        "op": "between",
        "value": [100, 200.5],
        "time": {"last_days": 30},
    }
    assert parse_condition(node, "rule", EVENTS) == EventCondition(
        Step("pay", node["where"]), Measure("sum", "amount"), "between", [100, 200.5], TimeSpec("last_days", n=30)
    )


@pytest.mark.parametrize(
    ("measure", "parsed"),
    [
        ("count", Measure("count")),
        ("distinct_days", Measure("distinct_days")),
        ({"sum": "qty"}, Measure("sum", "qty")),
        ({"avg": "amount"}, Measure("avg", "amount")),
        ({"min": "amount"}, Measure("min", "amount")),
        ({"max": "qty"}, Measure("max", "qty")),
        ({"distinct": "sku"}, Measure("distinct", "sku")),
        ({"distinct": "$domain"}, Measure("distinct", "$domain")),
    ],
)
def test_measures(measure: Any, parsed: Measure) -> None:
    cond = parse_condition({"event": "pay", "measure": measure, "op": "gte", "value": 2}, "rule", EVENTS)
    assert isinstance(cond, EventCondition) and cond.measure == parsed


@pytest.mark.parametrize(
    ("time", "spec"),
    [
        ({"last_days": 1}, TimeSpec("last_days", n=1)),
        ({"last_hours": 36}, TimeSpec("last_hours", n=36)),
        ({"between": ["2026-05-01", "2026-05-07"]}, TimeSpec("between", start="2026-05-01", end="2026-05-07")),
        ({"between": ["2026-05-01", "2026-05-01"]}, TimeSpec("between", start="2026-05-01", end="2026-05-01")),
        (
            {"between": ["2026-05-01T08:00:00+08:00", "2026-05-01T09:00:00Z"]},
            TimeSpec("between", start="2026-05-01T08:00:00+08:00", end="2026-05-01T09:00:00Z"),
        ),
        ({"since": "2026-05-01"}, TimeSpec("since", start="2026-05-01")),
        ({"since": "2099-01-01"}, TimeSpec("since", start="2099-01-01")),  # empty today, not refused
    ],
)
def test_time_windows(time: Any, spec: TimeSpec) -> None:
    assert parse_time(time, "rule.time") == spec


def test_sequence_with_max_gap() -> None:
    node = {
        "sequence": [{"event": "add_to_cart", "where": {"key": "sku", "op": "eq", "value": "a"}}, {"event": "pay"}],
        "time": {"last_days": 7},
        "max_gap": {"days": 1},
    }
    assert parse_condition(node, "rule", EVENTS) == SequenceCondition(
        (Step("add_to_cart", {"key": "sku", "op": "eq", "value": "a"}), Step("pay")), TimeSpec("last_days", n=7), DAY_MS
    )


def test_drop_off() -> None:
    node = {
        "event": "add_to_cart",
        "time": {"last_days": 7},
        "not_followed_by": {
            "event": "pay",
            "where": {"key": "amount", "op": "gt", "value": 0},
            "within": {"hours": 24},
        },
    }
    assert parse_condition(node, "rule", EVENTS) == DropOffCondition(
        Step("add_to_cart"),
        Step("pay", {"key": "amount", "op": "gt", "value": 0}),
        24 * HOUR_MS,
        TimeSpec("last_days", n=7),
    )


def test_is_event_condition() -> None:
    assert is_event_condition({"event": "pay"}) and is_event_condition({"sequence": []})
    assert not is_event_condition({"key": "usr_age", "op": "is_null"})
    assert not is_event_condition({"not": {"event": "pay"}}) and not is_event_condition(["event"])


def test_event_schema_holds_attributes_and_standard_fields() -> None:
    assert EVENTS.names == ["$page", "add_to_cart", "login", "pay"]
    assert EVENTS.attributes.entries["qty"].type is ValueType.INT
    for std in ("$type", "$path", "$domain", "$platform", "$screenWidth", "$latitude", "$resourceItemId"):
        assert EVENTS.attributes.entries[std].type is ValueType.STRING


# --- the rule compiler with event conditions -----------------------------------------------------------------
def test_event_conditions_nest_with_property_leaves_and_keys_skip_them() -> None:
    rule = {
        "and": [
            {"key": "usr_age", "op": "gte", "value": 18},
            {"not": {"event": "login", "time": {"last_days": 7}}},
            {
                "or": [
                    {"event": "pay", "where": {"key": "ids_x", "op": "eq", "value": "1"}},
                    {"key": "tag_city", "op": "is_null"},
                ]
            },
        ]
    }
    check_rule(rule, CATALOG, EVENTS)
    assert rule_keys(rule) == {"usr_age", "tag_city"}
    assert has_event_conditions(rule) and not has_event_conditions({"key": "usr_age", "op": "is_null"})


def test_a_rule_with_event_conditions_but_no_events_is_refused() -> None:
    with pytest.raises(InvalidRule) as err:
        check_rule({"and": [{"event": "pay"}]}, CATALOG)
    assert err.value.message == "rule.and[0]: event conditions need the project's events"


class Recording(RuleCompiler):
    """A dialect that writes each event condition as its parsed form and its where's SQL, to see the hook."""

    def bind(self, value: Any, value_type: ValueType, *, typed: bool = True) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def event_condition(self, cond: Any) -> str:
        step = cond.step if not isinstance(cond, SequenceCondition) else cond.steps[0]
        return f"EV[{step.event}: {self.step_where(step.where)}]"


def test_the_dialect_hook_sees_parsed_conditions_and_shares_the_parameters_in_text_order() -> None:
    rule = {
        "and": [
            {"key": "usr_age", "op": "gt", "value": 1},
            {"event": "pay", "where": {"key": "amount", "op": "gt", "value": 2}},
            {"key": "usr_age", "op": "lt", "value": 3},
            {"event": "login"},
        ]
    }
    from segport.domain.behaviour import BehaviourContext

    ctx = BehaviourContext("p1", EVENTS, 0, "Asia/Shanghai")
    compiled = compile_rule(rule, CATALOG, Recording, behaviour=ctx)
    assert compiled.sql == (
        '(coalesce(u."usr_age" > $1, false) AND EV[pay: coalesce(e."amount" > $2, false)] AND '
        'coalesce(u."usr_age" < $3, false) AND EV[login: TRUE])'
    )
    assert compiled.params == [1, 2.0, 3] and compiled.keys == {"usr_age"}


def test_event_conditions_count_towards_the_rules_size() -> None:
    leaves = [{"key": "amount", "op": "gt", "value": i} for i in range(MAX_NODES)]
    refused({"event": "pay", "where": {"or": leaves}}, "rule is too large (at most 32 levels and 1000 nodes)")


# --- the 400s --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"event": "refund"}, "rule.event: unknown event 'refund' (not in the project's event catalogue)"),
        ({"event": 3}, "rule.event: expected an event name, got int"),
        (
            {
                "and": [
                    {"key": "usr_age", "op": "is_null"},
                    {"sequence": [{"event": "pay", "where": {"key": "amt", "op": "is_null"}}, {"event": "pay"}]},
                ]
            },
            "rule.and[1].sequence[0].where: unknown attribute 'amt'",
        ),
        ({"event": "pay", "where": {"key": "usr_age", "op": "is_null"}}, "rule.where: unknown attribute 'usr_age'"),
        (
            {"event": "pay", "where": {"key": "amount", "op": "eq", "value": "lots"}},
            "rule.where: value 'lots' is not a valid double for key 'amount'",
        ),
        (
            {"event": "pay", "where": {"event": "login"}},
            "rule.where: an event condition cannot stand inside a step's 'where'",
        ),
        (
            {"event": "pay", "measure": {"sum": "sku"}},
            "rule.measure.sum: sum needs a numeric attribute; 'sku' is string (count its distinct values with 'distinct')",
        ),
        (
            {"event": "pay", "measure": {"avg": "$path"}},
            "rule.measure.avg: avg needs a numeric attribute; '$path' is string (count its distinct values with 'distinct')",
        ),
        ({"event": "pay", "measure": {"sum": "amt"}}, "rule.measure.sum: unknown attribute 'amt'"),
        (
            {"event": "pay", "measure": "total"},
            "rule.measure: unknown measure 'total'; expected 'count', 'distinct_days' or {sum | avg | min | max | distinct: attribute}",
        ),
        (
            {"event": "pay", "measure": {"median": "amount"}},
            "rule.measure: unknown measure 'median'; expected one of sum, avg, min, max, distinct",
        ),
        (
            {"event": "pay", "measure": {"sum": "amount", "avg": "amount"}},
            "rule.measure: expected 'count', 'distinct_days' or an object of one of sum, avg, min, max, distinct naming an attribute",
        ),
        (
            {"event": "pay", "op": "in", "value": [1]},
            "rule.op: unknown op 'in'; a measure compares with one of eq, ne, gt, gte, lt, lte, between",
        ),
        ({"event": "pay", "op": "gt"}, "rule: op 'gt' needs a 'value'"),
        ({"event": "pay", "op": "gt", "value": "2"}, "rule.value: a measure compares with a number; got '2'"),
        ({"event": "pay", "op": "gt", "value": True}, "rule.value: a measure compares with a number; got true"),
        ({"event": "pay", "value": 2**63}, f"rule.value: {2**63} is outside the 64-bit integer range"),
        (
            {"event": "pay", "op": "between", "value": [5]},
            "rule.value: 'between' needs a value of two numbers [low, high]",
        ),
        ({"event": "pay", "op": "between", "value": [5, 2]}, "rule.value: 'between' needs low <= high; got [5, 2]"),
        (
            {"event": "pay", "count": 2},
            "rule: unexpected field(s) ['count']; expected event, where, measure, op, value, time",
        ),
        (
            {"event": "pay", "key": "usr_age", "op": "is_null"},
            "rule: unexpected field(s) ['key']; expected event, where, measure, op, value, time",
        ),
        (
            {"sequence": [{"event": "pay"}], "time": {"last_days": 7}},
            f"rule.sequence: a sequence is a list of 2 to {MAX_STEPS} steps; got 1 step(s)",
        ),
        (
            {"sequence": [{"event": "pay"}] * (MAX_STEPS + 1)},
            f"rule.sequence: a sequence is a list of 2 to {MAX_STEPS} steps; got {MAX_STEPS + 1} step(s)",
        ),
        ({"sequence": "pay"}, f"rule.sequence: a sequence is a list of 2 to {MAX_STEPS} steps; got str"),
        (
            {"sequence": [{"event": "pay"}, {"event": "pay", "time": {"last_days": 1}}]},
            "rule.sequence[1]: unexpected field(s) ['time']; expected event, where",
        ),
        ({"sequence": [{"event": "pay"}, "login"]}, "rule.sequence[1]: expected a step {event, where}, got str"),
        ({"sequence": [{"event": "pay"}, {"where": None}]}, "rule.sequence[1]: 'event' is missing"),
        (
            {"sequence": [{"event": "pay"}, {"event": "login"}], "event": "pay"},
            "rule: an event condition has either 'event' or 'sequence', not both",
        ),
        (
            {"sequence": [{"event": "pay"}, {"event": "login"}], "max_gap": {"weeks": 1}},
            "rule.max_gap: unknown unit 'weeks'; expected minutes, hours or days",
        ),
        (
            {"sequence": [{"event": "pay"}, {"event": "login"}], "max_gap": {"hours": 0}},
            f"rule.max_gap.hours: expected a whole number of hours from 1 to {MAX_DAYS * 24}; got 0",
        ),
        (
            {"sequence": [{"event": "pay"}, {"event": "login"}], "max_gap": {"hours": 1, "days": 1}},
            "rule.max_gap: expected one of {minutes | hours | days: N}",
        ),
        (
            {"event": "add_to_cart", "not_followed_by": {"event": "pay"}},
            "rule.not_followed_by: 'within' is missing (e.g. {\"hours\": 24})",
        ),
        (
            {"event": "add_to_cart", "not_followed_by": {"event": "payy", "within": {"hours": 1}}},
            "rule.not_followed_by.event: unknown event 'payy' (not in the project's event catalogue)",
        ),
        (
            {
                "event": "add_to_cart",
                "op": "gte",
                "value": 2,
                "not_followed_by": {"event": "pay", "within": {"hours": 1}},
            },
            "rule: unexpected field(s) ['op', 'value']; expected event, where, time, not_followed_by",
        ),
        (
            {"event": "add_to_cart", "not_followed_by": {"event": "pay", "within": {"days": MAX_DAYS + 1}}},
            f"rule.not_followed_by.within.days: expected a whole number of days from 1 to {MAX_DAYS}; got {MAX_DAYS + 1}",
        ),
        (
            {"event": "pay", "time": {"between": ["2026-05-07", "2026-05-01"]}},
            "rule.time.between: the window ends (2026-05-01) before it starts (2026-05-07)",
        ),
        (
            {"event": "pay", "time": {"between": ["2026-05-01T10:00:00+08:00", "2026-05-01T09:59:59+08:00"]}},
            "rule.time.between: the window ends (2026-05-01T09:59:59+08:00) before it starts (2026-05-01T10:00:00+08:00)",
        ),
        (
            {"event": "pay", "time": {"between": ["2026-05-02T00:00:00Z", "2026-05-01"]}},
            "rule.time.between: the window ends (2026-05-01) before it starts (2026-05-02T00:00:00Z)",
        ),
        (
            {"event": "pay", "time": {"between": ["2026-05-01"]}},
            "rule.time.between: expected [START, END], two dates or times",
        ),
        (
            {"event": "pay", "time": {"since": "2026-05-01T08:00:00"}},
            "rule.time.since: time '2026-05-01T08:00:00' has no offset (add +08:00, Z …, or give a date)",
        ),
        (
            {"event": "pay", "time": {"since": "2026-02-30"}},
            "rule.time.since: expected a date (2026-05-01) or a time with an offset (2026-05-01T08:00:00+08:00); got '2026-02-30'",
        ),
        (
            {"event": "pay", "time": {"since": 20260501}},
            "rule.time.since: expected a date (2026-05-01) or a time with an offset (2026-05-01T08:00:00+08:00); got 20260501",
        ),
        (
            {"event": "pay", "time": {"last_days": 0}},
            f"rule.time.last_days: expected a whole number of days from 1 to {MAX_DAYS}; got 0",
        ),
        (
            {"event": "pay", "time": {"last_days": 1.5}},
            f"rule.time.last_days: expected a whole number of days from 1 to {MAX_DAYS}; got 1.5",
        ),
        (
            {"event": "pay", "time": {"last_hours": MAX_DAYS * 24 + 1}},
            f"rule.time.last_hours: expected a whole number of hours from 1 to {MAX_DAYS * 24}; got {MAX_DAYS * 24 + 1}",
        ),
        (
            {"event": "pay", "time": {"last_weeks": 1}},
            "rule.time: unknown time window 'last_weeks'; expected one of last_days, last_hours, between, since",
        ),
        (
            {"event": "pay", "time": {"last_days": 1, "since": "2026-01-01"}},
            "rule.time: expected one of {last_days | last_hours | between | since: ...}",
        ),
        (
            {"not": {"event": "pay", "time": "today"}},
            "rule.not.time: expected one of {last_days | last_hours | between | since: ...}",
        ),
    ],
)
def test_bad_event_conditions_name_the_part_at_fault(node: Any, message: str) -> None:
    refused(node, message)


# --- tags ----------------------------------------------------------------------------------------------------
def test_tag_definitions() -> None:
    def parse(obj: Any) -> Any:
        return parse_tag_definition(obj, "definition", EVENTS, CATALOG)

    assert parse({"type": "AGGREGATED", "event": "pay", "measure": {"sum": "amount"}, "time": {"last_days": 30}}) == (
        AggregatedTag(Step("pay"), Measure("sum", "amount"), TimeSpec("last_days", n=30))
    )
    assert parse({"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "attribute": "sku", "pick": "last"}) == (
        AttributionTag(Step("pay"), "sku", "last")
    )
    where = {"key": "qty", "op": "gt", "value": 0}
    assert parse(
        {"type": "TOP_N_ATTRIBUTE", "event": "pay", "where": where, "attribute": "$path", "pick": "most_frequent"}
    ) == (TopNTag(Step("pay", where), "$path", "most_frequent"))
    layers = [{"name": "高", "gte": 1000}, {"name": "中", "gte": 100}, {"name": "低"}]
    expected_layers = (Layer("高", 1000.0), Layer("中", 100.0), Layer("低"))
    assert parse({"type": "HORIZONTAL", "source": "tag_spend", "layers": layers}) == HorizontalTag(
        "tag_spend", expected_layers
    )
    assert parse(
        {"type": "HORIZONTAL", "source": {"event": "pay", "measure": "count"}, "layers": layers}
    ) == HorizontalTag(AggregatedTag(Step("pay"), Measure("count")), expected_layers)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"type": "RFM"},
            "definition.type: expected one of AGGREGATED, ATTRIBUTION_ATTRIBUTE, TOP_N_ATTRIBUTE, HORIZONTAL; got 'RFM'",
        ),
        ([], "definition: expected an object, got list"),
        (
            {"type": "AGGREGATED", "event": "nope"},
            "definition.event: unknown event 'nope' (not in the project's event catalogue)",
        ),
        (
            {"type": "AGGREGATED", "event": "pay", "measure": {"max": "sku"}},
            "definition.measure.max: max needs a numeric attribute; 'sku' is string (count its distinct values with 'distinct')",
        ),
        (
            {"type": "AGGREGATED", "event": "pay", "pick": "last"},
            "definition: unexpected field(s) ['pick']; expected type, event, where, measure, time",
        ),
        ({"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "pick": "last"}, "definition: 'attribute' is missing"),
        (
            {"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "attribute": "sku", "pick": "max"},
            "definition.pick: expected one of first, last; got 'max'",
        ),
        (
            {"type": "TOP_N_ATTRIBUTE", "event": "pay", "attribute": "colour", "pick": "max"},
            "definition.attribute: unknown attribute 'colour'",
        ),
        (
            {"type": "TOP_N_ATTRIBUTE", "event": "pay", "attribute": "sku", "pick": "first"},
            "definition.pick: expected one of most_frequent, max, min; got 'first'",
        ),
        (
            {"type": "HORIZONTAL", "layers": [{"name": "a"}]},
            "definition: 'source' is missing (a tag key or an AGGREGATED definition)",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_nope", "layers": [{"name": "a"}]},
            "definition.source: unknown tag 'tag_nope'",
        ),
        (
            {"type": "HORIZONTAL", "source": "usr_age", "layers": [{"name": "a"}]},
            "definition.source: unknown tag 'usr_age'",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_city", "layers": [{"name": "a"}]},
            "definition.source: layers need a numeric tag; 'tag_city' is string",
        ),
        (
            {"type": "HORIZONTAL", "source": {"type": "TOP_N_ATTRIBUTE"}, "layers": [{"name": "a"}]},
            "definition.source.type: a HORIZONTAL tag layers a tag key or an AGGREGATED definition",
        ),
        (
            {"type": "HORIZONTAL", "source": {"event": "pay", "measure": {"sum": "sku"}}, "layers": [{"name": "a"}]},
            "definition.source.measure.sum: sum needs a numeric attribute; 'sku' is string (count its distinct values with 'distinct')",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_spend", "layers": []},
            f"definition.layers: expected a list of 1 to {MAX_LAYERS} layers {{name, gte}}",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_spend", "layers": [{"name": "a", "gte": 1}] * 2},
            "definition.layers[1].name: layer 'a' is named twice",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_spend", "layers": [{"name": "a", "gte": 1}, {"name": "b", "gte": 5}]},
            "definition.layers[1].gte: bounds go down layer by layer; 5 is not below 1, so this layer is never chosen",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_spend", "layers": [{"name": "a"}, {"name": "b", "gte": 5}]},
            "definition.layers[1]: follows a layer without 'gte', which takes every value left; it is never chosen",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_spend", "layers": [{"name": ""}]},
            "definition.layers[0].name: expected a name of 1 to 100 characters",
        ),
        (
            {"type": "HORIZONTAL", "source": "tag_spend", "layers": [{"name": "a", "lt": 3}]},
            "definition.layers[0]: unexpected field(s) ['lt']; expected name, gte",
        ),
    ],
)
def test_bad_tag_definitions_name_the_part_at_fault(obj: Any, message: str) -> None:
    with pytest.raises(InvalidRule, match=f"^{re.escape(message)}$"):
        parse_tag_definition(obj, "definition", EVENTS, CATALOG)


# --- the OpenAPI document's Rule schema describes the same grammar ----------------------------------------
def test_the_openapi_rule_schema_takes_event_conditions(client: TestClient) -> None:
    import jsonschema_rs

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    rule = jsonschema_rs.validator_for({"$ref": "#/components/schemas/Rule", "components": {"schemas": schemas}})
    good = [
        {"event": "pay"},
        {"not": {"event": "login", "time": {"last_days": 7}}},
        {"and": [{"key": "usr_age", "op": "gte", "value": 18}, {"event": "pay", "measure": {"sum": "amount"},
                 "op": "between", "value": [1, 2.5], "time": {"between": ["2026-05-01", "2026-05-01T08:00:00+08:00"]}}]},
        {"event": "pay", "where": {"or": [{"key": "$path", "op": "contains", "value": "/p/"}, {"key": "sku", "op": "is_null"}]}},
        {"event": "pay", "where": None, "measure": "distinct_days", "time": {"since": "2026-05-01"}},
        {"sequence": [{"event": "a"}, {"event": "b", "where": {"key": "qty", "op": "gt", "value": 1}}],
         "time": {"last_hours": 3}, "max_gap": {"minutes": 30}},
        {"event": "a", "time": {"last_days": 7}, "not_followed_by": {"event": "b", "within": {"hours": 24}}},
    ]  # fmt: skip
    for node in good:
        check_rule(node, CATALOG, event_schema(["pay", "login", "a", "b"], [
            EventAttribute("amount", "amount", ValueType.DOUBLE), EventAttribute("qty", "qty", ValueType.INT),
            EventAttribute("sku", "sku")]))  # fmt: skip
        assert rule.is_valid(node), node
    bad = [
        {"event": "pay", "count": 2},
        {"sequence": [{"event": "a"}]},
        {"event": "pay", "time": {"last_days": 0}},
        {"event": "pay", "measure": {"sum": "amount", "avg": "amount"}},
        {"event": "pay", "where": {"key": "usr_age", "op": "in", "value": []}},
        {"event": "a", "not_followed_by": {"event": "b"}},
        {"event": "pay", "where": {"event": "login"}},
    ]
    for node in bad:
        assert not rule.is_valid(node), node
        with pytest.raises(InvalidRule):
            check_rule(node, CATALOG, EVENTS)
