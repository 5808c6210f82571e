"""Rules for the text a person gives the service: display names, descriptions, imported values.

A display name becomes a CSV header cell, a file name and a ``Content-Disposition``: a control character in it
(a newline breaks the header line, a NUL ends a C string, an escape recolours a terminal) is refused, as are line
and paragraph separators and unpaired surrogates (not writable as UTF-8). A description and an imported value may
hold tabs and line breaks (the CSV writer quotes them), nothing else of that kind.
"""

from __future__ import annotations

import unicodedata

LINE_BREAKS = frozenset("\t\n\r")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def bad_character(text: str, *, allow_line_breaks: bool = False) -> str | None:
    """The first character of ``text`` that the rules above refuse, spelled for a message (``U+0000``)."""
    for char in text:
        if allow_line_breaks and char in LINE_BREAKS:
            continue
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def display_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a display name, or None."""
    if not name.strip():
        return "it is empty"
    bad = bad_character(name)
    return f"it holds the control character {bad}" if bad else None
