"""Segment rules: a JSON tree, validated against the catalogue and compiled to parameterised SQL.

Grammar::

    rule := {"and": [rule, ...]} | {"or": [rule, ...]} | {"not": rule}
          | {"key": KEY, "op": OP, "value": VALUE}
          | EVENT_CONDITION      (an object with "event" or "sequence": docs/behaviour.md,
                                  :mod:`segport.domain.behaviour`, parsed by :mod:`segport.domain.behaviour_parse`)

Semantics (written down because SQL's three-valued logic would otherwise leak through):

* A leaf matches only users that *have* a value for its key, except ``is_null``. So ``ne`` and ``not_in``
  never match a user with no value.
* ``not`` is the set complement: ``{"not": {"key": "usr_gender", "op": "eq", "value": "男"}}`` matches
  everyone who is not recorded as 男, users with no gender included.
* On a multi-valued key (``string[]``) ``eq``/``in`` match when any value matches, ``ne``/``not_in`` when
  none does, ``contains`` when any value contains the text; order comparisons are refused.

The compiler never puts a value into SQL text: values become parameters, keys become quoted identifiers that
the key grammar already restricts to ``[A-Za-z0-9_$]``. What is written here is the validation and the semantics,
in the SQL both engines share (``AND``/``OR``/``NOT``, ``coalesce``, ``IN``, ``BETWEEN``); each engine's own SQL
(its parameters, its list functions) is a dialect, a subclass of :class:`RuleCompiler` that lives with the engine
(``segport.engine.duckdb.rules``, ``segport.engine.clickhouse.rules``). An event condition reaches the dialect
parsed (:meth:`RuleCompiler.event_condition`); the property part of the compiler is
:mod:`segport.domain.property_rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segport.domain import strict_json
from segport.domain.behaviour import BehaviourContext, Condition, EventSchema
from segport.domain.behaviour_parse import parse_condition
from segport.domain.keys import Catalog, canonical_key
from segport.domain.property_rules import (
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    MAX_LIST,
    MAX_NODES,
    OPS,
    TOO_LARGE,
    PropertyRuleCompiler,
    coerce_value,
    is_event_condition,
)
from segport.errors import InvalidRule

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "MAX_LIST",
    "MAX_NODES",
    "OPS",
    "CompiledRule",
    "RuleCompiler",
    "check_rule",
    "coerce_value",
    "compile_rule",
    "has_event_conditions",
    "is_event_condition",
    "parse_rule_text",
    "rule_keys",
]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    sql: str
    params: list[Any]
    keys: frozenset[str]


def parse_rule_text(text: str) -> Any:
    try:
        return strict_json.loads(text)
    except strict_json.TooDeep:
        raise InvalidRule(TOO_LARGE) from None
    except strict_json.StrictJSONError as exc:
        raise InvalidRule(f"rule is not valid JSON: {exc}") from None


def rule_keys(rule: Any) -> set[str]:
    """Every catalogue key a (valid) rule refers to (event conditions name event attributes, not keys)."""
    if isinstance(rule, dict):
        if is_event_condition(rule):
            return set()
        if "key" in rule:
            return {canonical_key(str(rule["key"]))}
        out: set[str] = set()
        for child in rule.get("and", []) + rule.get("or", []) + ([rule["not"]] if "not" in rule else []):
            out |= rule_keys(child)
        return out
    return set()


def has_event_conditions(rule: Any) -> bool:
    """Whether a rule holds an event condition anywhere under its ``and``/``or``/``not``."""
    if not isinstance(rule, dict):
        return False
    if is_event_condition(rule):
        return True
    children: list[Any] = []
    for name in ("and", "or"):
        if isinstance(rule.get(name), list):
            children.extend(rule[name])
    if "not" in rule:
        children.append(rule["not"])
    return any(has_event_conditions(c) for c in children)


def compile_rule(
    rule: Any,
    catalog: Catalog,
    dialect: type[RuleCompiler],
    alias: str = "u",
    behaviour: BehaviourContext | None = None,
) -> CompiledRule:
    """Validate ``rule`` against ``catalog`` (and its event conditions against ``behaviour.events``) and compile
    it to a SQL boolean expression in ``dialect``, a subclass of :class:`RuleCompiler` that writes one engine's
    SQL (the validation and the semantics above are the base class's, so every engine refuses and matches
    alike). A rule with event conditions needs ``behaviour``."""
    compiler = dialect(catalog, alias, behaviour=behaviour)
    sql = compiler.node(rule, "rule", 0)
    return CompiledRule(sql, compiler.params, frozenset(compiler.keys))


def check_rule(rule: Any, catalog: Catalog, events: EventSchema | None = None) -> None:
    """Validate ``rule`` against ``catalog`` and its event conditions against ``events`` (raises
    :class:`InvalidRule`; without ``events`` an event condition is refused), writing no engine's SQL."""
    compiler = RuleCompiler(catalog, "u", events=events)
    compiler.node(rule, "rule", 0)


class RuleCompiler(PropertyRuleCompiler):
    """The rule compiler: property leaves (:class:`PropertyRuleCompiler`) and event conditions, parsed and
    checked here and written by the dialect's :meth:`event_condition`. This class itself only validates."""

    def __init__(
        self,
        catalog: Catalog,
        alias: str,
        *,
        behaviour: BehaviourContext | None = None,
        events: EventSchema | None = None,
        params: list[Any] | None = None,
        on_events: bool = False,
    ) -> None:
        super().__init__(catalog, alias, params=params, on_events=on_events)
        self.behaviour = behaviour
        self.events = events if events is not None else (behaviour.events if behaviour is not None else None)

    def event_node(self, rule: dict[str, Any], where: str, depth: int) -> str:
        if self.on_events or self.events is None:
            return super().event_node(rule, where, depth)
        self.nodes += _size(rule, MAX_NODES - self.nodes + 1) - 1  # the condition's nodes count to the rule's
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise InvalidRule(TOO_LARGE)
        return self.event_condition(parse_condition(rule, where, self.events))

    def step_where(self, where: Any, alias: str = "e") -> str:
        """A step's ``where`` (already checked by the parser) as SQL over the event table aliased ``alias``, in
        this dialect, its parameters appended to this compile's (so they stay in text order); ``TRUE`` when
        the step has none."""
        if where is None:
            return "TRUE"
        assert self.events is not None
        sub = type(self)(self.events.attributes, alias, behaviour=self.behaviour, params=self.params, on_events=True)
        return sub.node(where, "where", 0)

    # --- the dialect hook for event conditions: an engine's subclass writes a boolean SQL expression over the
    # users alias (``self.alias``), using ``self.behaviour`` (the window's clock and time zone, the event
    # schema), ``self.params`` (shared) and :meth:`step_where`. Here a placeholder: validation only.
    def event_condition(self, cond: Condition) -> str:
        return "TRUE"


def _size(node: Any, limit: int) -> int:
    """The number of objects in a JSON value (counted up to ``limit``)."""
    count, todo = 0, [node]
    while todo and count < limit:
        item = todo.pop()
        if isinstance(item, dict):
            count += 1
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return count
