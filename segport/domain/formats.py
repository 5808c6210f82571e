"""The file formats profile imports take, told from a flag or from the file's name, before any engine reads it.

Both the CLI and the admin API name the format up front (to spool an upload under the right suffix, or to
refuse a file before sending it), and every engine reads the same three formats.
"""

from __future__ import annotations

from pathlib import Path

from segport.errors import ImportRejected

FORMATS = ("csv", "parquet", "jsonl")


def detect_format(path: Path, forced: str | None) -> str:
    """``csv``, ``parquet`` or ``jsonl``: ``forced`` (a flag; ``json``, ``ndjson`` and ``pq`` are accepted as
    names of the same), else told by the file name's extension; anything else is refused by name."""
    if forced:
        fmt = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(forced.lower(), forced.lower())
        if fmt not in FORMATS:
            raise ImportRejected(f"unknown format {forced!r}: expected csv, parquet or jsonl")
        return fmt
    name = path.name.lower()
    for suffix, fmt in (
        (".csv", "csv"),
        (".csv.gz", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".jsonl.gz", "jsonl"),
    ):
        if name.endswith(suffix):
            return fmt
    raise ImportRejected(f"cannot tell the format of {path.name!r} from its extension; pass --format")
