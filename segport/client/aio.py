"""The asynchronous client: :class:`AsyncClient` drives the same flows as :class:`segport.client.Client`
with ``httpx.AsyncClient``, ``anyio.sleep`` and a worker thread for blocking work (loading a DataFrame); its
methods are the same, awaited."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import anyio
import anyio.to_thread
import httpx

from segport.client.core import DEFAULT_TIMEOUT_S, Flow, Op, Order, ProgressFn, Send, Sleep, Steps, T, Twin, Work
from segport.client.frames import FrameKind
from segport.client.models import Job, JobResult


class AsyncClient(Twin[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """The async twin of :class:`segport.client.Client` (same arguments, same methods, awaited)."""

    def _open(self, transport: httpx.AsyncBaseTransport | None, timeout: float, verify: bool) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, timeout=timeout, verify=verify, follow_redirects=True)

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
        return await self._run(
            self._core.submit(Order("segment", project, segment, properties, file_format, header, extra))
        )

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
        return await self._run(self._core.submit(Order("tag", project, tag, properties, file_format, header, extra)))

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
        order = Order("segment", project, segment, properties, file_format, header, extra)
        return await self._run(self._core.export(order, dest, timeout, progress, as_frame))

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
        order = Order("tag", project, tag, properties, file_format, header, extra)
        return await self._run(self._core.export(order, dest, timeout, progress, as_frame))

    # --- driving the flows -------------------------------------------------------------------------
    async def _run(self, flow: Flow[T]) -> T:
        with closing(Steps(flow)) as steps:
            for op in steps:
                try:
                    steps.answer(await self._do(op))
                except Exception as exc:  # handed to the flow: it retries, resumes, or cleans up and re-raises
                    steps.fail(exc)
            return steps.result

    async def _do(self, op: Op) -> Any:
        if isinstance(op, Sleep):
            await anyio.sleep(op.seconds)
            return None
        if isinstance(op, Work):
            return await anyio.to_thread.run_sync(op.fn)
        if isinstance(op, Send):
            return await self._http.send(op.request.build(self._http))
        response = await self._http.send(op.request.build(self._http), stream=True)
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
