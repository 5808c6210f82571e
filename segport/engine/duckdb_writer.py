"""Writing an export with DuckDB ``COPY``: one file, or parts of at most ``max_file_rows`` rows; flat memory.

An export is ordered by ``gio_id``, and ordering means sorting: one ``COPY`` of 5M members makes DuckDB sort
5M wide rows at once (gigabytes, or spilling to disk under a memory limit). So a large export is cut into
*chunks* of about ``chunk_rows`` members by ``gio_id`` range, each written by its own ``COPY`` that sorts only
its chunk. The chunks of one file are streamed, in order, through a FIFO into that file (the first with the CSV
header, the others without), so the result is byte for byte what a single ``COPY`` writes, nothing is
re-read, and memory stays flat however large the segment. Parts (``max_file_rows``) are cut the same way, on
exact row counts, each part its own file with its own header.

Everything runs in one read transaction, so all chunks and parts come from one snapshot even while an import
commits. Chunk and part starts are read from the target's ``gio_id`` list alone (for a segment: its
membership table, ints only), which is cheap next to the export itself.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from segport.engine.base import ExportOutput
from segport.engine.sql import sql_string

CHUNK_ROWS = 200_000  # one chunk's sort fits well inside a 256MB DuckDB memory limit, even for JSON
_F_SETPIPE_SZ = 1031  # Linux: a bigger FIFO buffer means fewer context switches between DuckDB and the pump


def copy_to(cur: duckdb.DuckDBPyConnection, query: str, path: Path | str, options: str) -> int:
    """``COPY (query) TO path (options)``; returns the rows written."""
    row = cur.execute(f"COPY ({query}) TO {sql_string(str(path))} ({options})").fetchone()
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
    version_of: Callable[[duckdb.DuckDBPyConnection], int] | None = None,
) -> ExportOutput:
    """Write the export into ``out_dir``: one file, or parts of at most ``max_file_rows`` rows (0 = one file).

    ``query_for(where)`` gives the export's query and ``COPY`` options, narrowed by ``where`` (a condition on
    ``u.gio_id``; empty = all). ``ids_query`` selects the ``gio_id`` of every member. A single part keeps the
    plain file name (``file_names(1)``).
    """
    can_stream = hasattr(os, "mkfifo")
    cur.execute("SET enable_progress_bar = false")  # no bars in the server's log
    cur.execute("BEGIN TRANSACTION")
    try:
        version = version_of(cur) if version_of is not None else None  # in the snapshot the files are read from
        total = int(cur.execute(f"SELECT count(*) FROM ({ids_query})").fetchone()[0])  # type: ignore[index]
        step = chunk_rows if can_stream else total + 1
        if total <= step and (not max_file_rows or total <= max_file_rows):
            query, options = query_for("")
            path = out_dir / file_names(1)[0]
            return ExportOutput(copy_to(cur, query, path, options), [path], version)
        files = _plan(cur, ids_query, step, max_file_rows)
        paths = [out_dir / name for name in file_names(len(files))]
        rows = 0
        for path, chunks in zip(paths, files, strict=True):
            rows += _write_file(cur, query_for, path, chunks)
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


def _range(start: int, end: int | None) -> str:
    return f"u.gio_id >= {start}" + ("" if end is None else f" AND u.gio_id < {end}")


def _write_file(
    cur: duckdb.DuckDBPyConnection,
    query_for: Callable[[str], tuple[str, str]],
    path: Path,
    chunks: list[tuple[int, int | None]],
) -> int:
    """One result file: a single ``COPY`` for one chunk, else every chunk streamed through a FIFO into it."""
    if len(chunks) == 1:
        query, options = query_for(_range(*chunks[0]))
        return copy_to(cur, query, path, options)
    rows = 0
    gzipped = "COMPRESSION gzip" in query_for("")[1]
    with _fifo_into(path, gzipped=gzipped) as fifo:
        for i, chunk in enumerate(chunks):
            query, options = query_for(_range(*chunk))
            # DuckDB does not compress into a pipe: the pump does (one gzip stream for the whole file)
            options = options.replace("COMPRESSION gzip", "COMPRESSION uncompressed")
            if i:
                options = options.replace("HEADER", "HEADER false")
            rows += copy_to(cur, query, fifo, options)
    return rows


@contextlib.contextmanager
def _fifo_into(path: Path, *, gzipped: bool = False) -> Iterator[Path]:
    """A FIFO next to ``path`` whose bytes a thread moves into ``path`` (kernel-side with splice on Linux),
    or gzips into it (``gzipped``; zlib works outside the GIL).

    We hold a writer end open for the whole file, so the pump sees end-of-file only after the last chunk.
    If the pump fails (say, the disk is full) it closes the reading end, so DuckDB's write fails at once
    (broken pipe) instead of blocking; its error is the one raised.
    """
    fifo = path.with_name(f".{path.name}.fifo")
    with contextlib.suppress(FileNotFoundError):
        fifo.unlink()
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.mkfifo(fifo, 0o600)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    except BaseException:
        os.close(out)
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
        raise
    keep = os.open(fifo, os.O_WRONLY)  # cannot fail: the FIFO exists and has a reader
    os.set_blocking(reader, True)
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.fcntl(reader, _F_SETPIPE_SZ, 1 << 20)
    failed: list[BaseException] = []
    reader_closed = threading.Event()

    def write_all(data: bytes) -> None:
        while data:
            data = data[os.write(out, data) :]

    def pump() -> None:
        try:
            move = None if gzipped else getattr(os, "splice", None)
            packer = zlib.compressobj(6, zlib.DEFLATED, 31) if gzipped else None  # 31: gzip container
            while True:
                if move is not None:
                    n = move(reader, out, 1 << 20)
                else:  # through user space: gzip, or no splice (not Linux)
                    data = os.read(reader, 1 << 20)
                    n = len(data)
                    write_all(packer.compress(data) if packer is not None and n else data)
                if n == 0:
                    if packer is not None:
                        write_all(packer.flush())
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            failed.append(exc)
        finally:
            os.close(reader)
            reader_closed.set()

    thread = threading.Thread(target=pump, name=f"segport-fifo-{path.name}", daemon=True)
    thread.start()
    try:
        try:
            yield fifo
        except duckdb.Error:
            if failed:  # DuckDB only saw the broken pipe; the pump knows why
                raise failed[0] from None
            raise
        finally:
            os.close(keep)  # end of file for the pump (after DuckDB closed its own writer)
            if not reader_closed.wait(60):
                raise OSError(f"the writer of {path.name} did not finish")
            thread.join()
            os.close(out)
            with contextlib.suppress(FileNotFoundError):
                fifo.unlink()
        if failed:
            raise failed[0]
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
        raise
