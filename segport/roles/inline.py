"""The one-process form: the public API and the engine with its workers in a single process. The tests and the
bench build it, and so do the CLI's own commands on a data dir (imports, segments, `segport demo`).

Its parts are the engine process's (it owns the engine); its ASGI app is the public API's, with the export
workers running in the background while it is up.
"""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from segport.app import EngineApp
from segport.roles import engine
from segport.roles.background import background_work
from segport.roles.public import public_app
from segport.settings import Settings


def build(settings: Settings | None = None) -> EngineApp:
    """Open (and migrate) the data dir named by ``settings`` and compose every part, the engine included."""
    return engine.build(settings or Settings())


def create_app(app: EngineApp, *, run_workers: bool | None = None) -> FastAPI:
    """The public API over ``app``. With ``run_workers`` (default: the ``serve_workers`` setting) export workers
    run inside this process for as long as the app is up."""
    workers = app.settings.serve_workers if run_workers is None else run_workers
    return public_app(app, background=partial(background_work, app, workers=workers, daily=False))
