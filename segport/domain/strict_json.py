"""Reading JSON strictly and losslessly: the one parser for every JSON text the service is given.

Python's ``json`` (and pydantic's parser by default) read ``NaN``, ``Infinity`` and ``-Infinity``, which are not
JSON (RFC 8259) and which PostgreSQL's ``json`` and every other reader refuse; a rule holding one would be stored
as ``null`` or break later. A number too large for a double (``1e999``) would become infinity the same way.
A key given twice in one object is refused (``{"bom": true, "bom": false}`` has no one meaning). Nesting is bounded (``MAX_DEPTH``) by the parser itself, without recursion in Python, so a body of 100,000 ``[``
is refused at once. Strings with an unpaired surrogate escape (``"\\ud800"``) are refused: they cannot be
written as UTF-8.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic_core import from_json

MAX_DEPTH = 200  # pydantic-core's (jiter's) own limit; deeper input is "recursion limit exceeded"


class StrictJSONError(ValueError):
    """The text is not strict JSON; the message says why, in our words."""


class TooDeep(StrictJSONError):
    """The text nests deeper than ``MAX_DEPTH`` levels."""


def loads(raw: bytes | str) -> Any:
    """Parse ``raw`` as strict JSON (no NaN/Infinity, finite numbers, at most ``MAX_DEPTH`` levels)."""
    try:
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        text = str(exc)
        if "recursion limit" in text:
            raise TooDeep(f"it nests deeper than {MAX_DEPTH} levels") from None
        if "hex escape" in text or "surrogate" in text or "unicode" in text.lower():
            raise StrictJSONError(f"it holds a string that is not valid Unicode ({text})") from None
        if any(c in _at(raw, text) for c in "NI"):  # JSON's own words are lower case: true, false, null
            raise StrictJSONError(f"NaN and Infinity are not JSON numbers ({text})") from None
        raise StrictJSONError(text) from None
    _check_finite(value)
    if b'"' in (raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")):
        # a key given twice would silently keep its last value; the depth is bounded above, so Python's
        # recursive parser is safe here
        json.loads(raw, object_pairs_hook=_refuse_repeated_keys)
    return value


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in pairs:
        if key in out:
            raise StrictJSONError(f"key {key[:40]!r} appears twice in one object")
        out[key] = item
    return out


def _at(raw: bytes | str, message: str) -> str:
    """The few characters at the position a pydantic-core message names ("... at line L column C")."""
    try:
        tail = message.rsplit(" at line ", 1)[1]
        line_text, column_text = tail.split(" column ")
        line, column = int(line_text), int(column_text)
    except (IndexError, ValueError):
        return ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    lines = text.split("\n")
    return lines[line - 1][max(0, column - 2) : column + 1] if 0 < line <= len(lines) else ""


def _check_finite(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise StrictJSONError("it holds a number too large for a double")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
