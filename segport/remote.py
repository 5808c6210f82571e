"""Talking to a running `segport serve` for its data dir.

DuckDB lets one process write its file, and the server owns it while it runs. So the server announces
itself in ``<data dir>/server.json`` (URL and pid; written at startup, removed at shutdown) and the CLI,
finding a live server there, sends imports, catalogue changes and segment definitions to its admin API
instead of opening the file. Token: ``SEGPORT_ADMIN_TOKEN`` if set; otherwise the CLI (which can read the
metadata store of the same data dir) makes a one-off admin token and deletes it afterwards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from segport import errors
from segport.app import Stores, open_stores
from segport.settings import Settings

SERVER_FILE = "server.json"


def write_server_file(settings: Settings) -> None:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    info = {"url": f"http://{host}:{settings.port}", "pid": os.getpid()}
    path = settings.data_dir / SERVER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(path)


def remove_server_file(settings: Settings) -> None:
    path = settings.data_dir / SERVER_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_server(data_dir: Path) -> str | None:
    """The URL of the live server that owns ``data_dir``, or None (a stale file of a dead pid is ignored)."""
    try:
        info = json.loads((data_dir / SERVER_FILE).read_text(encoding="utf-8"))
        pid, url = int(info["pid"]), str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return url


# the admin API names its query parameters (?match=); a CLI user typed the flags of the same name (--match)
_API_PARAMETER = re.compile(r"\?(match|format|identity|key|name|description|scheduler)=")


class AdminClient:
    """The admin API over HTTP; errors come back as :mod:`segport.errors` types with the server's message."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 3600.0) -> None:
        self.http = httpx.Client(
            base_url=base_url + "/admin/v1",
            timeout=httpx.Timeout(timeout_s, connect=10),
            headers={"Authorization": f"Bearer {token}"},
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise errors.SegportError(f"cannot reach the running server at {self.http.base_url}: {exc}") from None
        if r.status_code >= 400:
            wire = errors.decode_error(r.content)
            message = _API_PARAMETER.sub(lambda m: f"--{m.group(1)} ", wire.message or f"HTTP {r.status_code}")
            # the class by status (the CLI's exit codes follow it), the server's precise code kept
            raise errors.class_of_status(r.status_code)(message, code=wire.code or "HTTP_ERROR")
        return r.json() if r.content else None

    def upload(self, path: str, file: Path, params: dict[str, Any]) -> Any:
        """POST a file as the raw body, streamed from disk."""
        with open(file, "rb") as f:
            return self.call(
                "POST",
                path,
                params=params,
                content=_chunks(f),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(file.stat().st_size)},
            )


def _chunks(f: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


@contextmanager
def admin_client(settings: Settings, url: str) -> Iterator[AdminClient]:
    """A client for the server at ``url``, with ``SEGPORT_ADMIN_TOKEN`` or a one-off admin token."""
    token = os.environ.get("SEGPORT_ADMIN_TOKEN", "")
    one_off: int | None = None
    stores = None
    if not token:
        stores = open_stores(settings)
        one_off, token = stores.meta.create_token([], admin=True, label="cli one-off")
    client = AdminClient(url, token)
    try:
        yield client
    finally:
        client.close()
        if stores is not None and one_off is not None:
            _delete_token(stores, one_off)
            stores.close()


def _delete_token(stores: Stores, token_id: int) -> None:
    from sqlalchemy import delete

    from segport.store.models import Token, TokenProject

    with stores.db.write() as s:
        s.execute(delete(TokenProject).where(TokenProject.token_id == token_id))
        s.execute(delete(Token).where(Token.id == token_id))
