"""Segment rules: a JSON tree, validated against the catalogue and compiled to parameterised SQL.

Grammar::

    rule := {"and": [rule, ...]} | {"or": [rule, ...]} | {"not": rule}
          | {"key": KEY, "op": OP, "value": VALUE}

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
(``segport.engine.duckdb.rules``, ``segport.engine.clickhouse.rules``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from segport.domain import strict_json
from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, ValueType, canonical_key, quote_ident
from segport.errors import InvalidRule

OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "contains", "is_null", "not_null")
_CMP = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_DEPTH = 32
MAX_NODES = 1000
MAX_LIST = 10_000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class CompiledRule:
    sql: str
    params: list[Any]
    keys: frozenset[str]


def parse_rule_text(text: str) -> Any:
    try:
        return strict_json.loads(text)
    except strict_json.TooDeep:
        raise InvalidRule(f"rule is too large (at most {MAX_DEPTH} levels and {MAX_NODES} nodes)") from None
    except strict_json.StrictJSONError as exc:
        raise InvalidRule(f"rule is not valid JSON: {exc}") from None


def rule_keys(rule: Any) -> set[str]:
    """Every key a (valid) rule refers to."""
    if isinstance(rule, dict):
        if "key" in rule:
            return {canonical_key(str(rule["key"]))}
        out: set[str] = set()
        for child in rule.get("and", []) + rule.get("or", []) + ([rule["not"]] if "not" in rule else []):
            out |= rule_keys(child)
        return out
    return set()


def compile_rule(rule: Any, catalog: Catalog, dialect: type[RuleCompiler], alias: str = "u") -> CompiledRule:
    """Validate ``rule`` against ``catalog`` and compile it to a SQL boolean expression in ``dialect``, a
    subclass of :class:`RuleCompiler` that writes one engine's SQL (the validation and the semantics above are
    the base class's, so every engine refuses and matches alike)."""
    compiler = dialect(catalog, alias)
    sql = compiler.node(rule, "rule", 0)
    return CompiledRule(sql, compiler.params, frozenset(compiler.keys))


def check_rule(rule: Any, catalog: Catalog) -> None:
    """Validate ``rule`` against ``catalog`` (raises :class:`InvalidRule`), writing no engine's SQL."""
    compile_rule(rule, catalog, RuleCompiler)


class RuleCompiler:
    """Walks a rule tree, validating it, and writes SQL through the dialect methods at the end: an engine's
    subclass writes that engine's SQL; this class itself only validates (its placeholders are no SQL to run)."""

    def __init__(self, catalog: Catalog, alias: str) -> None:
        self.catalog = catalog
        self.alias = alias
        self.params: list[Any] = []
        self.keys: set[str] = set()
        self.nodes = 0

    def node(self, rule: Any, where: str, depth: int) -> str:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise InvalidRule(f"rule is too large (at most {MAX_DEPTH} levels and {MAX_NODES} nodes)")
        if not isinstance(rule, dict):
            raise InvalidRule(f"{where}: expected an object, got {type(rule).__name__}")
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
        key = canonical_key(key)
        if key == GIO_ID:
            entry = CatalogEntry(GIO_ID, None, "gio_id", ValueType.INT)  # type: ignore[arg-type]
        else:
            found = self.catalog.get(key)
            if found is None:
                raise InvalidRule(f"{where}: unknown key {key!r}")
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
