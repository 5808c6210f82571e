"""Query parameters of the family's paged endpoints: ``limit``, ``offset`` and ``properties[]``.

GrowingIO's examples write numbers as floats (``limit=100.0``) and the key list as a repeated
``properties[]`` parameter; some clients drop the brackets. All of that is accepted; anything that is not
a whole number in ASCII digits and in range is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Query, Request

from segport.errors import InvalidParameter

MAX_LIMIT = 1000
DEFAULT_LIMIT = 1000
MAX_OFFSET = 2**53  # beyond any real table; keeps SQLite's 64-bit OFFSET from overflowing


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    offset: int


# ASCII digits, optionally followed by a fraction of zeros (GrowingIO's ``100.0``): no sign, no space, no
# ``_`` separator, no exponent, no other script's digits (``int()`` and ``float()`` accept all of those)
_WHOLE = re.compile(r"[0-9]+(?:\.0+)?")
_MAX_DIGITS = 20  # past any bound here; int() of a longer string is refused anyway (4,300 digits)


def whole_number(name: str, raw: str | None, default: int, lo: int, hi: int | None = None) -> int:
    """``raw`` as an int: ``100`` and ``100.0`` are 100; ``100.5``, ``1e2``, ``1_0``, `` 10``, ``１``,
    ``abc`` and out of range are a 400. An absent or empty parameter is ``default``."""
    if raw is None or raw == "":
        return default
    bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    if not _WHOLE.fullmatch(raw):
        raise InvalidParameter(f"{name} must be a whole number {bounds} in the digits 0-9, not {shown!r}")
    digits = raw.partition(".")[0].lstrip("0") or "0"
    value = int(digits) if len(digits) <= _MAX_DIGITS else None
    if value is None or value < lo or (hi is not None and value > hi):
        raise InvalidParameter(f"{name} must be {bounds}, not {shown!r}")
    return value


def page_params(
    limit: Annotated[
        str | None,
        Query(
            description=f"Page size, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT}); `100.0` is read as 100.",
            examples=["100"],
        ),
    ] = None,
    offset: Annotated[str | None, Query(description="Members to skip (default 0).", examples=["0"])] = None,
) -> PageParams:
    """FastAPI dependency: the checked ``limit`` and ``offset``."""
    return PageParams(
        limit=whole_number("limit", limit, DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=whole_number("offset", offset, 0, 0, MAX_OFFSET),
    )


def page_properties(
    bracketed: Annotated[
        list[str] | None,
        Query(
            alias="properties[]",
            description=(
                "Keys to include (`id_`/`ids_` identities, `usr_` properties, `tag_` tags), repeated: "
                "`properties[]=usr_gender&properties[]=tag_rfm`; at most 20."
            ),
        ),
    ] = None,
    plain: Annotated[list[str] | None, Query(alias="properties", description="Same as `properties[]`.")] = None,
    *,
    request: Request,
) -> list[str]:
    """FastAPI dependency: the requested keys, ``properties[]`` and ``properties`` alike, in query order.

    The two declared parameters document the names; the values are read in the order they were sent
    (a client mixing both spellings still gets its columns in its own order)."""
    del bracketed, plain
    return [v for k, v in request.query_params.multi_items() if k in ("properties[]", "properties")]


def envelope(params: PageParams, total: int, values: list[Any]) -> dict[str, Any]:
    """GrowingIO's paged envelope. ``totalCount`` is the total number of items, not the page size."""
    return {
        "limit": params.limit,
        "offset": params.offset,
        "totalCount": total,
        "hasNextPage": params.offset + len(values) < total,
        "hasPreviousPage": params.offset > 0 and total > 0,
        "values": values,
    }


def language_header(
    language: Annotated[
        str | None,
        Header(
            description=(
                "GrowingIO's optional `CH` | `US`. Accepted and ignored: answers and error messages are the same "
                "(English messages, data as stored)."
            )
        ),
    ] = None,
) -> None:
    """FastAPI dependency that only documents the ``language`` header; any value is accepted."""
    del language
