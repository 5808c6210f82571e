"""ClickHouse's dialect of the rule compiler (:mod:`segport.domain.rules`): typed server-side parameters, and
ClickHouse's array functions for multi-valued keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segport.domain.behaviour import Condition
from segport.domain.keys import ValueType
from segport.domain.rules import RuleCompiler
from segport.engine.behaviour_sql import SharedPass
from segport.engine.clickhouse import behaviour
from segport.engine.clickhouse.sql import CH_TYPES


class ClickHouseRules(RuleCompiler):
    """The rule compiler writing ClickHouse SQL: typed server-side parameters ``{pN:T}`` in place of ``?``.

    Every leaf is wrapped in ``coalesce(..., false)`` by the base class, so AND/OR/NOT see only true/false and
    the semantics written in :mod:`segport.domain.rules` hold here exactly as in DuckDB."""

    # the project's event table, as event conditions read it: set by :meth:`on_events` for one computation
    event_table: str | None = None
    event_columns: Mapping[str, Any] | None = None
    event_shared: SharedPass | None = None  # measures computed for several segments in one pass

    @classmethod
    def on_events(
        cls, table: str | None, columns: Mapping[str, Any], shared: SharedPass | None = None
    ) -> type[ClickHouseRules]:
        """This dialect over a project's event table (``None``: the project has none yet) and its columns."""
        attrs = {"event_table": table, "event_columns": dict(columns), "event_shared": shared}
        return type(cls.__name__, (cls,), attrs)

    def event_condition(self, cond: Condition) -> str:
        if self.behaviour is None or self.event_columns is None:
            raise RuntimeError("event conditions compile over an event table: use ClickHouseRules.on_events(...)")
        return behaviour.compile_condition(
            cond, self.behaviour, self, self.event_table, self.event_columns, self.event_shared
        )

    def bind(self, value: Any, value_type: ValueType, *, typed: bool = True) -> str:
        self.params.append(value)
        return f"{{p{len(self.params) - 1}:{CH_TYPES[value_type]}}}"

    def is_null(self, col: str, multi: bool) -> str:
        return f"empty({col})" if multi else f"({col} IS NULL)"

    def not_null(self, col: str, multi: bool) -> str:
        return f"notEmpty({col})" if multi else f"({col} IS NOT NULL)"

    def contains(self, col: str, mark: str) -> str:
        return f"(position({col}, {mark}) > 0)"

    def list_has(self, col: str, mark: str) -> str:
        return f"has({col}, {mark})"

    def list_has_any(self, col: str, marks: list[str]) -> str:
        return f"hasAny({col}, [{', '.join(marks)}])"

    def list_contains_text(self, col: str, mark: str) -> str:
        return f"arrayExists(x -> position(x, {mark}) > 0, {col})"

    def list_length(self, col: str) -> str:
        return f"length({col})"


def rule_parameters(params: list[Any]) -> dict[str, Any]:
    return {f"p{i}": v for i, v in enumerate(params)}
