"""The asynchronous client: :class:`AsyncClient` runs the same flows as :class:`segport.client.Client` with
``httpx.AsyncClient``, ``anyio.sleep`` and a worker thread for blocking work (loading a DataFrame); its public
methods are :mod:`segport.client.base`'s, awaited."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import closing
from types import TracebackType
from typing import Any, Concatenate, ParamSpec

import anyio
import anyio.to_thread
import httpx

from segport.client import base
from segport.client.core import Flow, Op, Send, Sleep, Steps, T, Work

P = ParamSpec("P")


def awaited(
    flow: Callable[Concatenate[base.AnyClient, P], Flow[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """An :class:`AsyncClient` coroutine method that runs ``flow`` to its end and returns its value."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(flow(self, *args, **kwargs))

    return base.method_of(method, flow)


class AsyncClient(base.BaseClient[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """The async twin of :class:`segport.client.Client` (same arguments, same methods, awaited)."""

    submit_segment_export = awaited(base.submit_segment_export)
    submit_tag_export = awaited(base.submit_tag_export)
    job_result = awaited(base.job_result)
    wait = awaited(base.wait)
    download = awaited(base.download)
    export_segment = awaited(base.export_segment)
    export_tag = awaited(base.export_tag)

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
