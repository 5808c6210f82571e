"""The synchronous client: :class:`Client` drives the flows of :mod:`segport.client.core` with ``httpx.Client``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import httpx

from segport.client.core import Core, Flow, Kind, Op, ProgressFn, Send, Sleep, T
from segport.client.frames import FrameKind, load_frame
from segport.client.models import Backoff, Job, JobResult

DEFAULT_TIMEOUT_S = 3600.0


class Client:
    """A client for segport and any GrowingIO-compatible export API.

    ``transport`` replaces httpx's network transport (tests hand in an in-process or failing one). ``retries``
    bounds retries of one request after a 429/503 or a dropped connection; ``resumes`` bounds how often one
    download is resumed; a ``Retry-After`` longer than ``max_retry_after_s`` is not waited for.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        retries: int = 4,
        resumes: int = 5,
        max_retry_after_s: float = 60.0,
        verify: bool = True,
    ) -> None:
        self._core = Core(
            base_url,
            token,
            backoff=backoff or Backoff(),
            retries=retries,
            max_retry_after_s=max_retry_after_s,
            resumes=resumes,
        )
        self._http = httpx.Client(transport=transport, timeout=timeout, verify=verify, follow_redirects=True)

    @property
    def base_url(self) -> str:
        return self._core.base_url

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
        return self._run(self._core.submit("segment", project, segment, properties, file_format, header, extra))

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
        return self._run(self._core.submit("tag", project, tag, properties, file_format, header, extra))

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
        return self._export(
            "segment", project, segment, properties, file_format, header, dest, timeout, progress, extra, as_frame
        )

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
        return self._export(
            "tag", project, tag, properties, file_format, header, dest, timeout, progress, extra, as_frame
        )

    # --- driving the flows -------------------------------------------------------------------------
    def _export(
        self,
        kind: Kind,
        project: str,
        target: str,
        properties: Sequence[str] | None,
        file_format: str,
        header: str,
        dest: str | os.PathLike[str],
        timeout: float | None,
        progress: ProgressFn | None,
        extra: dict[str, Any] | None,
        as_frame: FrameKind | None,
    ) -> list[Path] | Any:
        paths = self._run(
            self._core.export(kind, project, target, properties, file_format, header, dest, timeout, progress, extra)
        )
        return load_frame(paths, file_format, as_frame) if as_frame else paths

    def _run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    op = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                value, error = None, None
                try:
                    value = self._do(op)
                except Exception as exc:  # handed to the flow: it retries, resumes, or cleans up and re-raises
                    error = exc
        finally:
            flow.close()

    def _do(self, op: Op) -> Any:
        if isinstance(op, Sleep):
            time.sleep(op.seconds)
            return None
        spec = op.request
        request = self._http.build_request(spec.method, spec.url, headers=spec.headers, json=spec.json)
        if isinstance(op, Send):
            return self._http.send(request)
        response = self._http.send(request, stream=True)
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
