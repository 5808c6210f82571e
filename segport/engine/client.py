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

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import httpx

from segport import errors
from segport.engine import protocol
from segport.engine.base import ProfileAccess
from segport.engine.protocol import HEALTH, INTERRUPT, PROCESS_OPS, PROFILE_OPS, WAKE, Op

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


@dataclass(frozen=True)
class Bulkhead:
    """How an API process bounds its calls to the engine (see docs/processes.md, "Bulkheads").

    ``max_calls``: calls in flight at once (each on a thread of the client's own pool, over its own connection
    pool); one more is refused at once. ``probe_interval_s``/``probe_deadline_s``: how often the engine's
    ``health`` is asked, and how long an answer may take before the engine counts as down."""

    max_calls: int = 16
    probe_interval_s: float = 1.0
    probe_deadline_s: float = 2.0


class EngineClient:
    """HTTP calls to the engine's internal API, errors turned back into :mod:`segport.errors` types.

    Bulkheads keep a stopped or hung engine from taking the rest of the API process with it:

    * every call has its operation's deadline (:mod:`segport.engine.protocol`); past it: 503;
    * calls run on the client's own threads (at most ``max_calls``) over its own connection pool; the calling
      thread waits for the answer, its deadline, or the engine being found down, whichever comes first; a call
      beyond ``max_calls`` is refused at once;
    * a watcher thread asks the engine's ``health`` every ``probe_interval_s`` on a connection of its own; an
      engine that does not answer within ``probe_deadline_s`` is *down*: reads waiting for it are answered 503
      at once, and new calls are refused without being sent until it answers again."""

    def __init__(self, url: str, bulkhead: Bulkhead | None = None) -> None:
        self.url = url
        self.bulkhead = bulkhead or Bulkhead()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiting: set[Future[Any]] = set()  # read calls' answers, failed at once when the engine goes down
        self._down_since: float | None = None
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        if not url:
            self.http: httpx.Client | None = None
            self.control: httpx.Client | None = None
            return
        n = self.bulkhead.max_calls
        # an idle connection is dropped after 5 s, well before the engine would close it (ENGINE_KEEP_ALIVE_S);
        # the per-request timeout is the operation's deadline
        t, base = transport(url)
        self.http = httpx.Client(
            transport=t,
            base_url=base,
            timeout=httpx.Timeout(protocol.READ_S, connect=5.0),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=5.0),
        )
        # health, wake and interrupt: never queued behind profile calls for a connection
        t, base = transport(url)
        self.control = httpx.Client(
            transport=t,
            base_url=base,
            timeout=httpx.Timeout(protocol.QUICK_S),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=5.0),
        )

    # --- the calls -----------------------------------------------------------------------------------
    def call(self, op: Op, *args: Any, **kwargs: Any) -> Any:
        """Run ``op`` in the engine process with these arguments; its result, or the engine's error raised again."""
        if self.http is None:
            raise errors.EngineUnavailable(
                "no profile engine is configured for this API process (set SEGPORT_ENGINE_URL)", retry_after_s=30
            )
        body = op.request(args, kwargs)
        if op in PROCESS_OPS:  # quick, on the control connection, in the calling thread
            return self._send(self.control, op, body, op.deadline_s)
        self._watch()
        answer: Future[Any] = Future()
        with self._lock:
            self._refuse_if_down()
            if self._in_flight >= self.bulkhead.max_calls:
                raise errors.EngineUnavailable(
                    f"{self._in_flight} calls to the profile engine are already in flight in this API process "
                    "(engine_max_calls); retry soon"
                )
            self._in_flight += 1
            if op.read:
                self._waiting.add(answer)
        try:
            assert self._pool is not None
            self._pool.submit(self._run, op, body, answer)
        except (AssertionError, RuntimeError):  # closed: the process is stopping
            with self._lock:
                self._in_flight -= 1
            raise errors.EngineUnavailable("this API process is stopping; retry soon") from None
        try:
            return answer.result(timeout=op.deadline_s)
        except FutureTimeout:
            raise errors.EngineUnavailable(
                f"the profile engine did not answer {op.name} within its deadline of {op.deadline_s:g} s; retry soon"
            ) from None
        finally:
            with self._lock:
                self._waiting.discard(answer)

    def _run(self, op: Op, body: dict[str, Any], answer: Future[Any]) -> None:
        try:
            result = self._send(self.http, op, body, op.deadline_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            _settle(answer, error=exc)
        else:
            _settle(answer, value=result)
        finally:
            with self._lock:
                self._in_flight -= 1

    @staticmethod
    def _send(http: httpx.Client | None, op: Op, body: dict[str, Any], deadline_s: float) -> Any:
        assert http is not None
        try:
            r = http.post(
                f"/engine/{op.name}", json=body, timeout=httpx.Timeout(deadline_s, connect=min(5.0, deadline_s))
            )
        except httpx.TransportError as exc:
            raise errors.EngineUnavailable(
                f"the profile engine is not reachable ({type(exc).__name__}); retry soon"
            ) from None
        if r.status_code >= 400:
            raise _error(r)
        return op.result(r.json())

    # --- the engine's health -------------------------------------------------------------------------
    def known_down(self) -> bool:
        """Whether the last health check failed (the engine stopped answering, or is restarting)."""
        return self._down_since is not None

    def _refuse_if_down(self) -> None:
        if self._down_since is not None:
            down_s = time.monotonic() - self._down_since
            raise errors.EngineUnavailable(
                f"the profile engine has not answered its health check for {down_s:.0f} s "
                "(stopped, hung or restarting); retry soon",
                retry_after_s=_retry_after(self.bulkhead),
            )

    def _watch(self) -> None:
        """Start the watcher and the call threads (once, in the process that calls: never before a fork)."""
        if self._watcher is not None:
            return
        with self._lock:
            if self._watcher is None and not self._closed.is_set():
                self._pool = ThreadPoolExecutor(self.bulkhead.max_calls, thread_name_prefix="segport-engine-call")
                self._watcher = threading.Thread(target=self._probe_forever, name="segport-engine-watch", daemon=True)
                self._watcher.start()

    def _probe_forever(self) -> None:
        b = self.bulkhead
        while not self._closed.is_set():
            began = time.monotonic()
            try:
                self._send(self.control, HEALTH, {}, b.probe_deadline_s)
                up = True
            except (errors.SegportError, httpx.HTTPError, ValueError):
                up = False
            self._observe(up)
            self._closed.wait(max(0.0, b.probe_interval_s - (time.monotonic() - began)))

    def _observe(self, up: bool) -> None:
        with self._lock:
            if up:
                if self._down_since is not None:
                    log.warning("the profile engine answers again")
                self._down_since = None
                return
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("the profile engine did not answer its health check: engine reads answer 503")
            waiting, self._waiting = self._waiting, set()
        gone = errors.EngineUnavailable(
            "the profile engine stopped answering (its health check failed); retry soon",
            retry_after_s=_retry_after(self.bulkhead),
        )
        for answer in waiting:
            _settle(answer, error=gone)

    def close(self) -> None:
        self._closed.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for http in (self.http, self.control):
            if http is not None:
                http.close()


def _settle(answer: Future[Any], *, value: Any = None, error: BaseException | None = None) -> None:
    """Give ``answer`` its value or error unless it already has one (the watcher may have failed it)."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(value)


def _retry_after(b: Bulkhead) -> int:
    """Retry-After while the engine is down: a probe interval and deadline, rounded up (at least 2 s)."""
    return max(2, math.ceil(b.probe_interval_s + b.probe_deadline_s))


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

    Fire and forget, both: a background thread sends ``wake`` and ``interrupt``, so neither a submit nor a
    cancel ever waits for the engine (many wakes at once become one request). If the engine is down, its
    workers find a queued job on their next poll, or at start, and a cancelled job's heartbeat finds its lease
    gone and stops the export."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client
        self._ready = threading.Condition()
        self._wake = False
        self._interrupts: list[tuple[str, str]] = []
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        with self._ready:
            self._wake = True
            self._start()
            self._ready.notify()

    def interrupt(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` now if the engine is running it (a cancel); otherwise its heartbeat will."""
        with self._ready:
            self._interrupts.append((job_id, reason))
            self._start()
            self._ready.notify()

    def _start(self) -> None:
        if self._thread is None and self._client.http is not None:
            self._thread = threading.Thread(target=self._send, name="segport-wake", daemon=True)
            self._thread.start()

    def _send(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._wake or bool(self._interrupts))
                wake, self._wake = self._wake, False
                interrupts, self._interrupts = self._interrupts, []
            for job_id, reason in interrupts:
                try:
                    self._client.call(INTERRUPT, job_id, reason)
                except errors.SegportError as exc:
                    log.info("interrupt of job %s not delivered (%s); its heartbeat will stop it", job_id, exc.message)
            if wake:
                try:
                    self._client.call(WAKE)
                except errors.SegportError as exc:
                    log.debug("wake not delivered: %s", exc.message)


class HealthProbe:
    """Asks one engine process's ``health``, over a client made once (making one costs tens of ms of CPU)
    that keeps no connection open between probes (the supervisor forks its children meanwhile)."""

    def __init__(self, url: str) -> None:
        t, base = transport(url)
        self.http = httpx.Client(transport=t, base_url=base, limits=httpx.Limits(max_keepalive_connections=0))

    def answers(self, deadline_s: float = protocol.QUICK_S) -> bool:
        """Whether the engine answers its health check within ``deadline_s``."""
        try:
            EngineClient._send(self.http, HEALTH, {}, deadline_s)
            return True
        except (errors.SegportError, httpx.HTTPError, ValueError):
            return False

    def close(self) -> None:
        self.http.close()


def engine_answers(url: str, deadline_s: float = protocol.QUICK_S) -> bool:
    """Whether the engine process at ``url`` answers its health check within ``deadline_s``."""
    probe = HealthProbe(url)
    try:
        return probe.answers(deadline_s)
    finally:
        probe.close()


def wait_for_engine(url: str, timeout_s: float) -> bool:
    """Wait until the engine answers (True) or ``timeout_s`` passed (False: serve anyway, engine reads 503).

    Connections wait in the shared socket's backlog meanwhile, so clients see a slow first answer rather
    than a 503 while `segport serve` starts."""
    deadline = time.monotonic() + timeout_s
    probe = HealthProbe(url)
    try:
        while time.monotonic() < deadline:
            if probe.answers():
                return True
            time.sleep(0.05)
        return False
    finally:
        probe.close()
