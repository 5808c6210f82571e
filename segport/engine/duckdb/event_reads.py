"""Reading DuckDB's event store: one user's events (the E18 endpoint), and time-bounded counts with the rows the
scan read (which the tests use to hold that a bounded scan reads only its time)."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from segport.domain.keys import CatalogEntry, quote_ident
from segport.engine.base import EventScan, UserEvents
from segport.engine.duckdb.events import DEVICE_COLUMN, FIXED, LINKS, events_table, q, store_columns
from segport.engine.duckdb.sql import users_table

MAX_MS = 9_999_999_999_999  # 2286-11-20: bounds beyond are clamped to it (within both engines' time types)


def _clamp(ms: int) -> int:
    return max(0, min(ms, MAX_MS))


def resolve_gio_id(cur: duckdb.DuckDBPyConnection, project_id: str, identity: CatalogEntry, value: str) -> int:
    """The user an identity value names, as events resolve it (0: nobody): a device id an event linked to a login
    user is that user (docs/events.md, "Identity links"); otherwise the lowest ``gio_id`` holding the value. E18
    and the single-user lookup (E10/E11) both resolve by it."""
    col = f"u.{quote_ident(identity.key)}"
    test = f"list_contains({col}, ?)" if identity.multi else f"{col} = ?"
    if identity.key == DEVICE_COLUMN:  # a device linked to a user is that user (docs/events.md)
        try:
            linked = cur.execute(f"SELECT gio_id FROM {LINKS} WHERE project = ? AND device = ?", [project_id, value])
            row = linked.fetchone()
        except duckdb.CatalogException:  # no event loaded yet: no links
            row = None
        if row is not None:
            return int(row[0])
    try:
        row = cur.execute(
            f"SELECT u.gio_id FROM {users_table(project_id)} u WHERE {test} ORDER BY u.gio_id LIMIT 1", [value]
        ).fetchone()
    except (duckdb.CatalogException, duckdb.BinderException):  # no users table or no such column yet: no user
        return 0
    return int(row[0]) if row else 0


def user_events(
    cur: duckdb.DuckDBPyConnection,
    project_id: str,
    identity: CatalogEntry,
    value: str,
    start_ms: int,
    end_ms: int,
    limit: int,
    offset: int,
    descending: bool,
) -> UserEvents:
    gio_id = resolve_gio_id(cur, project_id, identity, value)
    have = store_columns(cur, project_id)
    if not gio_id or not have:
        return UserEvents(gio_id, [], False)
    extra = [c for c in have if c not in FIXED]
    shown = [f"CAST({q(c)} AS VARCHAR)" if have[c] == "DATE" else q(c) for c in extra]
    way = "DESC" if descending else "ASC"
    rows = cur.execute(
        f'SELECT epoch_ms("$time"), "$event", "$type"{"".join(", " + s for s in shown)} '
        f'FROM {events_table(project_id)} WHERE gio_id = ? AND "$time" >= epoch_ms(?::BIGINT) '
        f'AND "$time" < epoch_ms(?::BIGINT) ORDER BY "$time" {way}, "$event" {way}, rowid {way} LIMIT ? OFFSET ?',
        [gio_id, _clamp(start_ms), _clamp(end_ms), limit + 1, offset],
    ).fetchall()
    return UserEvents(gio_id, [shape(r, extra) for r in rows[:limit]], len(rows) > limit)


def shape(row: tuple[Any, ...], extra: list[str]) -> dict[str, Any]:
    """A stored row as the engine answers it: time in ms, name, type, non-null attributes and standard fields."""
    attrs = {c: v for c, v in zip(extra, row[3:], strict=True) if v is not None and not c.startswith("$")}
    std = {c[1:]: v for c, v in zip(extra, row[3:], strict=True) if v is not None and c.startswith("$")}
    return {"time": int(row[0]), "event": row[1], "type": row[2], "attrs": attrs, "std": std}


def count_events(cur: duckdb.DuckDBPyConnection, project_id: str, start_ms: int, end_ms: int) -> EventScan:
    if not store_columns(cur, project_id):
        return EventScan(0, 0)
    cur.execute("SET enable_profiling = 'no_output'")
    cur.execute("SET profiling_mode = 'detailed'")
    try:
        row = cur.execute(
            f'SELECT count(*) FROM {events_table(project_id)} WHERE "$time" >= epoch_ms(?::BIGINT) '
            'AND "$time" < epoch_ms(?::BIGINT)',
            [_clamp(start_ms), _clamp(end_ms)],
        ).fetchone()
        info = json.loads(cur.get_profiling_information(format="json"))
    finally:
        cur.execute("RESET enable_profiling")
    # DuckDB's profiler cannot render a plan whose statistics hold cut non-ASCII text: then the rows read are
    # unknown (-1); the count itself is right either way
    scanned = _rows_scanned(info) if "operator" in info else -1
    return EventScan(int(row[0]) if row else 0, scanned)


def _rows_scanned(node: Any) -> int:
    if isinstance(node, dict):
        own = int(node.get("rows_scanned", 0)) if node.get("type") == "TABLE_SCAN" else 0
        return own + sum(_rows_scanned(v) for k, v in node.items() if k in ("operator", "children"))
    if isinstance(node, list):
        return sum(_rows_scanned(v) for v in node)
    return 0
