"""Loading downloaded exports into a pandas or polars DataFrame (optional: the library must be installed).

Every value stays a string, as the file holds it, and a missing value is null. JSON Lines files are flattened:
the keys of ``identifications`` and ``properties`` become columns next to ``gio_id``, as in the CSV.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from segport.client.errors import InvalidArgument

FrameKind = Literal["pandas", "polars"]


def load_frame(paths: Sequence[Path], file_format: str, kind: FrameKind) -> Any:
    """One DataFrame of all ``paths`` (the parts of one export, in order)."""
    if kind not in ("pandas", "polars"):
        raise InvalidArgument(f"as_frame must be 'pandas' or 'polars', not {kind!r}")
    try:
        lib = importlib.import_module(kind)
    except ImportError:
        raise InvalidArgument(f"as_frame={kind!r} needs {kind} installed (pip install 'segport[frames]')") from None
    loader = _polars if kind == "polars" else _pandas
    frames = [loader(lib, path, file_format) for path in paths]
    if kind == "polars":
        return lib.concat(frames, how="diagonal") if len(frames) != 1 else frames[0]
    return lib.concat(frames, ignore_index=True) if len(frames) != 1 else frames[0]


def _flat(line: dict[str, Any]) -> dict[str, Any]:
    row = {"gio_id": line.get("gio_id")}
    for group in ("identifications", "properties"):
        row.update(line.get(group) or {})
    return row


def _lines(path: Path) -> list[dict[str, Any]]:
    opener = _gzip_open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [_flat(json.loads(line)) for line in f if line.strip()]


def _gzip_open(path: Path, mode: str, encoding: str) -> Any:
    import gzip

    return gzip.open(path, mode, encoding=encoding)


def _pandas(pd: Any, path: Path, file_format: str) -> Any:
    if file_format == "json":
        rows = _lines(path)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        return pd.DataFrame.from_records(rows, columns=columns).astype("string")
    return pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])


def _polars(pl: Any, path: Path, file_format: str) -> Any:
    if file_format == "json":
        rows = _lines(path)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        return pl.DataFrame({c: [r.get(c) for r in rows] for c in columns}, schema=dict.fromkeys(columns, pl.String))
    return pl.read_csv(path, infer_schema=False)
