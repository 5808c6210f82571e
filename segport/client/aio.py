"""The asynchronous client: :class:`AsyncClient` drives the same flows as :class:`segport.client.Client`
with ``httpx.AsyncClient`` and ``anyio.sleep``; its methods are the same, awaited."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import anyio
import anyio.to_thread
import httpx

from segport.client.core import Core, Flow, Kind, Op, ProgressFn, Send, Sleep, T
from segport.client.frames import FrameKind, load_frame
from segport.client.models import Backoff, Job, JobResult
from segport.client.sync import DEFAULT_TIMEOUT_S


class AsyncClient:
    """The async twin of :class:`segport.client.Client` (same arguments, same methods, awaited)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, verify=verify, follow_redirects=True)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- the API -----------------------------------------------------------------------------------
    async def submit_segment_export(
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
        return await self._run(self._core.submit("segment", project, segment, properties, file_format, header, extra))

    async def submit_tag_export(
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
        return await self._run(self._core.submit("tag", project, tag, properties, file_format, header, extra))

    async def job_result(self, job: Job | str) -> JobResult:
        """The job's current result (one request)."""
        return await self._run(self._core.result(job))

    async def wait(
        self, job: Job | str, timeout: float | None = DEFAULT_TIMEOUT_S, progress: ProgressFn | None = None
    ) -> JobResult:
        """Poll until the job is done; raises :class:`JobFailed` or :class:`WaitTimeout`."""
        return await self._run(self._core.wait(job, timeout, progress))

    async def download(self, uri: str, dest: str | os.PathLike[str] = ".", progress: ProgressFn | None = None) -> Path:
        """Download one result uri to ``dest`` (a file, or a directory to keep the server's file name)."""
        return await self._run(self._core.download(uri, dest, progress))

    @overload
    async def export_segment(
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
    async def export_segment(
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
    async def export_segment(
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
        return await self._export(
            "segment", project, segment, properties, file_format, header, dest, timeout, progress, extra, as_frame
        )

    @overload
    async def export_tag(
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
    async def export_tag(
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
    async def export_tag(
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
        return await self._export(
            "tag", project, tag, properties, file_format, header, dest, timeout, progress, extra, as_frame
        )

    # --- driving the flows -------------------------------------------------------------------------
    async def _export(
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
        paths = await self._run(
            self._core.export(kind, project, target, properties, file_format, header, dest, timeout, progress, extra)
        )
        if not as_frame:
            return paths
        return await anyio.to_thread.run_sync(load_frame, paths, file_format, as_frame)

    async def _run(self, flow: Flow[T]) -> T:
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
                    value = await self._do(op)
                except Exception as exc:  # handed to the flow: it retries, resumes, or cleans up and re-raises
                    error = exc
        finally:
            flow.close()

    async def _do(self, op: Op) -> Any:
        if isinstance(op, Sleep):
            await anyio.sleep(op.seconds)
            return None
        spec = op.request
        request = self._http.build_request(spec.method, spec.url, headers=spec.headers, json=spec.json)
        if isinstance(op, Send):
            return await self._http.send(request)
        response = await self._http.send(request, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                return response
            op.sink.begin(response)
            if response.is_stream_consumed:  # a body already read (httpx.MockTransport with content=)
                op.sink.write(response.content)
                return response
            async for chunk in response.aiter_raw():
                op.sink.write(chunk)
            return response
        finally:
            await response.aclose()
