"""Writing an export with DuckDB ``COPY``: one file, or parts of at most ``max_file_rows`` rows; flat memory.

An export is ordered by ``gio_id``, and ordering means sorting: one ``COPY`` of 5M members makes DuckDB sort
5M wide rows at once (gigabytes, or spilling to disk under a memory limit). So a large export is cut into
*chunks* of about ``chunk_rows`` members by ``gio_id`` range, each written by its own ``COPY`` that sorts only
its chunk. The chunks of one file are streamed, in order, through a FIFO into that file (the first with the CSV
header, the others without), so the result is byte for byte what a single ``COPY`` writes, nothing is
re-read, and memory stays flat however large the segment. Parts (``max_file_rows``) are cut the same way, on
exact row counts, each part its own file with its own header.

Everything runs in one read transaction, so all chunks and parts come from one snapshot even while an import
commits. A cancel aborts the running statement (``cursor.interrupt()``), which does nothing between two
statements: so ``stopped`` is asked before each one, and an export cancelled between chunks stops there. Chunk and part starts are read from the target's ``gio_id`` list alone (for a segment: its
membership table, ints only), which is cheap next to the export itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from segport.engine.base import ExportOutput
from segport.engine.duckdb.fifo import fifo_into
from segport.engine.duckdb.sql import sql_string

ScanFor = Callable[[duckdb.DuckDBPyConnection, int, int], tuple[str, list[Any]] | None]
CHUNK_ROWS = 200_000  # one chunk's sort fits well inside a 256MB DuckDB memory limit, even for JSON


def _never() -> bool:
    return False


def check(stopped: Callable[[], bool]) -> None:
    """Raise DuckDB's own interrupt error if the export was stopped (the engine reports both alike)."""
    if stopped():
        raise duckdb.InterruptException("the export was stopped between two statements")


def copy_to(
    cur: duckdb.DuckDBPyConnection,
    query: str,
    path: Path | str,
    options: str,
    stopped: Callable[[], bool] = _never,
    params: list[Any] | None = None,
) -> int:
    """``COPY (query) TO path (options)``; returns the rows written."""
    check(stopped)
    row = cur.execute(f"COPY ({query}) TO {sql_string(str(path))} ({options})", params or None).fetchone()
    return int(row[0]) if row else 0


def write_export(
    cur: duckdb.DuckDBPyConnection,
    query_for: Callable[[str], tuple[str, str]],
    ids_query: str,
    out_dir: Path,
    file_names: Callable[[int], list[str]],
    *,
    max_file_rows: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    version_of: Callable[[duckdb.DuckDBPyConnection], int],
    stopped: Callable[[], bool] = _never,
    scan_for: ScanFor | None = None,
) -> ExportOutput:
    """Write the export into ``out_dir``: one file, or parts of at most ``max_file_rows`` rows (0 = one file).

    ``query_for(where)`` gives the export's query and ``COPY`` options, narrowed by ``where`` (a condition on
    ``u.gio_id``; empty = all). ``ids_query`` selects the ``gio_id`` of every member. A single part keeps the
    plain file name (``file_names(1)``). ``stopped()`` true: stop before the next statement.

    ``scan_for(cur, version, members)``: the whole export as one ``SELECT`` (and its parameters) that needs no
    sort (a scan of the users table in ``gio_id`` order, export_sql.scan_query), or None. When it gives one and
    the export is one file, that is the export: one ``COPY``, streaming, so its memory is flat without chunks.
    """
    can_stream = hasattr(os, "mkfifo")
    cur.execute("SET enable_progress_bar = false")  # no bars in the server's log
    cur.execute("BEGIN TRANSACTION")
    try:
        check(stopped)
        version = version_of(cur)  # in the snapshot the files are read from
        total = int(cur.execute(f"SELECT count(*) FROM ({ids_query})").fetchone()[0])  # type: ignore[index]
        if scan_for is not None and (not max_file_rows or total <= max_file_rows):
            check(stopped)
            scan = scan_for(cur, version, total)
            if scan is not None:
                query, params = scan
                options = query_for("")[1]
                path = out_dir / file_names(1)[0]
                if can_stream:  # gzip through the pump, as below
                    rows = _write_file(cur, lambda _where: (query, options), path, [(None, None)], stopped, params)
                else:
                    rows = copy_to(cur, query, path, options, stopped, params)
                return ExportOutput(rows, [path], version)
        step = chunk_rows if can_stream else total + 1
        if total <= step and (not max_file_rows or total <= max_file_rows):
            path = out_dir / file_names(1)[0]
            if can_stream and _gzipped(query_for("")[1]):
                return ExportOutput(_write_file(cur, query_for, path, [(None, None)], stopped), [path], version)
            query, options = query_for("")
            return ExportOutput(copy_to(cur, query, path, options, stopped), [path], version)
        check(stopped)
        files = _plan(cur, ids_query, step, max_file_rows)
        paths = [out_dir / name for name in file_names(len(files))]
        rows = 0
        for path, chunks in zip(paths, files, strict=True):
            rows += _write_file(cur, query_for, path, chunks, stopped)
        return ExportOutput(rows, paths, version)
    finally:
        cur.execute("ROLLBACK")  # a read-only transaction: ending it is all there is to do


def _plan(
    cur: duckdb.DuckDBPyConnection, ids_query: str, chunk_rows: int, max_file_rows: int
) -> list[list[tuple[int, int | None]]]:
    """Files, each a list of chunks ``(first gio_id, gio_id after the last or None)`` in order."""
    part = max_file_rows or 0
    test = f"(n - 1) % {chunk_rows} = 0" if not part else f"((n - 1) % {part}) % {chunk_rows} = 0"
    starts = cur.execute(
        f"SELECT gio_id, n FROM (SELECT gio_id, row_number() OVER (ORDER BY gio_id) AS n FROM ({ids_query})) "
        f"WHERE {test} ORDER BY gio_id"
    ).fetchall()
    files: list[list[tuple[int, int | None]]] = []
    for i, (gio_id, n) in enumerate(starts):
        end = int(starts[i + 1][0]) if i + 1 < len(starts) else None
        if not files or (part and (n - 1) % part == 0):
            files.append([])
        files[-1].append((int(gio_id), end))
    return files


def _range(start: int | None, end: int | None) -> str:
    if start is None:
        return ""  # the whole target
    return f"u.gio_id >= {start}" + ("" if end is None else f" AND u.gio_id < {end}")


def _gzipped(options: str) -> bool:
    return "COMPRESSION gzip" in options


def _write_file(
    cur: duckdb.DuckDBPyConnection,
    query_for: Callable[[str], tuple[str, str]],
    path: Path,
    chunks: list[tuple[int | None, int | None]],
    stopped: Callable[[], bool] = _never,
    params: list[Any] | None = None,
) -> int:
    """One result file: a single ``COPY`` for one chunk, else every chunk streamed through a FIFO into it.

    A gzip file always goes through the FIFO, compressed by the pump: DuckDB writes a pipe uncompressed, so
    this way a file's bytes are the same whatever its size and wherever ``path`` leads (a result store may
    hand us a FIFO of its own)."""
    gzipped = _gzipped(query_for("")[1])
    if len(chunks) == 1 and not gzipped:
        query, options = query_for(_range(*chunks[0]))
        return copy_to(cur, query, path, options, stopped, params)
    rows = 0
    with fifo_into(path, gzipped=gzipped) as pump:
        for i, chunk in enumerate(chunks):
            pump.check()  # a pump that failed (disk full) drains the FIFO: stop before the next chunk
            query, options = query_for(_range(*chunk))
            # DuckDB does not compress into a pipe: the pump does (one gzip stream for the whole file)
            options = options.replace("COMPRESSION gzip", "COMPRESSION uncompressed")
            if i:
                options = options.replace("HEADER", "HEADER false")
            rows += copy_to(cur, query, pump.path, options, stopped, params)
    return rows
