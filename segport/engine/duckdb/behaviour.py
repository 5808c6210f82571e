"""DuckDB's SQL for event conditions (:mod:`segport.engine.behaviour_sql` writes the statements): ``$time`` is a
``TIMESTAMP`` in UTC, compared with timestamp literals so the zone maps of the event table's row groups (it is
stored in time order) skip everything outside a window; days in the project's time zone through ICU's
``timezone`` (or a shift by the zone's one UTC offset through the window), distinct days of a window up to
127 days long as the bits of one integer; DuckDB's ``ASOF JOIN`` for sequences and drop-off."""

from __future__ import annotations

import datetime as dt

import duckdb

from segport.domain.behaviour import Window, day_of
from segport.domain.keys import ValueType
from segport.engine.behaviour_sql import EventSQL, fixed_offset_ms
from segport.engine.duckdb.events import events_table, store_columns
from segport.engine.duckdb.sql import sql_string

MASK_DAYS = 127  # distinct days as the bits of a HUGEINT: days 0..126 of a window (bit 127 is the sign)


class DuckDBEventSQL(EventSQL):
    def timestamp(self, ms: int) -> str:
        moment = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
        return f"TIMESTAMP '{moment.isoformat(sep=' ', timespec='milliseconds')}'"

    def millis(self, col: str) -> str:
        return f"epoch_ms({col})"

    def day(self, col: str, window: Window | None = None) -> str:
        offset = fixed_offset_ms(self.ctx.time_zone, window)
        if offset is not None:  # one UTC offset all through the window: the day is the shifted time's date
            return f"CAST({col} + to_milliseconds({offset}) AS DATE)"
        return f"CAST(timezone({sql_string(self.ctx.time_zone)}, timezone('UTC', {col})) AS DATE)"

    def count_distinct(self, expr: str) -> str:
        return f"count(DISTINCT {expr})"

    def distinct_days(self, col: str, window: Window | None = None) -> str:
        # a window of at most 127 days: each row sets its day's bit in a 128-bit integer and the days are the bits
        # set (a fixed-size bit_or per user, about a third cheaper than the hash set count(DISTINCT) keeps)
        if window is None or window.start_ms is None or window.end_ms is None or window.end_ms <= window.start_ms:
            return super().distinct_days(col, window)
        first = day_of(window.start_ms, self.ctx.time_zone)
        if (day_of(window.end_ms - 1, self.ctx.time_zone) - first).days >= MASK_DAYS:
            return super().distinct_days(col, window)
        index = f"CAST({self.day(col, window)} - DATE '{first.isoformat()}' AS HUGEINT)"
        return f"bit_count(bit_or(CAST(1 AS HUGEINT) << {index}))"

    def double(self, value: float) -> str:
        return f"CAST('{value!r}' AS DOUBLE)"

    def null_of(self, value_type: ValueType) -> str:
        return f"CAST(NULL AS {value_type.sql})"

    def string(self, text: str) -> str:
        return sql_string(text)


def event_table(cur: duckdb.DuckDBPyConnection, project_id: str) -> tuple[str | None, dict[str, str]]:
    """The project's event table and its columns (``None`` and no columns when it has none yet)."""
    columns = store_columns(cur, project_id)
    return (events_table(project_id) if columns else None), columns
