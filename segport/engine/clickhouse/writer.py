"""Writing an export with ClickHouse's own formats: ``CSVWithNames`` and ``JSONEachRow``, streamed to the file.

ClickHouse formats every byte; this module only moves the stream into the result file (gzip-compressing it on
the way when asked: zlib works outside the GIL) — never a row at a time. The settings below make ClickHouse
write what DuckDB's ``COPY`` writes:

* CSV: every value is cast to ``Nullable(String)``, which ``CSVWithNames`` always double-quotes (inner ``"``
  doubled, the header quoted too); ``format_csv_null_representation=''`` leaves a null empty and unquoted.
* JSON Lines: named tuples are written as objects; ``/`` is not escaped (DuckDB does not). ClickHouse escapes
  U+2028 and U+2029 where DuckDB writes them raw, so those two escapes are turned back into UTF-8 (per line,
  where a line holds an escaped ``\\u2028``, which is rare).

Parts (``max_file_rows``) are cut on exact row counts by ``gio_id`` ranges read from one snapshot's tables.
"""

from __future__ import annotations

import itertools
import mmap
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from segport.domain.export import ExportSpec, FileFormat, column_headers, split_columns
from segport.domain.keys import CatalogEntry
from segport.engine.base import ExportOutput
from segport.engine.clickhouse.sql import ClickHouseHandle, ch_ident, ch_string, json_value, rendered
from segport.engine.interrupt import Interrupt
from segport.errors import ExportFailed, OutOfMemory, ResourceExhausted, StorageFull, exhaustion_of

SETTINGS: dict[str, Any] = {
    "format_csv_null_representation": "",
    "output_format_csv_crlf_end_of_line": 0,
    "output_format_json_named_tuples_as_objects": 1,
    "output_format_json_escape_forward_slashes": 0,
    "output_format_json_quote_64bit_integers": 1,
    "optimize_read_in_order": 1,
}
CHUNK_ROWS = 250_000  # rows per statement when ClickHouse writes a file itself: what a cancel waits for at most
_GLOB = re.compile(r"[*?{}]")
_LINE_SEP = re.compile(rb"(?<!\\)((?:\\\\)*)\\u(2028|2029)")


def select_list(columns: list[CatalogEntry], spec: ExportSpec, excel_safe: bool) -> str:
    """Mirror of the DuckDB engine's ``_select_list``."""
    gio = "toString(u.gio_id) AS gio_id"
    if spec.file_format is FileFormat.JSON:
        if not columns:
            return gio
        ids, props = split_columns(columns)

        def struct(entries: list[CatalogEntry]) -> str:
            if not entries:
                return "CAST(map(), 'Map(String, String)')"  # {} (an empty tuple would be [])
            values = [json_value(e, excel_safe=excel_safe) for e in entries]
            types = ", ".join(f"{ch_ident(e.key)} {t}" for e, (_, t) in zip(entries, values, strict=True))
            return f"CAST(tuple({', '.join(v for v, _ in values)}), {ch_string(f'Tuple({types})')})"

        return f"{gio}, {struct(ids)} AS identifications, {struct(props)} AS properties"
    headers = column_headers(columns, spec.header, excel_safe=excel_safe)
    return ", ".join(
        [gio]
        + [f"{rendered(e, excel_safe=excel_safe)} AS {ch_ident(h)}" for e, h in zip(columns, headers, strict=True)]
    )


def export_query(
    source: str, columns: list[CatalogEntry], spec: ExportSpec, *, excel_safe: bool = False
) -> tuple[str, str]:
    """The whole export as one ``SELECT`` and its ClickHouse format (the bench's raw baseline)."""
    fmt = "JSONEachRow" if spec.file_format is FileFormat.JSON else "CSVWithNames"
    return f"SELECT {select_list(columns, spec, excel_safe)} FROM {source} ORDER BY u.gio_id", fmt


def write_export(
    engine: ClickHouseHandle,
    source_of: Callable[..., str],
    columns: list[CatalogEntry],
    spec: ExportSpec,
    out_dir: Path,
    file_names: Callable[[int], list[str]],
    *,
    max_file_rows: int = 0,
    excel_safe: bool = False,
    interrupt: Interrupt | None = None,
    data_version: int,
    members: str | None = None,
) -> ExportOutput:
    """Write the rows of ``source_of()`` (a FROM clause; ``source_of((lo, hi))`` the same cut to those ids)
    into the files ``file_names`` gives. ``members``: the segment's membership table, every id of which is a
    user of the snapshot (users are never removed, and memberships are computed from the users), so it counts
    the rows and bounds their ids without reading the users table."""
    client = engine.client()
    source = source_of()
    _, fmt = export_query(source, columns, spec, excel_safe=excel_safe)
    select_list_sql = select_list(columns, spec, excel_safe)
    gzipped = spec.compression.value == "gzip"
    # ClickHouse in this process writes the file itself (its own file writer, no byte through Python), in gio_id
    # ranges so that a cancel is seen between two of them; a server's ClickHouse (or a gzip file) is streamed
    here = engine.local_files and not gzipped and not _GLOB.search(str(out_dir))
    stop = threading.Event()
    if interrupt is not None:
        interrupt.bind(stop.set)
    try:
        counted = f"{members} AS u" if members else source
        row = client.query(f"SELECT count(), min(u.gio_id), max(u.gio_id) FROM {counted}").result_rows[0]
        total, last = int(row[0]), int(row[2] or 0)
        if not max_file_rows or total <= max_file_rows:
            bounds = [(int(row[1] or 0), None)]
        else:
            starts = [
                int(r[0])
                for r in client.query(
                    f"SELECT gio_id FROM (SELECT u.gio_id AS gio_id, row_number() OVER (ORDER BY u.gio_id) AS n "
                    f"FROM {source}) WHERE (n - 1) % {int(max_file_rows)} = 0 ORDER BY gio_id"
                ).result_rows
            ]
            bounds = [(start, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]
        paths = [out_dir / name for name in file_names(len(bounds))]
        for path, (start, end) in zip(paths, bounds, strict=True):
            rows = max_file_rows if end is not None else total - max_file_rows * (len(bounds) - 1)
            stop_at = end if end is not None else last + 1
            if here and _regular(path):
                queries = [
                    f"SELECT {select_list_sql} FROM {source_of(r) if r else source} ORDER BY u.gio_id"
                    for r in _ranges(start, stop_at, rows, total)
                ]
                _write_here(client, queries, fmt, path, stop)
            else:
                cut = source_of((start, stop_at)) if len(bounds) > 1 else source
                _write(client, f"SELECT {select_list_sql} FROM {cut} ORDER BY u.gio_id", fmt, path, gzipped, stop)
        return ExportOutput(total, paths, data_version)
    except (ExportFailed, StorageFull, ResourceExhausted):
        raise
    except OSError as exc:
        if exc.errno in (28, 27, 122):  # ENOSPC, EFBIG, EDQUOT
            raise StorageFull(f"the result folder is full: {exc}") from exc
        exhausted = exhaustion_of(exc)  # EMFILE
        if exhausted is not None:
            raise exhausted from exc
        raise ExportFailed(f"writing the result failed: {exc}") from exc
    except Exception as exc:  # the driver's errors become ours at the boundary
        exhausted = exhaustion_of(exc)  # MEMORY_LIMIT_EXCEEDED, a full disk, too many open files
        words = export_words(exc)
        if isinstance(exhausted, OutOfMemory):
            raise OutOfMemory(words) from exc
        if exhausted is not None:
            raise exhausted from exc
        raise ExportFailed(words if words.startswith("the export") else f"the export query failed: {words}") from exc
    finally:
        if interrupt is not None:
            interrupt.unbind()


def export_words(exc: BaseException) -> str:
    """One line for a failed export, in segport's words where ClickHouse's would mean nothing to a user."""
    text = str(exc).strip()
    if "MEMORY_LIMIT_EXCEEDED" in text or "Memory limit" in text:
        return (
            "the export ran out of memory: raise max_memory_usage for segport's ClickHouse user or export fewer columns"
        )
    return text.splitlines()[0] if text else type(exc).__name__


def _write(client: Any, query: str, fmt: str, path: Path, gzipped: bool, stop: threading.Event) -> None:
    """Stream one query's formatted output into ``path``."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31) if gzipped else None  # 31: a gzip container
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with client.raw_stream(query, fmt=fmt, settings=SETTINGS) as stream:
            chunks: Iterable[bytes] = _unescape_line_separators(stream) if fmt == "JSONEachRow" else stream
            for chunk in chunks:
                if stop.is_set():
                    raise ExportFailed("the export was interrupted (cancelled or taken over)")
                data = packer.compress(chunk) if packer is not None else chunk
                while data:
                    data = data[os.write(fd, data) :]
        if packer is not None:
            data = packer.flush()
            while data:
                data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def _regular(path: Path) -> bool:
    """Whether ``path`` is (or will be) a plain file that ClickHouse may write: not a FIFO a result store
    streams through (S3), which only the stream path below feeds."""
    return not path.exists() or path.is_file()


def _ranges(start: int, stop: int, rows: int, total: int) -> list[tuple[int, int] | None]:
    """One file's ids (``start <= gio_id < stop``) cut into ranges of about ``CHUNK_ROWS`` rows each (ids are
    dense, so equal id ranges hold about equal rows); ``[None]``: one statement, uncut."""
    count = max(1, -(-rows // CHUNK_ROWS)) if total else 1
    if count == 1:
        return [(start, stop)] if total else [None]
    step = -(-(stop - start) // count)
    cuts = [*range(start, stop, step), stop]
    return list(itertools.pairwise(cuts))


def _write_here(client: Any, queries: list[str], fmt: str, path: Path, stop: threading.Event) -> None:
    """ClickHouse writes ``path`` itself, one statement per query, each appended to the last (a CSV's header
    with the first only). It writes under a plain name (``file()`` reads ``*``, ``?`` and ``{}`` in a path as
    globs) that is renamed once complete. JSON Lines are checked for ClickHouse's escaped U+2028/U+2029 as they
    land, and rewritten without them only where one occurs (rare)."""
    work = path.with_name(f".clickhouse-{os.getpid()}-{threading.get_ident()}.part")
    escaped = False
    try:
        for i, query in enumerate(queries):
            if stop.is_set():
                raise ExportFailed("the export was interrupted (cancelled or taken over)")
            before = work.stat().st_size if i else 0
            appended = "CSV" if i and fmt == "CSVWithNames" else fmt  # the header once
            client.command(
                f"INSERT INTO FUNCTION file({ch_string(str(work))}, {ch_string(appended)}) {query}",
                settings={**SETTINGS, "engine_file_truncate_on_insert": int(i == 0)},
            )
            if fmt == "JSONEachRow" and not escaped:
                escaped = _holds_escaped_separator(work, before)
        if not work.exists():  # nothing written at all
            work.touch()
        if escaped:
            with open(work, "rb") as f, open(path, "wb") as out:
                for chunk in _unescape_line_separators(iter(lambda: f.read(1 << 20), b"")):
                    out.write(chunk)
        else:
            os.replace(work, path)
    finally:
        work.unlink(missing_ok=True)


def _holds_escaped_separator(path: Path, offset: int) -> bool:
    """Whether the bytes of ``path`` from ``offset`` on hold ClickHouse's escape of U+2028 or U+2029 (or an
    escaped backslash before ``u202``: the rewrite tells them apart)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= offset:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(b"\\u202", offset) >= 0


def _unescape_line_separators(stream: Iterable[bytes]) -> Iterable[bytes]:
    """ClickHouse writes U+2028/U+2029 as ``\\u2028``/``\\u2029``; DuckDB writes the characters. Lines are
    handled whole (a JSON line has no raw newline), so an escape is never cut between two chunks."""
    carry = b""
    for chunk in stream:
        buf = carry + chunk if carry else chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            carry = buf
            continue
        out, carry = buf[: cut + 1], buf[cut + 1 :]
        yield _restore(out) if b"\\u202" in out else out
    if carry:
        yield _restore(carry)


def _restore(data: bytes) -> bytes:
    return _LINE_SEP.sub(lambda m: m.group(1) + ("\u2028" if m.group(2) == b"2028" else "\u2029").encode(), data)
