"""The engine process's internal API: one ``POST /engine/<name>`` per operation of :mod:`segport.engine.protocol`
(the profile operations, and ``health``, ``wake``: a job was queued, ``interrupt``: a running job was cancelled).

Served by uvicorn on the Unix socket ``<data dir>/engine.sock`` (``segport serve``) or on the address of
``segport worker --listen``. It is not a public API: it trusts its callers (they run segment rules the
engine compiles itself, but may read any project), so it listens on a socket only this user can open, or on
an address the operator keeps private. Errors are rendered in the one error shape
(segport/http/errors.py), which :mod:`segport.engine.client` turns back into the same exception classes.

The process also runs the export workers, the janitor and the daily recompute (see :func:`create_engine_app`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from segport.app import App
from segport.engine.base import ProfileAccess
from segport.engine.protocol import PROCESS_OPS, PROFILE_OPS, EngineProcess, Health, Op
from segport.http import errors

log = logging.getLogger("segport.engine.server")


def sync_data_versions(app: App) -> None:
    """Copy every project's data version from the engine into the metadata store, where submits read it.

    DataService keeps the two equal; this repairs the gap a crash between an engine commit and the metadata
    update leaves (and fills the column in a data dir made before it existed)."""
    for project in app.meta.projects():
        app.data.sync_version(project.id)


def create_engine_app(app: App, *, run_workers: bool = True, run_daily: bool = True) -> FastAPI:
    """The internal ASGI app around an :class:`App` that owns the real engine."""

    @asynccontextmanager
    async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(sync_data_versions, app)
        worker = daily = None
        if run_workers:
            from segport.worker import Worker

            worker = Worker(app)
            worker.start()
        if run_daily:
            from segport.scheduler import DailyRecompute

            daily = DailyRecompute(app.data, app.settings.recompute_interval_s)
            daily.start()
        log.info("engine process %s ready", os.getpid())
        try:
            yield
        finally:
            if daily is not None:
                daily.stop()
            if worker is not None:
                worker.stop()

    api = FastAPI(title="segport engine (internal)", lifespan=lifespan, openapi_url=None, docs_url=None)
    errors.install(api)

    class Process:
        def health(self) -> Health:
            return Health(os.getpid(), run_workers)

        def wake(self) -> None:
            app.wake.set()

        def interrupt(self, job_id: str, reason: str) -> bool:
            return app.runner.stop_running(job_id, reason)

    api.include_router(engine_router(app.engine, Process()))
    return api


def engine_router(engine: ProfileAccess, process: EngineProcess) -> APIRouter:
    """``POST /engine/<name>`` for each operation of :mod:`segport.engine.protocol`: the profile operations
    served by ``engine``, the process's own by ``process``. Errors are raised for the app's error renderer."""
    router = APIRouter()
    for ops, served in ((PROFILE_OPS, engine), (PROCESS_OPS, process)):
        for op in ops:
            router.add_api_route(f"/engine/{op.name}", _endpoint(op, getattr(served, op.name)), methods=["POST"])
    return router


def _endpoint(op: Op, method: Callable[..., Any]) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(request: Request) -> JSONResponse:
        arguments = op.arguments(await request.json())
        result = await run_in_threadpool(method, **arguments)
        return JSONResponse(op.answer(result))

    endpoint.__name__ = op.name
    return endpoint
