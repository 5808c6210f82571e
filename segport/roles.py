"""The two halves of the service as functions: the API process and the engine process.

`segport api` and `segport worker --listen/--uds` call them in a fresh process; `segport serve` calls them in
children forked from the supervisor (segport/processes.py), which have every module imported already.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from segport.app import build
from segport.errors import InvalidParameter
from segport.settings import Settings

log = logging.getLogger("segport.roles")
ENGINE_START_S = 120.0  # longer than any engine start (it opens the DuckDB file, replaying its WAL)


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, inheritable TCP socket."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_asgi(asgi: Any, *, sockets: list[socket.socket] | None = None, uds: str | None = None) -> None:
    """Run an ASGI app with uvicorn until SIGTERM/SIGINT (uvicorn's own handlers) ends it."""
    import uvicorn

    config = uvicorn.Config(asgi, log_level="info", access_log=False, timeout_graceful_shutdown=5, uds=uds)
    uvicorn.Server(config).run(sockets=sockets)


def run_api(settings: Settings, sock: socket.socket, *, wait_for_engine_s: float = 0.0) -> None:
    """An API process: the public HTTP API on ``sock``; profile reads and imports go to the engine process.

    With ``wait_for_engine_s`` it first waits (at most that long) for the engine to answer, so the first
    requests queue in the socket's backlog instead of getting 503s while `segport serve` starts."""
    from segport.http.server import create_app
    from segport.processes import wait_for_engine

    app = build(settings, api_process=True)
    try:
        if wait_for_engine_s and settings.engine_url:
            wait_for_engine(settings.engine_url, wait_for_engine_s)
        serve_asgi(create_app(app, run_workers=False), sockets=[sock])
    finally:
        app.close()


def run_engine(settings: Settings, *, uds: str | None = None, listen: str | None = None) -> None:
    """The engine process: owns the engine, runs workers, janitor and daily recompute, serves the internal
    API on the Unix socket ``uds`` or on ``listen`` (HOST:PORT)."""
    from segport.engine.internal import create_engine_app

    sock = None
    if listen:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidParameter(f"--listen wants HOST:PORT, not {listen!r}")
        sock = listen_socket(host.strip("[]"), int(port))
    app = build(settings)
    try:
        asgi = create_engine_app(app, run_workers=settings.serve_workers)
        if uds:
            Path(uds).unlink(missing_ok=True)  # left by an engine process that was killed
            serve_asgi(asgi, uds=uds)
        else:
            serve_asgi(asgi, sockets=[sock] if sock else None)
    finally:
        app.close()
