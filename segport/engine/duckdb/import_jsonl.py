"""JSON Lines imports read once by segport before DuckDB reads them: what DuckDB's reader cannot be asked.

DuckDB parses a JSON number into a double before segport sees it (``1e-400`` is ``0.0``, a 30-digit double is
rounded, ``123456789012345678901234567890`` for a string key becomes ``1.2345678901234568e+29``), and it words
a broken line in its own terms (a byte offset, a line count that is off by one, the file's full path). So lines
of a JSON Lines file are also read here with Python's ``json`` (numbers kept as written): every line when a
string key holds numbers or DuckDB could not read the file, else only the lines DuckDB finds may hold an
inexact double (:data:`RISKY`):

* a line that is not JSON, is not an object, repeats a key or holds ``NaN``/``Infinity`` is refused by its line
  number (blank lines count as lines, not as rows);
* a number for a ``double`` key (or in a ``double[]`` list) is checked on its text by :func:`double_problem`;
* a number for a ``string`` key (or in a ``string[]`` list) is kept as written: when a file has one, a copy
  of the file with those numbers turned into strings is what DuckDB reads (the original is never changed).

The other checks (types, lists, control characters, identities) stay in SQL, the same for every format.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from segport.domain.keys import Catalog, CatalogEntry, ValueType, canonical_key
from segport.errors import ImportRejected

DOUBLE_DIGITS = 17  # significant digits a double keeps (more would be rounded away)
_MANTISSA = re.compile(r"^\s*[+-]?([0-9]*)\.?([0-9]*)")


class _Number(str):
    """A JSON number's text, as written in the file."""


def double_problem(text: str) -> str | None:
    """Why a decimal ``text`` (already a valid number) cannot be stored as a double without changing it, or None.

    Refused: beyond the range of a double (it would be ``inf``), a non-zero value too small for one (it would
    be 0), and more than 17 significant digits (leading and trailing zeros not counted: it would be rounded)."""
    m = _MANTISSA.match(text)
    digits = (m.group(1) + m.group(2)).strip("0") if m else ""
    try:
        value = float(text)
    except ValueError:
        return None
    if value in (float("inf"), float("-inf")):
        return "is beyond the range of a double (±1.7976931348623157e308)"
    if value == 0 and digits:
        return "is too close to 0 for a double (it would be stored as 0)"
    if len(digits) > DOUBLE_DIGITS:
        return (
            f"has {len(digits)} significant digits; a double keeps {DOUBLE_DIGITS} "
            "(round it to 17 or fewer, or use a string key)"
        )
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            yield from enumerate(f, 1)
    except (OSError, EOFError) as exc:
        raise ImportRejected(f"cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is not JSON (a double has no NaN or infinity)")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"has the key {twice!r} twice")
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=_Number, parse_int=_Number, parse_constant=_no_constant
)


# a line that may hold a number a double cannot keep as written (18+ digits, an exponent) or NaN/Infinity
# (which DuckDB reads as doubles): when no string key holds a number, only these lines are read in Python,
# found by DuckDB (RE2, in parallel: a Python regex over every line cost as much as the whole load)
RISKY = r"[0-9.]{18,}|[0-9.][eE]|NaN|Infinity"

Lines = Iterable[tuple[int, int | None, bytes]]  # (line number, row number if known, the raw line)


def _records(path: Path, lines: Lines | None = None) -> Iterator[tuple[int, int, dict[str, Any] | None, bytes]]:
    """(line number, row number, the object or None for a blank line, the raw line) of each line of the file,
    or of ``lines`` only."""
    row = 0
    for line_no, known_row, raw in lines if lines is not None else ((n, None, r) for n, r in _lines(path)):
        if known_row is not None:
            row = known_row - 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportRejected(f"line {line_no} of {path.name} is not UTF-8 text (save it as UTF-8)") from None
        if line_no == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            yield line_no, row, None, raw
            continue
        row += 1
        try:
            obj = _DECODER.decode(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise ImportRejected(
                f"line {line_no} of {path.name} is not valid JSON: {exc.msg.lower()} at column {exc.colno}"
            ) from None
        except ValueError as exc:
            raise ImportRejected(f"line {line_no} of {path.name} {exc}") from None
        if not isinstance(obj, dict):
            raise ImportRejected(
                f'line {line_no} of {path.name} is not a JSON object: each line is one user, {{"key": value, ...}}'
            )
        yield line_no, row, obj, raw


def _check(row: int, entry: CatalogEntry, value: Any) -> bool:
    """Refuse a number a double cannot hold; True when the value holds a number for a string key."""
    items = value if isinstance(value, list) and entry.multi else [value]
    numbers = [x for x in items if isinstance(x, _Number)]
    if entry.type is ValueType.DOUBLE:
        for x in numbers:
            # short plain decimals are always exact enough (the common case: no need to look closer)
            problem = None if len(x) <= DOUBLE_DIGITS and "e" not in x and "E" not in x else double_problem(x)
            if problem and isinstance(value, list):
                shown = "[" + ", ".join(y if isinstance(y, _Number) else json.dumps(y) for y in value) + "]"
                raise ImportRejected(f"row {row}: key {entry.key}: value {shown!r} holds {str(x)!r}, which {problem}")
            if problem:
                raise ImportRejected(f"row {row}: key {entry.key}: value {str(x)!r} {problem}")
    return entry.type is ValueType.STRING and bool(numbers)


def diagnose_jsonl(path: Path) -> None:
    """Read every line of a file DuckDB could not read, to refuse it by the first broken line's number (if
    Python finds none, the caller words DuckDB's error)."""
    for _ in _records(path):
        pass


def checked_jsonl(path: Path, catalog: Catalog, scratch: Path, *, risky: Lines | None) -> Path:
    """Check the numbers of a JSON Lines file DuckDB has read (see the module's docstring); the path DuckDB
    should read: ``path`` itself, or a copy in ``scratch`` with the numbers of string keys as strings (deleted
    by the caller). With ``risky`` (no string key holds a number), only those lines are read."""
    rewrite = False
    keys: dict[str, CatalogEntry | None] = {}
    watched = (ValueType.DOUBLE, ValueType.STRING)
    for _line, row, obj, _raw in _records(path, risky):
        if obj is None:
            continue
        for name, value in obj.items():
            if type(value) is str or value is None:  # most values: nothing to look at here
                continue
            if name not in keys:
                entry = catalog.get(canonical_key(name.strip()))
                keys[name] = entry if entry is not None and entry.type in watched else None
            entry = keys[name]
            if entry is None:
                continue
            if type(value) is _Number and len(value) <= DOUBLE_DIGITS and "e" not in value and "E" not in value:
                rewrite = rewrite or entry.type is ValueType.STRING  # a short plain number: exact as a double
            elif _check(row, entry, value):
                rewrite = True
    if not rewrite:
        return path
    strings = {n for n, e in keys.items() if e is not None and e.type is ValueType.STRING}
    fd, name = tempfile.mkstemp(prefix="import-", suffix=".jsonl", dir=scratch)
    with open(fd, "wb") as out:
        for _line, _row, obj, raw in _records(path):
            if obj is None or not any(isinstance(obj.get(n), (_Number, list)) for n in strings):
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                continue
            fixed = {k: (_as_text(v) if k in strings else _as_json(v)) for k, v in obj.items()}
            out.write(json.dumps(fixed, ensure_ascii=False).encode() + b"\n")
    return Path(name)


def _as_text(value: Any) -> Any:
    """A string key's value with its numbers as the strings they were written as."""
    if isinstance(value, list):
        return [_as_text(x) for x in value]
    return str(value) if isinstance(value, _Number) else _as_json(value)


def _as_json(value: Any) -> Any:
    """Any other value with its numbers as numbers again (the same value; JSON text is not kept for them)."""
    if isinstance(value, _Number):
        if re.fullmatch(r"-?[0-9]+", value):
            return int(value)
        number = float(value)  # beyond a double: left as text, which the key's own check refuses by name
        return number if number - number == 0 else str(value)
    if isinstance(value, list):
        return [_as_json(x) for x in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value
