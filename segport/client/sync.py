"""The synchronous client: :class:`Client` runs the flows of :mod:`segport.client.core` with ``httpx.Client``;
its public methods are :mod:`segport.client.base`'s, made blocking."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from types import TracebackType
from typing import Any, Concatenate, ParamSpec

import httpx

from segport.client import base
from segport.client.core import Flow, Op, Send, Sleep, Steps, T, Work

P = ParamSpec("P")


def blocking(flow: Callable[Concatenate[base.AnyClient, P], Flow[T]]) -> Callable[Concatenate[Client, P], T]:
    """A :class:`Client` method that runs ``flow`` to its end and returns its value."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(flow(self, *args, **kwargs))

    return base.method_of(method, flow)


class Client(base.BaseClient[httpx.BaseTransport, httpx.Client]):
    """A client for segport and any GrowingIO-compatible export API.

    ``transport`` replaces httpx's network transport (tests hand in an in-process or failing one). ``retries``
    bounds retries of one request after a 429/503 or a dropped connection; ``resumes`` bounds how often one
    download is resumed; a ``Retry-After`` longer than ``max_retry_after_s`` is not waited for. (The
    constructor is :class:`segport.client.base.BaseClient`'s, shared with :class:`AsyncClient`.)
    """

    submit_segment_export = blocking(base.submit_segment_export)
    submit_tag_export = blocking(base.submit_tag_export)
    job_result = blocking(base.job_result)
    wait = blocking(base.wait)
    download = blocking(base.download)
    export_segment = blocking(base.export_segment)
    export_tag = blocking(base.export_tag)

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
