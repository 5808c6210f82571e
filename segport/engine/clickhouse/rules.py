"""ClickHouse's dialect of the rule compiler (:mod:`segport.domain.rules`): typed server-side parameters, and
ClickHouse's array functions for multi-valued keys."""

from __future__ import annotations

from typing import Any

from segport.domain.keys import ValueType
from segport.engine.behaviour_sql import EventTableRules
from segport.engine.clickhouse.behaviour import ClickHouseEventSQL
from segport.engine.clickhouse.sql import CH_TYPES


class ClickHouseRules(EventTableRules):
    """The rule compiler writing ClickHouse SQL: typed server-side parameters ``{pN:T}`` in place of ``?``.

    Every leaf is wrapped in ``coalesce(..., false)`` by the base class, so AND/OR/NOT see only true/false and
    the semantics written in :mod:`segport.domain.rules` hold here exactly as in DuckDB."""

    event_sql = ClickHouseEventSQL

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
