"""Result files over HTTP: Starlette's ``FileResponse``, with its ``Range`` answers brought in line.

Starlette answers a ``Range`` header it cannot use with a plain-text 400 (``Only support bytes range``) or a
plain-text 416. Here a Range header that is malformed or uses another unit is ignored and the whole file is
sent, as RFC 9110 §14.2 asks ("MUST ignore a Range header field that contains a range unit it does not
understand"; an invalid ranges-set MAY be ignored), and an unsatisfiable range is a 416 in the one JSON error
shape, still with ``Content-Range: bytes */<size>`` (what a resuming client reads).
"""

from __future__ import annotations

from starlette.responses import FileResponse, MalformedRangeHeader
from starlette.responses import RangeNotSatisfiable as _Unsatisfiable

from segport.errors import RangeNotSatisfiable


class ResultFileResponse(FileResponse):
    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no ranges: the whole file, 200
        except _Unsatisfiable:
            # raised before the answer starts, so the app's error handler renders it
            raise RangeNotSatisfiable(
                f"the requested range is outside the file ({file_size} bytes)",
                headers={"Content-Range": f"bytes */{file_size}"},
            ) from None
