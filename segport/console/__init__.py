"""The web console at ``/console``: pick a segment and its columns, export, watch the job, download.

Server-rendered (Jinja2) with one small script file, every asset served by segport itself. It calls the same
services as the API (:mod:`segport.console.service`), so every rule and error is the API's.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from segport.app import App
from segport.console import docs
from segport.console.router import router
from segport.console.sessions import SessionStore
from segport.console.web import HERE, PREFIX, SecurityHeaders


def install(api: FastAPI, app: App) -> None:
    """Mount the console, its static files and the offline ``/docs`` and ``/redoc`` on ``api``."""
    api.state.console_sessions = SessionStore(app.db, app.meta, app.settings.console_session_ttl_s)
    api.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    api.include_router(router)
    docs.install(api)
    api.add_middleware(SecurityHeaders)
