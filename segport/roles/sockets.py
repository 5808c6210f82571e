"""Sockets and the server loop the roles share: a listening TCP socket, a private Unix socket, uvicorn on them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any


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
