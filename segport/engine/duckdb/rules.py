"""DuckDB's dialect of the rule compiler (:mod:`segport.domain.rules`): ``?`` parameters cast to the key's type,
and DuckDB's list functions for multi-valued keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segport.domain.behaviour import Condition
from segport.domain.keys import ValueType
from segport.domain.rules import RuleCompiler
from segport.engine.behaviour_sql import SharedPass
from segport.engine.duckdb import behaviour


class DuckDBRules(RuleCompiler):
    """The rule compiler writing DuckDB SQL."""

    # the project's event table, as event conditions read it: set by :meth:`on_events` for one computation
    event_table: str | None = None
    event_columns: Mapping[str, Any] | None = None
    event_shared: SharedPass | None = None  # measures computed for several segments in one pass

    @classmethod
    def on_events(
        cls, table: str | None, columns: Mapping[str, Any], shared: SharedPass | None = None
    ) -> type[DuckDBRules]:
        """This dialect over a project's event table (``None``: the project has none yet) and its columns."""
        attrs = {"event_table": table, "event_columns": dict(columns), "event_shared": shared}
        return type(cls.__name__, (cls,), attrs)

    def event_condition(self, cond: Condition) -> str:
        if self.behaviour is None or self.event_columns is None:
            raise RuntimeError("event conditions compile over an event table: use DuckDBRules.on_events(...)")
        return behaviour.compile_condition(
            cond, self.behaviour, self, self.event_table, self.event_columns, self.event_shared
        )

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
