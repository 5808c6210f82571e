"""Result files held in object storage, answered like local ones: HEAD, Range and If-Range as Starlette's
``FileResponse`` does for a file on disk (same headers, same validators), or a redirect to a presigned URL.

The object's size and modification time stand in for the file's ``stat``; its bytes are read from the store
with ranged requests as Starlette seeks and reads, so a range costs what it asks for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.types import Message, Receive, Scope, Send

from segport.errors import ResultStoreUnavailable
from segport.http.errors import error_response
from segport.http.files import ResultFileResponse
from segport.results.base import RemoteResult

log = logging.getLogger("segport.http")


def remote_response(remote: RemoteResult, *, media_type: str, filename: str) -> Response:
    if remote.redirect_url is not None:
        return RedirectResponse(remote.redirect_url, status_code=302)
    return RemoteFileResponse(remote, media_type=media_type, filename=filename)


class RemoteFileResponse(ResultFileResponse):
    def __init__(self, remote: RemoteResult, **kwargs: Any) -> None:
        stamp = remote.modified.timestamp()
        stat = os.stat_result((0o100644, 0, 0, 1, 0, 0, remote.size, stamp, stamp, stamp))
        FileResponse.__init__(self, remote.modified.isoformat(), stat_result=stat, **kwargs)  # no file to open
        self._remote = remote

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette sends the status line before it reads the file; here the store is read first. The start of
        the answer is held until its first bytes are in hand, so a store that cannot be read (S3 gone between
        the HEAD of the object and its GET) is still a 503 in the one error shape, not a 200 cut short. A store
        lost later, mid-file, can only end the answer early: one line in the log, and the client resumes with
        ``Range``."""
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        held: list[Message] = []  # the start of the answer, until its first bytes are read
        started = False

        async def send_when_read(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if not started:
                started = True
                for start in held:
                    await send(start)
            await send(message)

        try:
            await FileResponse.__call__(self, {**scope, "extensions": extensions}, receive, send_when_read)
        except ResultStoreUnavailable as exc:
            if started:  # the answer is under way: end it early
                log.warning("a download was cut short: %s", exc.message)
                return
            await error_response(exc.status, exc.code, exc.message, exc.headers)(scope, receive, send)

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[_RemoteReader]:  # type: ignore[override]
        reader = _RemoteReader(self._remote)
        try:
            yield reader
        finally:
            with anyio.CancelScope(shield=True):  # a client gone mid-answer: still give the connection back
                await anyio.to_thread.run_sync(reader.close)


class _RemoteReader:
    """The ``seek``/``read`` Starlette asks of a file, over one ranged GET per position."""

    def __init__(self, remote: RemoteResult) -> None:
        self.remote = remote
        self.position = 0
        self._chunks: Iterator[bytes] | None = None
        self._left = b""

    async def seek(self, position: int) -> None:
        if position != self.position or self._chunks is None:
            await anyio.to_thread.run_sync(self.close)
            self.position = position

    async def read(self, size: int) -> bytes:
        return await anyio.to_thread.run_sync(self._read, size)

    def _read(self, size: int) -> bytes:
        out = bytearray(self._left[:size])
        self._left = self._left[size:]
        while len(out) < size and self.position + len(out) < self.remote.size:
            if self._chunks is None:
                start = self.position + len(out)
                self._chunks = self.remote.read(start, self.remote.size)
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            need = size - len(out)
            out += chunk[:need]
            self._left = chunk[need:]
        self.position += len(out)
        return bytes(out)

    def close(self) -> None:
        chunks, self._chunks, self._left = self._chunks, None, b""
        if chunks is not None and hasattr(chunks, "close"):
            chunks.close()
