"""Who is calling: ``Authorization: Bearer <token>``, or the bare token older GrowingIO docs send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from segport.store.db import Database
from segport.store.meta import Principal

T = TypeVar("T")


def token_from_header(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    return value


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller (401 if none). Every request runs it: see :func:`quick`."""
    app = request.app.state.segport
    return await quick(app.meta.db, app.meta.authenticate, token_from_header(request.headers.get("authorization")))


async def quick(db: Database, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn``, one short indexed read of the metadata database, as cheaply as the database allows.

    On SQLite (WAL: a reader never waits for a writer) the read takes a fraction of a millisecond of CPU, less
    than handing it to a worker thread and back costs, so it runs inline on the event loop. Under 200 polling
    clients those hand-offs, and the GIL switches between 40 threads, were what requests queued on. A
    PostgreSQL read is a network round trip and may wait for a pooled connection: it goes to the thread pool.
    """
    if db.is_sqlite:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


# the authenticated caller, as a handler parameter type: ``def handler(who: Who)``
Who = Annotated[Principal, Depends(principal)]
