"""Writing an export as DuckDB ``COPY`` statements: one file, or parts of at most ``max_file_rows`` rows.

Parts are cut on ``gio_id``: one cheap query over the members' ids finds the first ``gio_id`` of every part,
then each part is the export's own query narrowed to its ``gio_id`` range and written by its own ``COPY``
(with its own header). The table files are stored in ``gio_id`` order, so DuckDB's min/max indexes skip the row
groups outside a part's range and the parts together cost about one export. Everything runs in one read
transaction, so all parts come from the same snapshot even while an import commits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from segport.engine.base import ExportOutput
from segport.engine.sql import sql_string


def copy_to(cur: duckdb.DuckDBPyConnection, query: str, path: Path, options: str) -> int:
    """``COPY (query) TO path (options)``; returns the rows written."""
    row = cur.execute(f"COPY ({query}) TO {sql_string(str(path))} ({options})").fetchone()
    return int(row[0]) if row else 0


def write_parts(
    cur: duckdb.DuckDBPyConnection,
    query_for: Callable[[str], tuple[str, str]],
    source: str,
    out_dir: Path,
    file_names: Callable[[int], list[str]],
    max_file_rows: int,
) -> ExportOutput:
    """Write the export in parts of at most ``max_file_rows`` rows, each with its header, in ``gio_id`` order.

    ``query_for(where)`` gives the export's query (and COPY options) narrowed by a condition on ``u.gio_id``;
    ``source`` is its FROM clause, used to find where each part starts. One part is written without a suffix.
    """
    cur.execute("BEGIN TRANSACTION")
    try:
        bounds = [
            int(r[0])
            for r in cur.execute(
                f"SELECT gio_id FROM (SELECT u.gio_id, row_number() OVER (ORDER BY u.gio_id) AS n FROM {source}) "
                "WHERE (n - 1) % ? = 0 ORDER BY gio_id",
                [max_file_rows],
            ).fetchall()
        ]
        paths = [out_dir / name for name in file_names(max(1, len(bounds)))]
        total = 0
        for i, path in enumerate(paths):
            if len(paths) == 1:
                where = ""
            elif i + 1 < len(bounds):
                where = f"u.gio_id >= {bounds[i]} AND u.gio_id < {bounds[i + 1]}"
            else:
                where = f"u.gio_id >= {bounds[i]}"
            query, options = query_for(where)
            total += copy_to(cur, query, path, options)
    finally:
        cur.execute("ROLLBACK")  # nothing was written to the database: ending the read is all it takes
    return ExportOutput(total, paths)
