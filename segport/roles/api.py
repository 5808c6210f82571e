"""An API process: the public HTTP API (and the console). It never opens an embedded engine nor writes result
files: profile reads and imports go to the engine process (a :class:`RemoteEngine`), and a submit or a cancel
reaches the engine's workers through their link.

`segport serve` forks these from its supervisor (segport/processes.py); `segport api` runs one on its own.
"""

from __future__ import annotations

import socket

from fastapi import FastAPI

from segport.app import App, open_stores
from segport.engine.base import ProfileAccess
from segport.engine.client import Bulkhead, EngineClient, RemoteEngine, RemoteWorkers, wait_for_engine
from segport.http.protocol import raise_descriptor_limit, uvicorn_options
from segport.roles.parts import open_engine, open_results, shared_engine
from segport.roles.public import public_app
from segport.roles.sockets import serve_asgi
from segport.settings import Settings
from segport.wake import UnlinkedWorkers, WorkerLink


def build(settings: Settings, *, migrate: bool = True) -> App:
    """The parts of an API process: the metadata stores, the result store (for downloads), and the engine as
    far as this process may use it: the engine process's, at ``engine_url`` (every call answers 503 when
    none is set), or a shared engine server it opens itself (:func:`segport.roles.parts.shared_engine`)."""
    stores = open_stores(settings, migrate=migrate)
    engine, link = _engine_and_link(settings)
    return App.assemble(stores, engine, open_results(settings), link)


def bulkhead(settings: Settings) -> Bulkhead:
    """The bounds of this process's engine calls: at most half of its request threads wait for the engine, so
    the other half always serves submits, polls, cancels and downloads."""
    calls = max(1, min(settings.engine_max_calls, settings.api_threads // 2))
    return Bulkhead(calls, settings.engine_probe_interval_s, settings.engine_probe_deadline_s)


def _engine_and_link(settings: Settings) -> tuple[ProfileAccess, WorkerLink]:
    if shared_engine(settings):
        # the workers of a shared engine still run elsewhere (`segport worker`): reach them there if told where
        link = RemoteWorkers(EngineClient(settings.engine_url)) if settings.engine_url else UnlinkedWorkers()
        return open_engine(settings), link
    client = EngineClient(settings.engine_url, bulkhead(settings))
    return RemoteEngine(client), RemoteWorkers(client)


def create_app(app: App) -> FastAPI:
    """The API process's ASGI app: the public API alone (its workers run in the engine process)."""
    return public_app(app)


def run(settings: Settings, sock: socket.socket, *, wait_for_engine_s: float = 0.0, prepared: bool = False) -> None:
    """Serve the public HTTP API on ``sock``.

    ``prepared``: `segport serve` has already migrated the metadata database and checked the result store,
    once, before forking; its children skip both. With ``wait_for_engine_s`` it first waits (at most that long)
    for the engine to answer, so the first requests queue in the socket's backlog instead of getting 503s while
    `segport serve` starts."""
    raise_descriptor_limit(settings.max_connections + 512)  # the connections, plus the files and pools it opens
    app = build(settings, migrate=not prepared)
    try:
        if not prepared:  # a missing bucket or refused credentials: one line now, not a failed download
            app.results.check()
        if wait_for_engine_s and settings.engine_url:
            wait_for_engine(settings.engine_url, wait_for_engine_s)
        serve_asgi(create_app(app), sockets=[sock], **uvicorn_options(settings))
    finally:
        app.close()
