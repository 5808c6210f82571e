"""Building the FastAPI application around an :class:`segport.app.App`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from segport import __version__, console
from segport.app import App
from segport.http import admin, errors, jobs
from segport.http import exports as seed
from segport.http import segments as family
from segport.http import users as lookup
from segport.http.guard import EdgeGuard
from segport.http.limits import RequestLineLimit

DESCRIPTION = """
Export the members of a user segment as CSV or JSON Lines, wire-compatible with GrowingIO's OpenAPI
(v2.9, 项目-群体画像用户列表下载). Authenticate with `Authorization: Bearer <token>`.
"""


def create_app(app: App, *, run_workers: bool | None = None, announce: bool = False) -> FastAPI:
    """The ASGI app. With ``run_workers`` (default: the ``serve_workers`` setting) export workers run
    inside this process for as long as the app is up. With ``announce`` (``segport serve``) the app writes
    ``server.json`` in the data dir so the CLI sends its writes here, and recomputes DAILY segments daily."""
    run_workers = app.settings.serve_workers if run_workers is None else run_workers

    @asynccontextmanager
    async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
        # the bound the metadata pool is sized from (Settings.resolved_pool_size)
        anyio.to_thread.current_default_thread_limiter().total_tokens = app.settings.api_threads
        worker = None
        if run_workers:
            from segport.worker import Worker

            worker = Worker(app)
            worker.start()
        daily = None
        if announce:
            from segport.remote import remove_server_file, write_server_file
            from segport.scheduler import DailyRecompute

            admin.sweep_uploads(app.settings.data_dir)
            write_server_file(app.settings)
            daily = DailyRecompute(app.data, app.settings.recompute_interval_s)
            daily.start()
        try:
            yield
        finally:
            if daily is not None:
                daily.stop()
                remove_server_file(app.settings)
            if worker is not None:
                worker.stop()

    api = FastAPI(
        title="segport",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by the console package, with local assets
        redoc_url=None,
    )
    api.state.segport = app
    errors.install(api)
    api.include_router(seed.router)
    api.include_router(family.router)
    api.include_router(lookup.router)
    api.include_router(jobs.router)
    api.include_router(admin.router)
    console.install(api, app)
    api.router.redirect_slashes = False  # EdgeGuard drops a trailing slash instead: the same answer, no 307
    api.add_middleware(BodyLimit, max_bytes=app.settings.max_body_bytes, upload_bytes=app.settings.max_upload_bytes)
    api.add_middleware(RequestLineLimit)
    api.add_middleware(
        EdgeGuard,
        read_timeout_s=app.settings.request_read_timeout_s,
        is_upload=admin.is_upload,
        native_head=frozenset({"/download"}),  # answers HEAD itself, without opening the file
    )
    return api


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with HTTP 413, whether or not they declare a length.

    Admin uploads (users files, id lists) are bounded by ``upload_bytes`` instead; they are streamed to disk."""

    def __init__(self, app: Any, max_bytes: int, upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes or max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if admin.is_upload(scope.get("path", "")) else self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _reject(scope, receive, send, limit)
                    return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _reject(scope, receive, send, limit)


class _TooLarge(Exception):
    pass


async def _reject(scope: dict[str, Any], receive: Any, send: Any, limit: int) -> None:
    response = errors.error_response(413, "PAYLOAD_TOO_LARGE", f"request body is larger than {limit} bytes")
    await response(scope, receive, send)
