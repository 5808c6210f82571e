"""DuckDB's error messages, turned into words a user of segport can act on.

A driver's message names its own internals (``Binder Error``, ``struct_pack``, the parser's possible fixes, the
server's temp file); what reaches a user is one line about their file or their request. The original stays in
the exception chain (``raise ... from exc``) for the server log.
"""

from __future__ import annotations

import re

import duckdb

_KIND_PREFIX = re.compile(r"^[A-Z][A-Za-z ]* Error: ")
# errors about a statement segport built, never about the user's data: their text means nothing to a user
_INTERNAL = (
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ParserException,
    duckdb.InternalException,
    duckdb.NotImplementedException,
)


def engine_words(exc: BaseException, *, internal: str = "the engine could not run the statement") -> str:
    """One line, in segport's words, for a DuckDB error; ``internal`` for errors in statements we built."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    csv_line = re.search(r"CSV Error on Line: (\d+)", first)
    if csv_line:
        return _csv_problem(csv_line.group(1), text)
    missing = re.search(r'(?:Referenced column|does not have a column named) "?([^"\s]+)"?', first)
    if missing:  # the catalogue names a key whose column the profile table lost
        return f"the profiles have no column for key {missing.group(1)}"
    if isinstance(exc, _INTERNAL):
        return internal
    if isinstance(exc, duckdb.OutOfMemoryException):
        return OUT_OF_MEMORY
    if "No magic bytes found" in first or "too small to be a Parquet file" in first:
        return "it is not a Parquet file (a Parquet file ends with the bytes PAR1)"
    # the server's paths are not the user's business: their own file is named by whoever words the error
    first = _FILE.sub("", first)
    return _KIND_PREFIX.sub("", first).rstrip(". ")


OUT_OF_MEMORY = (
    "the engine ran out of memory: raise SEGPORT_ENGINE_MEMORY_BYTES, the engine's memory budget (docs/operations.md)"
)
_FILE = re.compile(r"""\s*(?:(?:in|of|at end of) )?file ["'][^"']*["'],?""")


def _csv_problem(line: str, text: str) -> str:
    columns = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if columns:
        return f"line {line} has {columns.group(2)} fields where the header has {columns.group(1)}"
    if "unterminated quote" in text:
        return f"line {line} has a quote that is never closed"
    if "unicode" in text.lower() or "utf-8" in text.lower():
        return f"line {line} is not UTF-8 text"
    return f"line {line} is not valid CSV (RFC 4180: quote fields holding commas, quotes or line breaks)"
