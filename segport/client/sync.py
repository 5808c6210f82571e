"""The synchronous client: :class:`Client` drives the flows of :mod:`segport.client.core` with ``httpx.Client``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import httpx

from segport.client.core import DEFAULT_TIMEOUT_S, Flow, Op, Order, ProgressFn, Send, Sleep, Steps, T, Twin, Work
from segport.client.frames import FrameKind
from segport.client.models import Job, JobResult


class Client(Twin[httpx.BaseTransport, httpx.Client]):
    """A client for segport and any GrowingIO-compatible export API.

    ``transport`` replaces httpx's network transport (tests hand in an in-process or failing one). ``retries``
    bounds retries of one request after a 429/503 or a dropped connection; ``resumes`` bounds how often one
    download is resumed; a ``Retry-After`` longer than ``max_retry_after_s`` is not waited for. (The
    constructor is :class:`segport.client.core.Twin`'s, shared with :class:`AsyncClient`.)
    """

    def _open(self, transport: httpx.BaseTransport | None, timeout: float, verify: bool) -> httpx.Client:
        return httpx.Client(transport=transport, timeout=timeout, verify=verify, follow_redirects=True)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the API -----------------------------------------------------------------------------------
    def submit_segment_export(
        self,
        project: str,
        segment: str,
        properties: Sequence[str] | None = None,
        file_format: str = "csv",
        header: str = "key",
        *,
        extra: dict[str, Any] | None = None,
    ) -> Job:
        """Submit an export of a segment's members; ``extra`` adds body fields (segport: ``bom``, ``compression``)."""
        return self._run(self._core.submit(Order("segment", project, segment, properties, file_format, header, extra)))

    def submit_tag_export(
        self,
        project: str,
        tag: str,
        properties: Sequence[str] | None = None,
        file_format: str = "csv",
        header: str = "key",
        *,
        extra: dict[str, Any] | None = None,
    ) -> Job:
        """Submit an export of the users holding a tag (``POST .../user_tags/{tag}/export_jobs``)."""
        return self._run(self._core.submit(Order("tag", project, tag, properties, file_format, header, extra)))

    def job_result(self, job: Job | str) -> JobResult:
        """The job's current result (one request)."""
        return self._run(self._core.result(job))

    def wait(
        self, job: Job | str, timeout: float | None = DEFAULT_TIMEOUT_S, progress: ProgressFn | None = None
    ) -> JobResult:
        """Poll until the job is done; raises :class:`JobFailed` or :class:`WaitTimeout`."""
        return self._run(self._core.wait(job, timeout, progress))

    def download(self, uri: str, dest: str | os.PathLike[str] = ".", progress: ProgressFn | None = None) -> Path:
        """Download one result uri to ``dest`` (a file, or a directory to keep the server's file name)."""
        return self._run(self._core.download(uri, dest, progress))

    @overload
    def export_segment(
        self,
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
    ) -> list[Path]: ...
    @overload
    def export_segment(
        self,
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
    ) -> Any: ...
    def export_segment(
        self,
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
    ) -> list[Path] | Any:
        """Submit, wait and download: the file paths, or with ``as_frame`` a pandas/polars DataFrame."""
        order = Order("segment", project, segment, properties, file_format, header, extra)
        return self._run(self._core.export(order, dest, timeout, progress, as_frame))

    @overload
    def export_tag(
        self,
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
    ) -> list[Path]: ...
    @overload
    def export_tag(
        self,
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
    ) -> Any: ...
    def export_tag(
        self,
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
    ) -> list[Path] | Any:
        """:meth:`export_segment` for the users holding a tag."""
        order = Order("tag", project, tag, properties, file_format, header, extra)
        return self._run(self._core.export(order, dest, timeout, progress, as_frame))

    # --- driving the flows -------------------------------------------------------------------------
    def _run(self, flow: Flow[T]) -> T:
        with closing(Steps(flow)) as steps:
            for op in steps:
                try:
                    steps.answer(self._do(op))
                except Exception as exc:  # handed to the flow: it retries, resumes, or cleans up and re-raises
                    steps.fail(exc)
            return steps.result

    def _do(self, op: Op) -> Any:
        if isinstance(op, Sleep):
            time.sleep(op.seconds)
            return None
        if isinstance(op, Work):
            return op.fn()
        if isinstance(op, Send):
            return self._http.send(op.request.build(self._http))
        response = self._http.send(op.request.build(self._http), stream=True)
        try:
            if not response.is_success:
                response.read()
                return response
            op.sink.begin(response)
            # a body already read (httpx.MockTransport with content=) cannot be streamed again
            chunks = [response.content] if response.is_stream_consumed else response.iter_raw()
            for chunk in chunks:
                op.sink.write(chunk)
            return response
        finally:
            response.close()
