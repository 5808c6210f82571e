"""DuckDB's dialect of the rule compiler (:mod:`segport.domain.rules`): ``?`` parameters cast to the key's type,
and DuckDB's list functions for multi-valued keys."""

from __future__ import annotations

from typing import Any

from segport.domain.keys import ValueType
from segport.engine.behaviour_sql import EventTableRules
from segport.engine.duckdb.behaviour import DuckDBEventSQL


class DuckDBRules(EventTableRules):
    """The rule compiler writing DuckDB SQL."""

    event_sql = DuckDBEventSQL

    def bind(self, value: Any, value_type: ValueType, *, typed: bool = True) -> str:
        """Keep ``value`` as the next parameter; return its placeholder (cast to ``value_type`` if ``typed``)."""
        self.params.append(value)
        return f"CAST(? AS {value_type.sql})" if typed else "?"

    def is_null(self, col: str, multi: bool) -> str:
        return f"({col} IS NULL)" if not multi else f"({col} IS NULL OR len({col}) = 0)"

    def not_null(self, col: str, multi: bool) -> str:
        return f"({col} IS NOT NULL)" if not multi else f"coalesce(len({col}) > 0, false)"

    def contains(self, col: str, mark: str) -> str:
        return f"contains({col}, {mark})"

    def list_has(self, col: str, mark: str) -> str:
        return f"list_contains({col}, {mark})"

    def list_has_any(self, col: str, marks: list[str]) -> str:
        return f"list_has_any({col}, [{', '.join(marks)}])"

    def list_contains_text(self, col: str, mark: str) -> str:
        return f"len(list_filter({col}, lambda x: contains(x, {mark}))) > 0"

    def list_length(self, col: str) -> str:
        return f"len({col})"
