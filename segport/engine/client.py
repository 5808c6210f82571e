"""The engine process as seen from the others: every :class:`segport.engine.base.ProfileAccess` call is one HTTP
request to it (:mod:`segport.engine.server`), over a Unix socket in the data dir (``unix:PATH``) or TCP
(``http://HOST:PORT``, a ``segport worker --listen``). The calls are the operations of
:mod:`segport.engine.protocol`; :class:`RemoteEngine` has one method per operation, made from that table.

Arguments and answers are JSON (:mod:`segport.engine.wire`). Files travel by path: ``segport serve`` runs both
halves on one data dir, so an upload spooled by an API process is read by the engine process where it lies. The
engine answers errors in the one error shape and the client raises the same :mod:`segport.errors` class again,
so services and handlers cannot tell a remote engine from a local one. An engine that cannot be reached (down,
restarting, not configured) is :class:`EngineUnavailable`: HTTP 503 with ``Retry-After``, never a 500.

Exports never go through here: they run in the engine process, next to the file they read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from segport import errors
from segport.engine.base import ProfileAccess
from segport.engine.protocol import HEALTH, INTERRUPT, PROFILE_OPS, WAKE, Op

log = logging.getLogger("segport.engine.client")


def transport(url: str) -> tuple[httpx.HTTPTransport, str]:
    """An httpx transport and base URL for ``unix:PATH`` or ``http://HOST:PORT``."""
    if url.startswith("unix:"):
        return httpx.HTTPTransport(uds=url[len("unix:") :]), "http://engine"
    if url.startswith(("http://", "https://")):
        return httpx.HTTPTransport(), url.rstrip("/")
    raise errors.InvalidParameter(
        f"setting engine_url (SEGPORT_ENGINE_URL): expected unix:PATH or http://..., not {url!r}"
    )


class EngineClient:
    """HTTP calls to the engine's internal API, errors turned back into :mod:`segport.errors` types."""

    def __init__(self, url: str) -> None:
        self.url = url
        if not url:
            self.http: httpx.Client | None = None
            return
        t, base = transport(url)
        # no read timeout: an import or a recompute takes as long as it takes (the caller waits, as in-process)
        # an idle connection is dropped after 5 s, well before the engine would close it (ENGINE_KEEP_ALIVE_S)
        self.http = httpx.Client(
            transport=t,
            base_url=base,
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(keepalive_expiry=5.0),
        )

    def call(self, op: Op, *args: Any, **kwargs: Any) -> Any:
        """Run ``op`` in the engine process with these arguments; its result, or the engine's error raised again."""
        if self.http is None:
            raise errors.EngineUnavailable(
                "no profile engine is configured for this API process (set SEGPORT_ENGINE_URL)", retry_after_s=30
            )
        body = op.request(args, kwargs)
        try:
            extra = {} if op.deadline_s is None else {"timeout": op.deadline_s}
            r = self.http.post(f"/engine/{op.name}", json=body, **extra)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise errors.EngineUnavailable(
                f"the profile engine is not reachable ({type(exc).__name__}); retry soon"
            ) from None
        if r.status_code >= 400:
            raise _error(r)
        return op.result(r.json())

    def close(self) -> None:
        if self.http is not None:
            self.http.close()


def _error(r: httpx.Response) -> errors.SegportError:
    """The exception the engine raised, again: its class and its precise code."""
    wire = errors.decode_error(r.content)
    if wire.code is None:
        return errors.EngineUnavailable(f"the profile engine answered HTTP {r.status_code}; retry soon")
    return errors.class_of_code(wire.code)(wire.message or "", code=wire.code)


class RemoteEngine(ProfileAccess):
    """:class:`ProfileAccess` in the engine process: each method is one operation of
    :data:`segport.engine.protocol.PROFILE_OPS`, sent by :class:`EngineClient` (made from the table below)."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()


def _remote(op: Op) -> Callable[..., Any]:
    def method(self: RemoteEngine, *args: Any, **kwargs: Any) -> Any:
        return self.client.call(op, *args, **kwargs)

    method.__name__, method.__qualname__ = op.name, f"RemoteEngine.{op.name}"
    method.__doc__ = op.method.__doc__
    return method


for _op in PROFILE_OPS:
    setattr(RemoteEngine, _op.name, _remote(_op))


class RemoteWorkers:
    """The link of an API process to the engine process's workers (a :class:`segport.wake.WorkerLink`).

    ``wake`` is fire and forget: a background thread sends the request, so a submit never waits for the engine
    (and many submits at once become one request). If the engine is down, its workers find the job on their next
    poll, or at start."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client
        self._pending = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        self._pending.set()
        with self._lock:
            if self._thread is None and self._client.http is not None:
                self._thread = threading.Thread(target=self._send, name="segport-wake", daemon=True)
                self._thread.start()

    def _send(self) -> None:
        while True:
            self._pending.wait()
            self._pending.clear()
            try:
                self._client.call(WAKE)
            except errors.SegportError as exc:
                log.debug("wake not delivered: %s", exc.message)

    def interrupt(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` now if the engine is running it (a cancel); otherwise its heartbeat will."""
        try:
            self._client.call(INTERRUPT, job_id, reason)
        except errors.SegportError as exc:
            log.info("interrupt of job %s not delivered (%s); its heartbeat will stop it", job_id, exc.message)


def engine_answers(url: str) -> bool:
    """Whether the engine process at ``url`` answers its health check."""
    client = EngineClient(url)
    try:
        client.call(HEALTH)
        return True
    except (errors.SegportError, httpx.HTTPError):
        return False
    finally:
        client.close()


def wait_for_engine(url: str, timeout_s: float) -> bool:
    """Wait until the engine answers (True) or ``timeout_s`` passed (False: serve anyway, engine reads 503).

    Connections wait in the shared socket's backlog meanwhile, so clients see a slow first answer rather
    than a 503 while `segport serve` starts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if engine_answers(url):
            return True
        time.sleep(0.05)
    return False
