"""Result files over HTTP: Starlette's ``FileResponse``, with its ``Range`` answers brought in line.

Starlette answers a ``Range`` header it cannot use with a plain-text 400 (``Only support bytes range``) or a
plain-text 416. Here a Range header that is malformed or uses another unit is ignored and the whole file is
sent, as RFC 9110 §14.2 asks ("MUST ignore a Range header field that contains a range unit it does not
understand"; an invalid ranges-set MAY be ignored), and an unsatisfiable range is a 416 in the one JSON error
shape, still with ``Content-Range: bytes */<size>`` (what a resuming client reads).

The file is opened when the response is made, in the handler: from then on the janitor may delete it (the
job expired a moment later) and the answer still streams whole from the open descriptor, instead of failing
halfway or with a 500 when Starlette would open it by path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from starlette.responses import FileResponse, MalformedRangeHeader
from starlette.responses import RangeNotSatisfiable as _Unsatisfiable
from starlette.types import Receive, Scope, Send

from segport.errors import FileNotFound, RangeNotSatisfiable


class ResultFileResponse(FileResponse):
    def __init__(self, path: Path, **kwargs: Any) -> None:
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed once the answer is sent (__call__)
        except FileNotFoundError:
            raise FileNotFound("the result file is no longer there (its job expired or was cancelled)") from None
        super().__init__(path, stat_result=os.fstat(self._file.fileno()), **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._file.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        """Starlette's hook for reading the file: read the descriptor opened in the handler."""
        self._file.seek(0)
        yield anyio.wrap_file(self._file)

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
