"""The engine process: it owns the profile engine, runs the export workers, the janitor and the daily recompute,
and serves the engine operations (:mod:`segport.engine.protocol`) to the API processes.

`segport serve` forks it from its supervisor (segport/processes.py); `segport worker --uds/--listen` runs it on
its own (and `segport worker` without them runs the workers of an app this module builds, without the server).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from segport.app import EngineApp, open_stores
from segport.engine.protocol import Health
from segport.engine.server import engine_router
from segport.errors import InvalidParameter
from segport.http import errors
from segport.roles.background import background_work
from segport.roles.parts import open_engine, open_results
from segport.roles.sockets import listen_socket, serve_asgi, unix_socket
from segport.services.data import repair
from segport.services.runner import ExportRunner
from segport.settings import Settings
from segport.wake import LocalWorkers, Wake

log = logging.getLogger("segport.roles.engine")
ENGINE_KEEP_ALIVE_S = 300  # idle connections from API processes: theirs expire after 5 s, so they close first


def build(settings: Settings, *, migrate: bool = True) -> EngineApp:
    """The parts of a process that owns the engine: the metadata stores, the profile engine itself (its columns
    repaired against the catalogues), the result store, and the export runner its workers use."""
    stores = open_stores(settings, migrate=migrate)
    try:
        engine = open_engine(settings)
    except BaseException:
        stores.close()
        raise
    results = open_results(settings)
    wake = Wake()
    runner = ExportRunner(settings, stores.meta, stores.queue, engine, results)
    app = EngineApp.assemble(stores, engine, results, LocalWorkers(wake, runner.stop_running), runner=runner, wake=wake)
    repair(app.meta, engine)  # close any gap a kill left between catalogue and columns
    return app


class _Process:
    """What the engine process answers about itself (:class:`segport.engine.protocol.EngineProcess`)."""

    def __init__(self, app: EngineApp, workers: bool) -> None:
        self.app = app
        self.workers = workers

    def health(self) -> Health:
        return Health(os.getpid(), self.workers)

    def wake(self) -> None:
        self.app.wake.set()

    def interrupt(self, job_id: str, reason: str) -> bool:
        return self.app.runner.stop_running(job_id, reason)


def sync_data_versions(app: EngineApp) -> None:
    """Copy every project's data version from the engine into the metadata store, where submits read it.

    DataService keeps the two equal; this repairs the gap a crash between an engine commit and the metadata
    update leaves (and fills the column in a data dir made before it existed)."""
    for project in app.meta.projects():
        app.data.sync_version(project.id)


def create_engine_app(app: EngineApp, *, run_workers: bool = True, run_daily: bool = True) -> FastAPI:
    """The engine process's internal ASGI app: the engine operations, and (while it is up) the workers and the
    daily recompute."""

    @asynccontextmanager
    async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(sync_data_versions, app)
        with background_work(app, workers=run_workers, daily=run_daily, events=True):
            log.info("engine process %s ready", os.getpid())
            yield

    api = FastAPI(title="segport engine (internal)", lifespan=lifespan, openapi_url=None, docs_url=None)
    errors.install(api)
    api.include_router(engine_router(app.engine, _Process(app, run_workers)))
    return api


def run(
    settings: Settings,
    *,
    uds: str | None = None,
    listen: str | None = None,
    nice: int = 0,
    prepared: bool = False,
) -> None:
    """The engine process: owns the engine, runs workers, janitor and daily recompute, serves the internal
    API on the Unix socket ``uds`` or on ``listen`` (HOST:PORT). ``nice`` lowers its CPU priority (and that of
    DuckDB's threads, which inherit it): exports are throughput work, API requests are latency work.
    ``prepared``: `segport serve` has already migrated the metadata database and checked the result store,
    once, before forking; its children skip both."""
    if nice:
        os.nice(nice)
    sock = None
    if listen:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidParameter(f"--listen wants HOST:PORT, not {listen!r}")
        sock = listen_socket(host.strip("[]"), int(port))
    app = build(settings, migrate=not prepared)
    try:
        if not prepared:
            app.results.check()
        asgi = create_engine_app(app, run_workers=settings.serve_workers)
        # The API processes' clients drop an idle connection after 5 s (httpx's keepalive_expiry). Were the
        # engine to close it first (uvicorn's default is also 5 s), a call sent on it in that instant would
        # meet the close and the user a 503: the engine keeps idle connections far longer, so the client
        # always closes first.
        keep = {"timeout_keep_alive": ENGINE_KEEP_ALIVE_S}
        if uds:
            serve_asgi(asgi, sockets=[unix_socket(Path(uds))], **keep)
        else:
            assert sock is not None
            serve_asgi(asgi, sockets=[sock], **keep)
    finally:
        app.close()
        if uds:
            Path(uds).unlink(missing_ok=True)
