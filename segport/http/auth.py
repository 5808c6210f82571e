"""Who is calling: ``Authorization: Bearer <token>``, or the bare token older GrowingIO docs send."""

from __future__ import annotations

from fastapi import Request

from segport.store.meta import Principal


def token_from_header(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    return value


def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller (401 if none)."""
    app = request.app.state.segport
    return app.meta.authenticate(token_from_header(request.headers.get("authorization")))
