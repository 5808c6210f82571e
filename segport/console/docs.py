"""``/docs`` (Swagger UI) and ``/redoc`` served with their assets from this server, so they work offline.

The assets come from the pinned ``fastapi-offline`` package (MIT), which ships builds of Swagger UI
(Apache-2.0) and ReDoc (MIT); only its static folder is used. The pages start the viewers from a script file, not an inline script, so they keep a
Content-Security-Policy without ``'unsafe-inline'`` for scripts.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from segport.console.web import ENV

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_PREFIX = "/docs/static"


def install(api: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets (the app is built with FastAPI's own docs turned off)."""
    api.mount(ASSET_PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return _page("swagger.html", api)

    @api.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return _page("redoc.html", api)


def _page(template: str, api: FastAPI) -> HTMLResponse:
    html = ENV.get_template(template).render(
        title=f"{api.title} API", openapi_url=api.openapi_url or "/openapi.json", assets=ASSET_PREFIX
    )
    return HTMLResponse(html)
