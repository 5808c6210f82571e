"""The engine process's internal API: one ``POST /engine/<method>`` per :class:`ProfileEngine` call, plus
``wake`` (a job was queued), ``interrupt`` (a running job was cancelled) and ``health``.

Served by uvicorn on the Unix socket ``<data dir>/engine.sock`` (``segport serve``) or on the address of
``segport worker --listen``. It is not a public API: it trusts its callers (they run segment rules the
engine compiles itself, but may read any project), so it listens on a socket only this user can open, or on
an address the operator keeps private. Errors are rendered in the one error shape
(segport/http/errors.py), which :mod:`segport.engine.remote` turns back into the same exception classes.

The process also runs the export workers, the janitor and the daily recompute (see :func:`create_engine_app`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from segport.app import App
from segport.domain.keys import Catalog
from segport.engine.base import Target
from segport.engine.client import entry_from_json
from segport.http import errors

log = logging.getLogger("segport.engine.internal")


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
    engine = app.engine

    async def body(request: Request) -> dict[str, Any]:
        data: dict[str, Any] = await request.json()
        return data

    def catalog(data: dict[str, Any]) -> Catalog:
        return Catalog([entry_from_json(e) for e in data["catalog"]])

    def target(data: dict[str, Any]) -> Target:
        return Target(data["target"]["kind"], data["target"]["key"])

    def definitions(project: str, keys: list[str]) -> list[Any]:
        return [app.data.definition_of(project, k) for k in keys]

    @api.post("/engine/health")
    def health() -> dict[str, Any]:
        return {"pid": os.getpid(), "workers": run_workers}

    @api.post("/engine/wake")
    def wake() -> dict[str, Any]:
        app.wake.set()
        return {}

    @api.post("/engine/interrupt")
    async def interrupt(request: Request) -> dict[str, Any]:
        d = await body(request)
        return {"stopped": app.runner.stop_running(str(d["job"]), str(d.get("reason") or "cancelled"))}

    @api.post("/engine/ensure_project")
    async def ensure_project(request: Request) -> None:
        d = await body(request)
        await run_in_threadpool(engine.ensure_project, d["project"], catalog(d))

    @api.post("/engine/drop_column")
    async def drop_column(request: Request) -> None:
        d = await body(request)
        await run_in_threadpool(engine.drop_column, d["project"], d["key"])

    @api.post("/engine/import_users")
    async def import_users(request: Request) -> dict[str, Any]:
        d = await body(request)

        def run() -> dict[str, Any]:
            recompute = definitions(d["project"], d["recompute"])
            report = engine.import_users(
                d["project"], catalog(d), Path(d["path"]), d["format"], d["match"], recompute, None
            )
            return asdict(report)  # every field, as RemoteEngine rebuilds it (ImportReport(**data))

        return await run_in_threadpool(run)

    @api.post("/engine/load_member_ids")
    async def load_member_ids(request: Request) -> int:
        d = await body(request)
        return await run_in_threadpool(engine.load_member_ids, d["project"], d["key"], Path(d["path"]))

    @api.post("/engine/compute_segment")
    async def compute_segment(request: Request) -> dict[str, Any]:
        d = await body(request)

        def run() -> dict[str, Any]:
            result = engine.compute_segment(d["project"], definitions(d["project"], [d["key"]])[0])
            return asdict(result)

        return await run_in_threadpool(run)

    @api.post("/engine/drop_segment")
    async def drop_segment(request: Request) -> None:
        d = await body(request)
        await run_in_threadpool(engine.drop_segment, d["project"], d["key"])

    @api.post("/engine/data_version")
    async def data_version(request: Request) -> int:
        d = await body(request)
        return await run_in_threadpool(engine.data_version, d["project"])

    @api.post("/engine/count")
    async def count(request: Request) -> int:
        d = await body(request)
        return await run_in_threadpool(engine.count, d["project"], target(d))

    @api.post("/engine/members_page")
    async def members_page(request: Request) -> dict[str, Any]:
        d = await body(request)
        columns = [entry_from_json(c) for c in d["columns"]]
        page = await run_in_threadpool(
            engine.members_page, d["project"], target(d), columns, int(d["limit"]), int(d["offset"])
        )
        return {"total": page.total, "rows": page.rows}

    @api.post("/engine/lookup_user")
    async def lookup_user(request: Request) -> dict[str, Any] | None:
        d = await body(request)
        return await run_in_threadpool(
            engine.lookup_user, d["project"], catalog(d), entry_from_json(d["identity"]), d["value"]
        )

    @api.post("/engine/tag_counts")
    async def tag_counts(request: Request) -> dict[str, int]:
        d = await body(request)
        return await run_in_threadpool(engine.tag_counts, d["project"], [entry_from_json(t) for t in d["tags"]])

    return api
