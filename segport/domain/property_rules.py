"""The property part of the rule compiler: ``and``/``or``/``not`` and key/op/value leaves, validated against a
catalogue and written as SQL through dialect methods (the grammar and semantics are in :mod:`segport.domain.rules`).

It is its own module so that the event conditions' parser (:mod:`segport.domain.behaviour_parse`) can check a
step's ``where`` (a property rule over event attributes) with it, and :mod:`segport.domain.rules` can build the
full compiler (property leaves and event conditions) on both without an import cycle.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, ValueType, canonical_key, quote_ident
from segport.errors import InvalidRule

OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "contains", "is_null", "not_null")
_CMP = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_DEPTH = 32
MAX_NODES = 1000
MAX_LIST = 10_000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
TOO_LARGE = f"rule is too large (at most {MAX_DEPTH} levels and {MAX_NODES} nodes)"


def is_event_condition(node: Any) -> bool:
    """Whether a rule node is an event condition (an object with ``event`` or ``sequence``), not a property
    leaf or ``and``/``or``/``not``."""
    return isinstance(node, dict) and ("event" in node or "sequence" in node)


class PropertyRuleCompiler:
    """Walks a rule tree, validating it, and writes SQL through the dialect methods at the end: an engine's
    subclass writes that engine's SQL; this class itself only validates (its placeholders are no SQL to run).

    ``on_events``: the tree is a step's ``where``, its keys event attributes and standard fields (taken as
    written, no ``ids_`` spelling; an unknown one is an "unknown attribute"), and it may hold no event
    condition. ``params``: a list shared with an enclosing compile, so parameters stay in text order."""

    def __init__(
        self, catalog: Catalog, alias: str, *, params: list[Any] | None = None, on_events: bool = False
    ) -> None:
        self.catalog = catalog
        self.alias = alias
        self.params: list[Any] = [] if params is None else params
        self.keys: set[str] = set()
        self.nodes = 0
        self.on_events = on_events

    def node(self, rule: Any, where: str, depth: int) -> str:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise InvalidRule(TOO_LARGE)
        if not isinstance(rule, dict):
            raise InvalidRule(f"{where}: expected an object, got {type(rule).__name__}")
        if is_event_condition(rule):
            return self.event_node(rule, where, depth)
        if "key" in rule or "op" in rule:
            return self.leaf(rule, where)
        if len(rule) != 1:
            raise InvalidRule(f"{where}: expected exactly one of 'and', 'or', 'not', or a key/op/value leaf")
        ((name, arg),) = rule.items()
        if name in ("and", "or"):
            if not isinstance(arg, list) or not arg:
                raise InvalidRule(f"{where}.{name}: expected a non-empty list of rules")
            parts = [self.node(child, f"{where}.{name}[{i}]", depth + 1) for i, child in enumerate(arg)]
            return "(" + f" {name.upper()} ".join(parts) + ")"
        if name == "not":
            return f"(NOT {self.node(arg, f'{where}.not', depth + 1)})"
        raise InvalidRule(f"{where}: unknown operator {name!r} (expected 'and', 'or', 'not', or a leaf)")

    def leaf(self, rule: dict[str, Any], where: str) -> str:
        extra = set(rule) - {"key", "op", "value"}
        if extra:
            raise InvalidRule(f"{where}: unexpected field(s) {sorted(extra)}")
        key, op = rule.get("key"), rule.get("op")
        if not isinstance(key, str):
            raise InvalidRule(f"{where}: 'key' must be a string")
        if op not in OPS:
            raise InvalidRule(f"{where}: unknown op {op!r}; expected one of {', '.join(OPS)}")
        key = key if self.on_events else canonical_key(key)
        if key == GIO_ID:
            entry = CatalogEntry(GIO_ID, None, "gio_id", ValueType.INT)  # type: ignore[arg-type]
        else:
            found = self.catalog.entries.get(key) if self.on_events else self.catalog.get(key)
            if found is None:
                raise InvalidRule(f"{where}: unknown {'attribute' if self.on_events else 'key'} {key!r}")
            entry = found
            self.keys.add(key)
        col = f"{self.alias}.{quote_ident(key)}"
        if op == "is_null":
            self.no_value(rule, where, op)
            return self.is_null(col, entry.multi)
        if op == "not_null":
            self.no_value(rule, where, op)
            return self.not_null(col, entry.multi)
        if "value" not in rule:
            raise InvalidRule(f"{where}: op {op!r} needs a 'value'")
        value = rule["value"]
        if entry.multi:
            return self.multi_leaf(entry, col, op, value, where)
        if op in _CMP:
            if entry.type is ValueType.STRING and op not in ("eq", "ne"):
                pass  # strings compare in code-point order; allowed
            return f"coalesce({col} {_CMP[op]} {self.param(entry, value, where)}, false)"
        if op in ("in", "not_in"):
            items = self.items(value, where, op)
            marks = ", ".join(self.param(entry, v, where) for v in items)
            sql_op = "IN" if op == "in" else "NOT IN"
            return f"coalesce({col} {sql_op} ({marks}), false)"
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise InvalidRule(f"{where}: 'between' needs a value of two items [low, high]")
            lo, hi = (self.param(entry, v, where) for v in value)
            return f"coalesce({col} BETWEEN {lo} AND {hi}, false)"
        # contains
        if entry.type is not ValueType.STRING:
            raise InvalidRule(f"{where}: 'contains' works on string keys; {key!r} is {entry.type}")
        if not isinstance(value, str):
            raise InvalidRule(f"{where}: 'contains' needs a string value")
        return f"coalesce({self.contains(col, self.bind(value, ValueType.STRING, typed=False))}, false)"

    def multi_leaf(self, entry: CatalogEntry, col: str, op: str, value: Any, where: str) -> str:
        if op in ("eq", "ne"):
            test = self.list_has(col, self.param(entry, value, where))
        elif op in ("in", "not_in"):
            marks = [self.param(entry, v, where) for v in self.items(value, where, op)]
            test = self.list_has_any(col, marks)
        elif op == "contains":
            if entry.type is not ValueType.STRING or not isinstance(value, str):
                raise InvalidRule(f"{where}: 'contains' needs a string key and a string value")
            test = self.list_contains_text(col, self.bind(value, ValueType.STRING, typed=False))
        else:
            raise InvalidRule(f"{where}: op {op!r} is not defined for multi-valued key {entry.key!r}")
        if op in ("ne", "not_in"):
            return f"coalesce({self.list_length(col)} > 0 AND NOT {test}, false)"
        return f"coalesce({test}, false)"

    def event_node(self, rule: dict[str, Any], where: str, depth: int) -> str:
        """An event condition; here (a step's ``where``, or a compiler without events) refused.
        :class:`segport.domain.rules.RuleCompiler` parses and compiles them."""
        if self.on_events:
            raise InvalidRule(f"{where}: an event condition cannot stand inside a step's 'where'")
        raise InvalidRule(f"{where}: event conditions need the project's events")

    # --- the dialect. Here placeholders, enough to validate a rule (check_rule); each engine's subclass
    # (segport.engine.<engine>.rules) writes its own SQL for every one of these.
    def bind(self, value: Any, value_type: ValueType, *, typed: bool = True) -> str:
        """Keep ``value`` as the next parameter; return its placeholder (cast to ``value_type`` if ``typed``)."""
        self.params.append(value)
        return "?"

    def is_null(self, col: str, multi: bool) -> str:
        return col

    def not_null(self, col: str, multi: bool) -> str:
        return col

    def contains(self, col: str, mark: str) -> str:
        return col

    def list_has(self, col: str, mark: str) -> str:
        return col

    def list_has_any(self, col: str, marks: list[str]) -> str:
        return col

    def list_contains_text(self, col: str, mark: str) -> str:
        return col

    def list_length(self, col: str) -> str:
        return col

    @staticmethod
    def no_value(rule: dict[str, Any], where: str, op: str) -> None:
        if rule.get("value") is not None:
            raise InvalidRule(f"{where}: op {op!r} takes no value")

    @staticmethod
    def items(value: Any, where: str, op: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise InvalidRule(f"{where}: {op!r} needs a non-empty list value")
        if len(value) > MAX_LIST:
            raise InvalidRule(f"{where}: {op!r} lists more than {MAX_LIST} values")
        return value

    def param(self, entry: CatalogEntry, value: Any, where: str) -> str:
        return self.bind(coerce_value(entry, value, where), entry.type)


def coerce_value(entry: CatalogEntry, value: Any, where: str) -> Any:
    """Check a rule value against the key's type; return it ready to bind."""
    t = entry.type
    bad = InvalidRule(f"{where}: value {value!r} is not a valid {t} for key {entry.key!r}")
    if value is None or isinstance(value, (list, dict)):
        raise bad
    if t is ValueType.STRING:
        if not isinstance(value, str):
            raise bad
        return value
    if t is ValueType.INT:
        if isinstance(value, bool):
            raise bad
        number: int | None = None
        if isinstance(value, int):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise bad from None
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if number is None or not INT_MIN <= number <= INT_MAX:  # the column is a 64-bit BIGINT
            raise bad
        return number
    if t is ValueType.DOUBLE:
        if isinstance(value, bool):
            raise bad
        try:
            number_ = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
        except (ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(number_):  # "NaN", "inf", 1e999: not a value a column holds or a rule can keep
            raise bad
        return number_
    # DATE
    if not isinstance(value, str):
        raise bad
    try:
        return dt.date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise bad from None
