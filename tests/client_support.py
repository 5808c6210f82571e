"""Helpers for the client tests: a segport app served in-process (starlette's TestClient transport, workers on)
or over a real socket (uvicorn in a thread), transports that misbehave like a bad network, and a tiny
loopback proxy that drops a download connection after a number of body bytes."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi.testclient import TestClient

from segport.app import App
from segport.client import Backoff, Client
from segport.roles.inline import create_app
from tests.conftest import free_port

FAST = Backoff(initial_s=0.02, factor=2.0, max_s=0.2, jitter=0.5)
BASE = "http://testserver"


@dataclass
class InProcess:
    """A segport app behind starlette's in-process transport; its lifespan runs the export workers."""

    test_client: TestClient
    token: str

    @property
    def transport(self) -> httpx.BaseTransport:
        # TestClient is an httpx.Client; its transport is the in-process ASGI bridge the sync client needs
        return self.test_client._transport  # noqa: SLF001

    def client(self, token: str | None = None, **kwargs: object) -> Client:
        kwargs.setdefault("backoff", FAST)
        return Client(BASE, self.token if token is None else token, transport=self.transport, **kwargs)  # type: ignore[arg-type]


class ThreadServer:
    """uvicorn serving an App on a real loopback socket, in a thread of the test process."""

    def __init__(self, app: App, *, run_workers: bool) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(app, run_workers=run_workers),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class _Cutter:
    """What :class:`CutDownloads` and :class:`AsyncCutDownloads` share: which requests to record and alter, and
    the response that replaces a download's when it is to be cut."""

    def __init__(self, *, after: int, cuts: int = 1, ignore_range: bool = False) -> None:
        self.after = after
        self.cuts = cuts
        self.ignore_range = ignore_range
        self.ranges: list[str | None] = []

    def _is_download(self, request: httpx.Request) -> bool:
        if request.url.path != "/download":
            return False
        self.ranges.append(request.headers.get("range"))
        if self.ignore_range and "range" in request.headers:  # a server without Range support
            del request.headers["range"]
        return True

    def _maybe_cut(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if self.cuts <= 0 or response.status_code >= 300:
            return response
        self.cuts -= 1
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Truncated(response, self.after), request=request
        )


class CutDownloads(_Cutter, httpx.BaseTransport):
    """Wraps a transport; the first ``cuts`` download bodies stop after ``after`` bytes with the error h11 raises
    when the peer closes early. Records the Range header of every download request."""

    def __init__(self, inner: httpx.BaseTransport, *, after: int, cuts: int = 1, ignore_range: bool = False) -> None:
        super().__init__(after=after, cuts=cuts, ignore_range=ignore_range)
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self._is_download(request):
            return self.inner.handle_request(request)
        return self._maybe_cut(request, self.inner.handle_request(request))


class AsyncCutDownloads(_Cutter, httpx.AsyncBaseTransport):
    """:class:`CutDownloads` for the async client."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, after: int, cuts: int = 1) -> None:
        super().__init__(after=after, cuts=cuts)
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._is_download(request):
            return await self.inner.handle_async_request(request)
        return self._maybe_cut(request, await self.inner.handle_async_request(request))


class _Truncated(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that ends after ``limit`` bytes with the error h11 raises when the peer closes early."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self.response = response
        self.left = limit

    def _take(self, chunk: bytes) -> bytes:
        piece = chunk[: self.left]
        self.left -= len(piece)
        return piece

    def _dropped(self) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.response.iter_raw():
            if piece := self._take(chunk):
                yield piece
            if not self.left:
                raise self._dropped()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.aiter_raw():
            if piece := self._take(chunk):
                yield piece
            if not self.left:
                raise self._dropped()

    def close(self) -> None:
        self.response.close()

    async def aclose(self) -> None:
        await self.response.aclose()


@dataclass
class DroppingProxy:
    """A TCP proxy on loopback. The first ``drops`` connections that carry a ``GET /download`` are closed after
    ``after`` bytes of response body: a real dropped connection, seen by the client's real socket."""

    upstream_port: int
    after: int
    drops: int = 1
    port: int = field(default_factory=free_port)
    dropped: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DroppingProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        cut = threading.Event()  # set when this connection carries a download that should be dropped

        def up() -> None:
            _pump(client, upstream, on_chunk=lambda data: self._maybe_arm(data, cut))

        threading.Thread(target=up, daemon=True).start()
        _pump(upstream, client, limit=lambda: self.after if cut.is_set() else None)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _maybe_arm(self, data: bytes, cut: threading.Event) -> None:
        if data.startswith(b"GET /download") and self.dropped < self.drops:
            self.dropped += 1
            cut.set()


def _pump(
    src: socket.socket,
    dst: socket.socket,
    *,
    on_chunk: Callable[[bytes], None] | None = None,
    limit: Callable[[], int | None] | None = None,
) -> None:
    """Copy src to dst until EOF; with ``limit``, stop ``limit()`` bytes after the end of the response headers."""
    seen = b""
    body = 0
    armed = False
    try:
        while True:
            data = src.recv(65536)
            if not data:
                return
            if on_chunk:
                on_chunk(data)
            cap = limit() if limit else None
            if cap is not None:
                if not armed:  # count from the download's own response (the connection may have served others)
                    armed, seen, body = True, b"", 0
                if b"\r\n\r\n" not in seen:
                    seen += data
                    if b"\r\n\r\n" not in seen:
                        dst.sendall(data)
                        continue
                    head_end = seen.index(b"\r\n\r\n") + 4
                    already = len(seen) - len(data)
                    head_part = max(0, head_end - already)
                    dst.sendall(data[:head_part])
                    data = data[head_part:]
                room = cap - body
                dst.sendall(data[:room])
                body += min(room, len(data))
                if body >= cap:
                    return
                continue
            dst.sendall(data)
    except OSError:
        return


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
