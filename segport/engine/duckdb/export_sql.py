"""The export's SQL on DuckDB: the ``SELECT`` that renders a target's members (columns, headers, the JSON
shape), its source (a segment's membership joined to the users table, or a tag's non-null users) and the
``COPY`` options of each format. :class:`segport.engine.duckdb.engine.DuckDBEngine` writes it with
:mod:`segport.engine.duckdb.writer`; the bench times the same statements written by DuckDB alone.
"""

from __future__ import annotations

import duckdb

from segport.domain.export import ExportSpec, FileFormat, column_headers, split_columns
from segport.domain.keys import CatalogEntry, quote_ident
from segport.engine.base import Target
from segport.engine.duckdb.sql import json_value, members_table, rendered, sql_string, users_table
from segport.errors import SegmentNotFound


def export_query(
    cur: duckdb.DuckDBPyConnection,
    project_id: str,
    target: Target,
    columns: list[CatalogEntry],
    spec: ExportSpec,
    *,
    excel_safe: bool = False,
) -> tuple[str, str]:
    """The whole export as one ``SELECT`` and its ``COPY`` options: the bench times this statement written by
    DuckDB directly, the limit :meth:`DuckDBEngine.export` is measured against."""
    src = _source(cur, project_id, target)
    return _query(_select_list(columns, spec, excel_safe), src, ""), _copy_options(spec)


def filtered_query(
    project_id: str, columns: list[CatalogEntry], spec: ExportSpec, where: str, *, excel_safe: bool = False
) -> tuple[str, str]:
    """The same rows and columns written from the users table with a hand-written ``WHERE`` instead of a
    membership snapshot (what a user would type): the bench's second limit."""
    src = f"{users_table(project_id)} u WHERE {where}"
    return _query(_select_list(columns, spec, excel_safe), src, ""), _copy_options(spec)


def _query(select_list: str, src: str, where: str) -> str:
    """The export's ``SELECT``; ``where`` narrows it further (chunks and parts use a ``u.gio_id`` range)."""
    if where:
        src += f" {'AND' if ' WHERE ' in src else 'WHERE'} {where}"
    return f"SELECT {select_list} FROM {src} ORDER BY u.gio_id"


def _ids_query(src: str, project_id: str, target: Target) -> str:
    """The ``gio_id`` of a target's members: for a segment its membership table alone (ints, no join; every
    member is a user, as memberships are computed from the users table and users are never deleted)."""
    if target.kind == "tag":
        return f"SELECT u.gio_id FROM {src}"
    return f"SELECT gio_id FROM {members_table(project_id, target.key)}"


def _source(cur: duckdb.DuckDBPyConnection, project_id: str, target: Target) -> str:
    """FROM clause (aliased ``u``, possibly with a ``WHERE``) of a target's members."""
    users = users_table(project_id)
    if target.kind == "tag":
        return f"{users} u WHERE u.{quote_ident(target.key)} IS NOT NULL"
    members = members_table(project_id, target.key)
    try:  # binding a query is far cheaper than a scan of information_schema (measured: it showed in profiles)
        cur.execute(f"SELECT gio_id FROM {members} LIMIT 0")
    except duckdb.CatalogException:
        raise SegmentNotFound(f"segment {target.key!r} has no computed membership yet") from None
    return f"{members} m JOIN {users} u USING (gio_id)"


def _select_list(columns: list[CatalogEntry], spec: ExportSpec, excel_safe: bool) -> str:
    gio = "CAST(u.gio_id AS VARCHAR) AS gio_id"
    if spec.file_format is FileFormat.JSON:
        if not columns:
            return gio
        ids, props = split_columns(columns)

        def struct(entries: list[CatalogEntry]) -> str:
            if not entries:
                return "'{}'::JSON"
            fields = ", ".join(f"{sql_string(e.key)}: {json_value(e, excel_safe=excel_safe)}" for e in entries)
            return "{" + fields + "}"

        return f"{gio}, {struct(ids)} AS identifications, {struct(props)} AS properties"
    headers = column_headers(columns, spec.header, excel_safe=excel_safe)
    parts = [gio] + [
        f"{rendered(e, excel_safe=excel_safe)} AS {_alias(h)}" for e, h in zip(columns, headers, strict=True)
    ]
    return ", ".join(parts)


def _alias(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_options(spec: ExportSpec) -> str:
    opts = ["FORMAT JSON"] if spec.file_format is FileFormat.JSON else ["FORMAT CSV", "HEADER", "FORCE_QUOTE *"]
    opts.append(f"COMPRESSION {'gzip' if spec.compression.value == 'gzip' else 'uncompressed'}")
    return ", ".join(opts)
