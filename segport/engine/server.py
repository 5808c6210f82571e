"""The engine process's internal API: one ``POST /engine/<name>`` per operation of :mod:`segport.engine.protocol`
(the profile operations, and ``health``, ``wake``: a job was queued, ``interrupt``: a running job was cancelled).

Served by uvicorn on the Unix socket ``<data dir>/engine.sock`` (``segport serve``) or on the address of
``segport worker --listen``. It is not a public API: it trusts its callers (they run segment rules the
engine compiles itself, but may read any project), so it listens on a socket only this user can open, or on
an address the operator keeps private. Errors are rendered in the one error shape
(segport/http/errors.py), which :mod:`segport.engine.client` turns back into the same exception classes.

The routes are made from the table of operations; the engine process's role (segport/roles/engine.py) builds
the app around them, with the error renderer and the workers that run while it serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from segport.engine.base import ProfileAccess
from segport.engine.protocol import HEALTH, PROCESS_OPS, PROFILE_OPS, EngineProcess, Op


def engine_router(engine: ProfileAccess, process: EngineProcess) -> APIRouter:
    """``POST /engine/<name>`` for each operation of :mod:`segport.engine.protocol`: the profile operations
    served by ``engine``, the process's own by ``process``. Errors are raised for the app's error renderer."""
    router = APIRouter()
    for ops, served in ((PROFILE_OPS, engine), (PROCESS_OPS, process)):
        for op in ops:
            router.add_api_route(f"/engine/{op.name}", _endpoint(op, getattr(served, op.name)), methods=["POST"])
    return router


def _endpoint(op: Op, method: Callable[..., Any]) -> Callable[[Request], Awaitable[JSONResponse]]:
    inline = op is HEALTH  # the liveness probe: answered on the event loop, never behind busy threads

    async def endpoint(request: Request) -> JSONResponse:
        arguments = op.arguments(await request.json())
        result = method(**arguments) if inline else await run_in_threadpool(method, **arguments)
        return JSONResponse(op.answer(result))

    endpoint.__name__ = op.name
    return endpoint
