"""ClickHouse's SQL for event conditions (:mod:`segport.engine.behaviour_sql` writes the statements): ``$time``
is a ``DateTime64(3, 'UTC')``, the event table is partitioned by month and ordered by ``($time, gio_id)``, so a
window's literal bounds prune partitions and granules; days in the project's time zone with ``toDate(t, tz)``;
ClickHouse's ``ASOF JOIN`` for sequences and drop-off."""

from __future__ import annotations

import datetime as dt
from typing import Any

from segport.domain.behaviour import Window
from segport.domain.keys import ValueType
from segport.engine.behaviour_sql import EventSQL
from segport.engine.clickhouse.events import events_table, store_columns
from segport.engine.clickhouse.sql import CH_TYPES, ch_string


class ClickHouseEventSQL(EventSQL):
    def timestamp(self, ms: int) -> str:
        moment = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
        return f"toDateTime64('{moment.isoformat(sep=' ', timespec='milliseconds')}', 3, 'UTC')"

    def millis(self, col: str) -> str:
        return f"toUnixTimestamp64Milli({col})"

    def day(self, col: str, window: Window | None = None) -> str:
        return f"toDate({col}, {ch_string(self.ctx.time_zone)})"

    def count_distinct(self, expr: str) -> str:
        return f"uniqExact({expr})"

    def double(self, value: float) -> str:
        return f"toFloat64('{value!r}')"

    def null_of(self, value_type: ValueType) -> str:
        return f"CAST(NULL, 'Nullable({CH_TYPES[value_type]})')"

    def string(self, text: str) -> str:
        return ch_string(text)

    def asof(self, left: str, right: str, key: str, kind: str = "") -> str:
        return f"{left} {kind + ' ' if kind else ''}ASOF JOIN {right} ON x.gio_id = r.gio_id AND {key}"


def event_table(engine: Any, project_id: str) -> tuple[str | None, dict[str, str]]:
    """The project's event table and its columns (``None`` and no columns when it has none yet)."""
    columns = store_columns(engine, project_id)
    return (events_table(engine, project_id) if columns else None), columns
