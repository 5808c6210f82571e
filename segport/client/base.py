"""What :class:`~segport.client.Client` and :class:`~segport.client.AsyncClient` share, written once (as httpx
keeps one ``BaseClient`` under its two clients): the constructor, and every public method.

A public method is written here as a function from the client and its arguments to the flow of the operation
(:mod:`segport.client.core`). Each twin turns it into a method with one line — ``wait = blocking(base.wait)``
in :mod:`segport.client.sync`, ``wait = awaited(base.wait)`` in :mod:`segport.client.aio` — which runs the
flow with that twin's I/O. Signature, defaults, overloads and docstring come from here, so the twins cannot
drift apart, and a type checker sees ``Client.wait(...) -> JobResult`` and
``AsyncClient.wait(...) -> Coroutine[..., JobResult]`` (the ParamSpec carries the overloads through).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import httpx

from segport.client.core import DEFAULT_TIMEOUT_S, Core, Flow, Order
from segport.client.frames import FrameKind
from segport.client.models import Backoff, Job, JobResult, ProgressFn

TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class BaseClient(Generic[TransportT, HttpT]):
    """The twins' constructor (its arguments are documented on :class:`~segport.client.Client`), their
    :class:`Core` and ``base_url``. A twin adds only its I/O: the httpx client it opens (:meth:`_open`), the
    runner of flows, closing, and its public methods made from this module's functions."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        transport: TransportT | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        retries: int = 4,
        resumes: int = 5,
        max_retry_after_s: float = 60.0,
        verify: bool = True,
    ) -> None:
        self._core = Core(base_url, token, backoff or Backoff(), retries, max_retry_after_s, resumes)
        self._http: HttpT = self._open(transport, timeout, verify)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a method made from one of the functions below is named after its twin in reprs and tracebacks
        for name, value in vars(cls).items():
            if callable(value) and getattr(value, "__wrapped__", None) is globals().get(name):
                value.__qualname__ = f"{cls.__qualname__}.{name}"
                value.__module__ = cls.__module__

    def _open(self, transport: TransportT | None, timeout: float, verify: bool) -> HttpT:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self._core.base_url


AnyClient = BaseClient[Any, Any]
F = TypeVar("F", bound=Callable[..., Any])


def method_of(method: F, flow: Callable[..., Any]) -> F:
    """``method`` (a twin's runner of ``flow``) takes the flow's name, docstring and parameters, and as its
    return annotation the flow's value (``Flow[JobResult]`` -> ``JobResult``), so that ``help()`` and
    ``inspect.signature`` show the method a caller sees."""
    functools.update_wrapper(method, flow)
    signature = inspect.signature(flow)
    self_param, *params = signature.parameters.values()
    returns = signature.return_annotation
    if isinstance(returns, str) and returns.startswith("Flow[") and returns.endswith("]"):
        returns = returns[len("Flow[") : -1]
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_param.replace(annotation=inspect.Parameter.empty), *params], return_annotation=returns
    )
    return method


# --- the public API, once for both twins -----------------------------------------------------------------
def submit_segment_export(
    self: AnyClient,
    project: str,
    segment: str,
    properties: Sequence[str] | None = None,
    file_format: str = "csv",
    header: str = "key",
    *,
    extra: dict[str, Any] | None = None,
) -> Flow[Job]:
    """Submit an export of a segment's members; ``extra`` adds body fields (segport: ``bom``, ``compression``)."""
    return self._core.submit(Order("segment", project, segment, properties, file_format, header, extra))


def submit_tag_export(
    self: AnyClient,
    project: str,
    tag: str,
    properties: Sequence[str] | None = None,
    file_format: str = "csv",
    header: str = "key",
    *,
    extra: dict[str, Any] | None = None,
) -> Flow[Job]:
    """Submit an export of the users holding a tag (``POST .../user_tags/{tag}/export_jobs``)."""
    return self._core.submit(Order("tag", project, tag, properties, file_format, header, extra))


def job_result(self: AnyClient, job: Job | str) -> Flow[JobResult]:
    """The job's current result (one request)."""
    return self._core.result(job)


def wait(
    self: AnyClient, job: Job | str, timeout: float | None = DEFAULT_TIMEOUT_S, progress: ProgressFn | None = None
) -> Flow[JobResult]:
    """Poll until the job is done; raises :class:`JobFailed` or :class:`WaitTimeout`."""
    return self._core.wait(job, timeout, progress)


def download(
    self: AnyClient, uri: str, dest: str | os.PathLike[str] = ".", progress: ProgressFn | None = None
) -> Flow[Path]:
    """Download one result uri to ``dest`` (a file, or a directory to keep the server's file name)."""
    return self._core.download(uri, dest, progress)


@overload
def export_segment(
    self: AnyClient,
    project: str,
    segment: str,
    properties: Sequence[str] | None = ...,
    file_format: str = ...,
    header: str = ...,
    *,
    dest: str | os.PathLike[str] = ...,
    timeout: float | None = ...,
    progress: ProgressFn | None = ...,
    extra: dict[str, Any] | None = ...,
    as_frame: None = ...,
) -> Flow[list[Path]]: ...
@overload
def export_segment(
    self: AnyClient,
    project: str,
    segment: str,
    properties: Sequence[str] | None = ...,
    file_format: str = ...,
    header: str = ...,
    *,
    dest: str | os.PathLike[str] = ...,
    timeout: float | None = ...,
    progress: ProgressFn | None = ...,
    extra: dict[str, Any] | None = ...,
    as_frame: FrameKind,
) -> Flow[Any]: ...
def export_segment(
    self: AnyClient,
    project: str,
    segment: str,
    properties: Sequence[str] | None = None,
    file_format: str = "csv",
    header: str = "key",
    *,
    dest: str | os.PathLike[str] = ".",
    timeout: float | None = DEFAULT_TIMEOUT_S,
    progress: ProgressFn | None = None,
    extra: dict[str, Any] | None = None,
    as_frame: FrameKind | None = None,
) -> Flow[list[Path] | Any]:
    """Submit, wait and download: the file paths, or with ``as_frame`` a pandas/polars DataFrame."""
    order = Order("segment", project, segment, properties, file_format, header, extra)
    return self._core.export(order, dest, timeout, progress, as_frame)


@overload
def export_tag(
    self: AnyClient,
    project: str,
    tag: str,
    properties: Sequence[str] | None = ...,
    file_format: str = ...,
    header: str = ...,
    *,
    dest: str | os.PathLike[str] = ...,
    timeout: float | None = ...,
    progress: ProgressFn | None = ...,
    extra: dict[str, Any] | None = ...,
    as_frame: None = ...,
) -> Flow[list[Path]]: ...
@overload
def export_tag(
    self: AnyClient,
    project: str,
    tag: str,
    properties: Sequence[str] | None = ...,
    file_format: str = ...,
    header: str = ...,
    *,
    dest: str | os.PathLike[str] = ...,
    timeout: float | None = ...,
    progress: ProgressFn | None = ...,
    extra: dict[str, Any] | None = ...,
    as_frame: FrameKind,
) -> Flow[Any]: ...
def export_tag(
    self: AnyClient,
    project: str,
    tag: str,
    properties: Sequence[str] | None = None,
    file_format: str = "csv",
    header: str = "key",
    *,
    dest: str | os.PathLike[str] = ".",
    timeout: float | None = DEFAULT_TIMEOUT_S,
    progress: ProgressFn | None = None,
    extra: dict[str, Any] | None = None,
    as_frame: FrameKind | None = None,
) -> Flow[list[Path] | Any]:
    """:meth:`export_segment` for the users holding a tag."""
    order = Order("tag", project, tag, properties, file_format, header, extra)
    return self._core.export(order, dest, timeout, progress, as_frame)
