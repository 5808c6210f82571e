"""The public HTTP surface an API process serves: the API's routers, the console, and the guards at the edge.

It is built here, above both :mod:`segport.http` and :mod:`segport.console` (the console uses the API's file
answers and job views, so neither package imports the other's composition).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext

import anyio.to_thread
from fastapi import FastAPI

from segport import __version__, console
from segport.app import App
from segport.http import (
    admin,
    admin_datasources,
    admin_events,
    admin_tags,
    collect,
    downloads,
    errors,
    events,
    exports,
    jobs,
    openapi,
    segments,
    tags,
    users,
)
from segport.http.guard import EdgeGuard
from segport.http.limits import BodyLimit, RequestLineLimit

DESCRIPTION = """
Export the members of a user segment as CSV or JSON Lines, wire-compatible with GrowingIO's OpenAPI
(v2.9, 项目-群体画像用户列表下载). Authenticate with `Authorization: Bearer <token>`.
"""


def public_app(app: App, *, background: Callable[[], AbstractContextManager[None]] = nullcontext) -> FastAPI:
    """The ASGI app of the public API over ``app``; ``background`` runs for as long as the app is up (the
    export workers of the one-process form: :func:`segport.roles.inline.create_app`)."""

    @asynccontextmanager
    async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
        # the bound the metadata pool is sized from (Settings.resolved_pool_size)
        anyio.to_thread.current_default_thread_limiter().total_tokens = app.settings.api_threads
        with background():
            yield

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
    openapi.install(api)
    for routes in (
        exports,
        jobs,
        downloads,
        segments,
        tags,
        events,
        users,
        admin,
        admin_events,
        admin_tags,
        admin_datasources,
        collect,
    ):  # events before users: E11's path
        api.include_router(routes.router)
    console.install(api, app)
    api.router.redirect_slashes = False  # EdgeGuard drops a trailing slash instead: the same answer, no 307
    api.add_middleware(collect.CollectFastPath)  # inside the limits and the guard below, ahead of the routes
    api.add_middleware(
        BodyLimit,
        max_bytes=app.settings.max_body_bytes,
        upload_bytes=app.settings.max_upload_bytes,
        is_upload=admin.is_upload,
    )
    api.add_middleware(RequestLineLimit)
    api.add_middleware(
        EdgeGuard,
        read_timeout_s=app.settings.request_read_timeout_s,
        is_upload=admin.is_upload,
        native_head=frozenset({"/download"}),  # answers HEAD itself, without opening the file
    )
    return api
