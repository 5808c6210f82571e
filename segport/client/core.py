"""The client's logic, written once and free of I/O: :class:`Client` and :class:`AsyncClient` both drive it.

Each operation is a generator that yields what it needs done — :class:`Send` a request, :class:`Stream` a
response body into a sink, :class:`Sleep`, :class:`Work` (blocking work such as loading a DataFrame) — and
receives the outcome (a response, or a transport error thrown back in). The sync driver runs these with
``httpx.Client`` and ``time.sleep``, the async one with ``httpx.AsyncClient``, ``anyio.sleep`` and a worker
thread; argument checks, retries, backoff, polling and resumable downloads live only here, and so does the
loop that steps a flow (:class:`Steps`). The twins' constructor and public methods are written once too, in
:mod:`segport.client.base`.

Only what the seed documents is relied on: the submit path and body, ``stage`` + ``uris`` in the job result,
and ``base + "/download?file=" + uri``. segport's extra fields (``rows``, ``bytes``, ``error``, ...) are used
when present.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import quote

import httpx

from segport.client.download import PartFile, content_range, target_path, target_paths
from segport.client.errors import (
    ApiError,
    ConnectionFailed,
    DownloadFailed,
    InvalidArgument,
    JobFailed,
    WaitTimeout,
    error_from_response,
    parse_retry_after,
)
from segport.client.frames import FrameKind, load_frame
from segport.client.models import Backoff, Job, JobResult, Progress, ProgressFn, emit
from segport.client.wire import job_result, json_body, submitted_job

T = TypeVar("T")
Kind = Literal["segment", "tag"]
FILE_FORMATS = ("csv", "json")
HEADER_TYPES = ("key", "name")
DEFAULT_TIMEOUT_S = 3600.0  # how long wait() and export_*() wait for a job unless told


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """A request to build with the driver's httpx client (so its timeouts and transport apply)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(self.method, self.url, headers=self.headers, json=self.json)


@dataclass(frozen=True, slots=True)
class Order:
    """What to export, checked when made (a bad argument fails before any request is sent)."""

    kind: Kind
    project: str
    target: str
    properties: Sequence[str] | None = None
    file_format: str = "csv"
    header: str = "key"
    extra: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for what, value in (("project", self.project), (self.kind, self.target)):
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"{what} must be a non-empty string")
        if isinstance(self.properties, str):
            raise InvalidArgument("properties must be a list of keys, not one string")
        if self.file_format not in FILE_FORMATS:
            raise InvalidArgument(f"file_format must be csv or json, not {self.file_format!r}")
        if self.header not in HEADER_TYPES:
            raise InvalidArgument(f"header must be key or name, not {self.header!r}")

    @property
    def path(self) -> str:
        """``/v1/api/projects/{p}/segment_profiles/{key}/export_jobs`` (or ``.../user_tags/{tag}/...``)."""
        collection = "segment_profiles" if self.kind == "segment" else "user_tags"
        return f"/v1/api/projects/{quote(self.project, safe='')}/{collection}/{quote(self.target, safe='')}/export_jobs"

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"properties": list(self.properties or []), "fileFormat": self.file_format}
        if self.file_format == "csv":  # the seed: csvHeaderType only applies to csv
            body["csvHeaderType"] = self.header
        body.update(self.extra or {})
        return body


class Sink(Protocol):
    def begin(self, response: httpx.Response) -> None: ...
    def write(self, chunk: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Send:
    """Send the request and return the response with its body read."""

    request: RequestSpec


@dataclass(frozen=True, slots=True)
class Stream:
    """Send the request; for a 2xx answer call ``sink.begin`` then ``sink.write`` for every raw chunk.
    Returns the (closed) response; an error answer is returned with its body read instead."""

    request: RequestSpec
    sink: Sink


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Work:
    """Call ``fn()`` and return its value: blocking work the async driver keeps off the event loop."""

    fn: Callable[[], Any]


Op = Send | Stream | Sleep | Work
Flow = Generator[Op, Any, T]


class Steps(Iterator[Op], Generic[T]):
    """A driver's view of one flow: iterate for the next op, hand its outcome back with :meth:`answer` or
    :meth:`fail` (the flow retries, resumes, or cleans up and re-raises); once the iteration ends,
    :attr:`result` is the flow's value. :meth:`close` ends an unfinished flow (its ``finally`` runs)."""

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self._value: Any = None
        self._error: BaseException | None = None
        self.result: T

    def __next__(self) -> Op:
        value, error = self._value, self._error
        self._value, self._error = None, None
        try:
            return self._flow.throw(error) if error is not None else self._flow.send(value)
        except StopIteration as stop:
            self.result = stop.value
            raise StopIteration from None

    def answer(self, value: Any) -> None:
        self._value = value

    def fail(self, error: BaseException) -> None:
        self._error = error

    def close(self) -> None:
        self._flow.close()


@dataclass(slots=True)
class Core:
    """Request builder and the flows of every operation (see the module docstring)."""

    base_url: str
    token: str | None
    backoff: Backoff
    retries: int
    max_retry_after_s: float
    resumes: int

    def __post_init__(self) -> None:
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise InvalidArgument(f"base_url must start with http:// or https://, not {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")

    # --- requests ----------------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def submit_request(self, order: Order) -> RequestSpec:
        """``POST`` the order's body to its path."""
        return RequestSpec("POST", self.base_url + order.path, self.auth_headers(), order.body)

    def result_request(self, job_id: str) -> RequestSpec:
        if not job_id:
            raise InvalidArgument("job id must be a non-empty string")
        return RequestSpec("GET", f"{self.base_url}/v1/api/job/result/{quote(job_id, safe='')}", self.auth_headers())

    def download_url(self, uri: str) -> str:
        """The seed's rule, verbatim: ``"http://{api-host}/download?file=" + uri`` (uri is already encoded)."""
        return f"{self.base_url}/download?file={uri}"

    # --- one call, with retries --------------------------------------------------------------------
    def call(
        self, spec: RequestSpec, *, idempotent: bool = True, deadline: float | None = None
    ) -> Flow[httpx.Response]:
        """Send ``spec``; retry 429/503 (honouring ``Retry-After``) and dropped connections, then raise.

        A POST is retried after a transport error only when the connection was never made."""
        attempt = 0
        while True:
            try:
                response = yield Send(spec)
            except httpx.TransportError as exc:
                if not (idempotent or isinstance(exc, httpx.ConnectError)) or attempt >= self.retries:
                    raise ConnectionFailed(f"{spec.method} {spec.url}: {_describe(exc)}") from exc
                delay = self.backoff.delay(attempt)
            else:
                if response.is_success:
                    return response
                error = error_from_response(response)
                if not self._retryable(error, attempt):
                    raise error
                delay = self.backoff.delay(attempt, error.retry_after)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise WaitTimeout(f"gave up on {spec.method} {spec.url}: the time given ran out while retrying")
            attempt += 1
            yield Sleep(delay)

    def _retryable(self, error: ApiError, attempt: int) -> bool:
        if error.status not in (429, 503) or attempt >= self.retries:
            return False
        return error.retry_after is None or error.retry_after <= self.max_retry_after_s

    # --- operations --------------------------------------------------------------------------------
    def submit(self, order: Order) -> Flow[Job]:
        spec = self.submit_request(order)
        response = yield from self.call(spec, idempotent=False)
        return submitted_job(response)

    def result(self, job: Job | str, *, deadline: float | None = None) -> Flow[JobResult]:
        response = yield from self.call(self.result_request(_job_id(job)), deadline=deadline)
        return job_result(json_body(response))

    def wait(
        self,
        job: Job | str,
        timeout: float | None,
        progress: ProgressFn | None = None,
        started: float | None = None,
    ) -> Flow[JobResult]:
        """Poll until the job has ``uris`` (done) or is ``ERROR`` (:class:`JobFailed`), with exponential
        backoff and jitter; a ``Retry-After`` on any answer is a floor for the next wait."""
        start = time.monotonic()
        started = start if started is None else started
        deadline = None if timeout is None else start + timeout
        the_job = job if isinstance(job, Job) else None
        attempt = 0
        while True:
            response = yield from self.call(self.result_request(_job_id(job)), deadline=deadline)
            result = job_result(json_body(response))
            emit(progress, Progress("waiting", time.monotonic() - started, the_job, result.stage, result.rows))
            if result.failed:
                code = result.error.code if result.error else None
                message = result.error.message if result.error else "the server gave no reason"
                raise JobFailed(f"job {_job_id(job)} failed: {f'{code}: ' if code else ''}{message}", result, code)
            if result.finished:
                return result
            delay = self.backoff.delay(attempt, parse_retry_after(response.headers.get("retry-after")))
            attempt += 1
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"job {_job_id(job)} is still {result.stage} after {timeout}s", result)
                delay = min(delay, remaining)  # one last look right at the deadline
            yield Sleep(delay)

    def download(
        self,
        uri: str,
        dest: str | os.PathLike[str],
        progress: ProgressFn | None = None,
        started: float | None = None,
        job: Job | None = None,
    ) -> Flow[Path]:
        """Stream ``uri`` into a hidden ``.part`` file next to the target, resume with ``Range`` after a dropped
        connection (``If-Range`` guards against a changed file), and rename it into place when complete."""
        target = target_path(uri, dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic() if started is None else started
        part = PartFile(target.with_name(f".{target.name}.part"), target.name, progress, started, job)
        done = False
        try:
            failures = 0
            while True:
                spec = RequestSpec("GET", self.download_url(uri), {**self.auth_headers(), **part.range_headers()})
                try:
                    response = yield Stream(spec, part)
                except httpx.TransportError as exc:
                    failures += 1
                    if failures > self.resumes:
                        raise DownloadFailed(
                            f"download of {target.name} failed after {failures} tries at {part.offset} bytes: "
                            f"{_describe(exc)}"
                        ) from exc
                    yield Sleep(self.backoff.delay(failures - 1))
                    continue
                if response.status_code == 416 and part.offset:
                    size = content_range(response.headers.get("content-range"))[2]
                    if size == part.offset:  # the connection dropped after the last byte
                        break
                    part.restart()
                    continue
                if not response.is_success:
                    error = error_from_response(response)
                    if self._retryable(error, failures):
                        failures += 1
                        yield Sleep(self.backoff.delay(failures - 1, error.retry_after))
                        continue
                    raise error
                if part.total is not None and part.offset < part.total:  # ended early without an error
                    failures += 1
                    if failures > self.resumes:
                        raise DownloadFailed(f"download of {target.name} stopped at {part.offset}/{part.total} bytes")
                    continue
                if part.total is not None and part.offset > part.total:
                    raise DownloadFailed(f"download of {target.name} got {part.offset} bytes, expected {part.total}")
                break
            part.commit(target)
            done = True
            return target
        finally:
            if not done:
                part.discard()

    def export(
        self,
        order: Order,
        dest: str | os.PathLike[str],
        timeout: float | None,
        progress: ProgressFn | None,
        as_frame: FrameKind | None = None,
    ) -> Flow[list[Path] | Any]:
        """Submit, wait, download every file: the paths written, in the server's order (or, with ``as_frame``,
        one DataFrame of them)."""
        started = time.monotonic()
        job = yield from self.submit(order)
        emit(progress, Progress("submitted", time.monotonic() - started, job))
        result = yield from self.wait(job, timeout, progress, started)
        paths = []
        for uri, path in zip(result.uris, target_paths(result.uris, dest), strict=True):
            paths.append((yield from self.download(uri, path, progress, started, job)))
        emit(progress, Progress("done", time.monotonic() - started, job, result.stage, result.rows))
        if as_frame:
            return (yield Work(lambda: load_frame(paths, order.file_format, as_frame)))
        return paths


def _job_id(job: Job | str) -> str:
    return job.id if isinstance(job, Job) else job


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
