"""The values engine operations take and answer, as JSON and back, led by their type hints.

What travels: ``None``, booleans, numbers and strings as they are; enums by value; paths as absolute paths (the
engine process reads a file where it lies, on the same data dir); a :class:`Catalog` as its list of entries
(with the computed tags it names: ``{"entries", "computed"}``);
dataclasses as objects of their fields; lists and string-keyed dicts of any of these. Anything else (a callable,
an open file) is refused when it is sent, so a new operation that cannot travel fails the first time it is
called, in the tests, not in production.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from segport.domain.keys import Catalog, CatalogEntry


def to_wire(value: Any) -> Any:
    """``value`` as JSON-able data."""
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, Catalog):
        entries = [to_wire(e) for e in value.entries.values()]
        return {"entries": entries, "computed": sorted(value.computed)} if value.computed else entries
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire(v) for v in value]
    raise TypeError(f"a {type(value).__name__} cannot travel to or from the engine process")


def from_wire(data: Any, hint: Any) -> Any:
    """The value of type ``hint`` that :func:`to_wire` turned into ``data``."""
    if data is None or hint is Any:
        return data
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # X | None: the one union an operation uses
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return from_wire(data, inner)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [from_wire(v, item) for v in data]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: from_wire(v, item) for k, v in data.items()}
    if hint is Catalog:  # its entries, or {"entries", "computed"} when it names computed tags
        named = data if isinstance(data, dict) else {"entries": data, "computed": []}
        return Catalog([from_wire(e, CatalogEntry) for e in named["entries"]], named["computed"])
    if hint is Path:
        return Path(data)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(data)
    if dataclasses.is_dataclass(hint):
        hints = field_types(hint)
        return hint(**{name: from_wire(data[name], kind) for name, kind in hints.items() if name in data})
    return data


@cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their types (its annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}
