"""The export's SQL on DuckDB: the ``SELECT`` that renders a target's members (columns, headers, the JSON
shape), its source (a segment's membership joined to the users table, or a tag's non-null users) and the
``COPY`` options of each format. :class:`segport.engine.duckdb.engine.DuckDBEngine` writes it with
:mod:`segport.engine.duckdb.writer`; the bench times the same statements written by DuckDB alone.
"""

from __future__ import annotations

import json
from typing import Any

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
    DuckDB directly, the limit :meth:`DuckDBEngine.export` is measured against. It is the statement the engine
    runs: one scan (:func:`scan_query`, its parameters written in as literals) when that applies, else the join
    of the membership with the users table."""
    src = _source(cur, project_id, target)
    select_list = _select_list(columns, spec, excel_safe)
    version = cur.execute("SELECT data_version FROM segport_state WHERE project = ?", [project_id]).fetchone()
    members = cur.execute(f"SELECT count(*) FROM ({_ids_query(src, project_id, target)})").fetchone()
    if version is not None and members is not None:
        scan = scan_query(cur, project_id, target, select_list, int(version[0]), int(members[0]))
        if scan is not None:
            query, params = scan
            head, where = query.split(f" FROM {users_table(project_id)} u WHERE ", 1)  # headers may hold a "?"
            return f"{head} FROM {users_table(project_id)} u WHERE {_with_literals(where, params)}", _copy_options(spec)
    return _query(select_list, src, ""), _copy_options(spec)


def _with_literals(query: str, params: list[Any]) -> str:
    """``query`` (a rule: keys are never quoted with a ``?`` in them) with its ``?`` parameters (str, int, float,
    bool or None) written as SQL literals."""
    pieces = query.split("?")
    if len(pieces) != len(params) + 1:
        raise ValueError("a placeholder count that does not match the parameters")
    out = [pieces[0]]
    for value, piece in zip(params, pieces[1:], strict=True):
        if value is None:
            out.append("NULL")
        elif isinstance(value, bool):
            out.append("TRUE" if value else "FALSE")
        elif isinstance(value, int | float):
            out.append(repr(value))
        else:
            out.append(sql_string(str(value)))
        out.append(piece)
    return "".join(out)


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


def scan_query(
    cur: duckdb.DuckDBPyConnection, project_id: str, target: Target, select_list: str, version: int, members: int
) -> tuple[str, list[Any]] | None:
    """The export as one scan of the users table with its filter and no sort, if that gives exactly the rows and
    the order of :func:`_query`; else None (the export then joins the membership and sorts by ``gio_id``).

    The filter: a tag's own (its column not null); a rule segment's rule, while the project's data version in
    this snapshot is still the one its membership was computed at (``segport_segment_rules``; every change to
    the users table bumps the version), so the rule selects exactly the membership's users. DuckDB then reads
    only the filter's columns for the users it skips, where a join reads every column of every user.

    No sort: the scan returns users in the table's physical order (``preserve_insertion_order``), which is
    ``gio_id`` order when ``gio_id - rowid`` is the same for every row (imports append new users in ``gio_id``
    order; an update that moves a row breaks it). That is checked in the same scan that counts the filter's
    rows against the membership's ``members``, in the export's snapshot, before anything is written."""
    users = users_table(project_id)
    if target.kind == "tag":
        where, params = f"u.{quote_ident(target.key)} IS NOT NULL", []
    else:
        row = cur.execute(
            "SELECT rule_sql, params FROM segport_segment_rules WHERE project = ? AND segment = ? AND data_version = ?",
            [project_id, target.key, version],
        ).fetchone()
        if row is None:
            return None
        where, params = f"({row[0]})", json.loads(row[1])
    check = cur.execute(
        f"SELECT coalesce(min(u.gio_id - u.rowid) = max(u.gio_id - u.rowid), true), count(*) FILTER (WHERE {where}) "
        f"FROM {users} u",
        params,
    ).fetchone()
    if check is None or not check[0] or int(check[1]) != members:
        return None
    return f"SELECT {select_list} FROM {users} u WHERE {where}", params


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
