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
ENGINE_KEEP_ALIVE_S = 300  # idle connections from API processes: theirs expire after 5 s, so they close first


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


def unix_socket(path: Path) -> socket.socket:
    """A listening Unix socket only this user may connect to (uvicorn's own ``uds=`` makes it 0666, and
    the internal API answers any project's profile reads)."""
    import os

    path.unlink(missing_ok=True)  # left by an engine process that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(2048)
    return sock


def serve_asgi(asgi: Any, *, sockets: list[socket.socket], **options: Any) -> None:
    """Run an ASGI app with uvicorn until SIGTERM/SIGINT (uvicorn's own handlers) ends it. ``options`` go to
    ``uvicorn.Config`` (the public API passes the bounds on slow and idle clients: ``uvicorn_options``)."""
    import uvicorn

    config = uvicorn.Config(asgi, log_level="info", access_log=False, timeout_graceful_shutdown=5, **options)
    uvicorn.Server(config).run(sockets=sockets)


def run_api(settings: Settings, sock: socket.socket, *, wait_for_engine_s: float = 0.0, prepared: bool = False) -> None:
    """An API process: the public HTTP API on ``sock``; profile reads and imports go to the engine process.

    ``prepared``: `segport serve` has already migrated the metadata database and checked the result store,
    once, before forking; its children skip both. With ``wait_for_engine_s`` it first waits (at most that long) for the engine to answer, so the first
    requests queue in the socket's backlog instead of getting 503s while `segport serve` starts."""
    from segport.engine.client import wait_for_engine
    from segport.http.protocol import raise_descriptor_limit, uvicorn_options
    from segport.http.server import create_app

    raise_descriptor_limit(settings.max_connections + 512)  # the connections, plus the files and pools it opens

    app = build(settings, api_process=True, migrate=not prepared)
    try:
        if not prepared:  # a missing bucket or refused credentials: one line now, not a failed download
            app.results.check()
        if wait_for_engine_s and settings.engine_url:
            wait_for_engine(settings.engine_url, wait_for_engine_s)
        serve_asgi(create_app(app, run_workers=False), sockets=[sock], **uvicorn_options(settings))
    finally:
        app.close()


def run_engine(
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
    ``prepared`` as in :func:`run_api`."""
    import os

    from segport.engine.server import create_engine_app

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
