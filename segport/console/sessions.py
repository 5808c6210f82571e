"""Console sessions: a signed-in browser holds a random session id in an HttpOnly cookie; the metadata store
keeps its hash, the token it stands for and the session's CSRF secret.

The token itself is never stored in the browser: it is checked once at sign-in and from then on the session
row points at the token's row. Every request reads the token again (revoked? which projects?), so revoking a
token from the CLI or the admin API signs its console sessions out at once, on every API process.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, delete, select

from segport.store.db import Database
from segport.store.meta import MetaStore, Principal
from segport.store.models import ConsoleSession, Token, TokenProject, utcnow

_SESSIONS, _TOKENS, _TOKEN_PROJECTS = ConsoleSession.__table__, Token.__table__, TokenProject.__table__
_LOOKUP = (
    select(_SESSIONS.c.csrf, _TOKENS.c.id, _TOKENS.c.admin, _TOKEN_PROJECTS.c.project_id)
    .select_from(
        _SESSIONS.join(_TOKENS, _TOKENS.c.id == _SESSIONS.c.token_id).outerjoin(
            _TOKEN_PROJECTS, _TOKEN_PROJECTS.c.token_id == _TOKENS.c.id
        )
    )
    .where(
        _SESSIONS.c.id_hash == bindparam("id_hash"),
        _SESSIONS.c.expires_at > bindparam("now"),
        _TOKENS.c.revoked_at.is_(None),
    )
)


@dataclass(frozen=True, slots=True)
class Session:
    """A live console session: who it acts for, and the CSRF secret its forms must carry back."""

    who: Principal
    csrf: str


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, db: Database, meta: MetaStore, ttl_s: int) -> None:
        self.db = db
        self.meta = meta
        self.ttl_s = ttl_s

    def sign_in(self, token: str) -> tuple[str, Session]:
        """Check ``token`` like the API does (:class:`segport.errors.Unauthorized` if it is not valid) and
        open a session for it: (the session id for the cookie, the session)."""
        who = self.meta.authenticate(token)
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utcnow()
        with self.db.write() as s:
            # signing in is rare: a good moment to forget sessions that ran out
            s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
            s.add(
                ConsoleSession(
                    id_hash=_digest(session_id),
                    token_id=who.token_id,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.ttl_s),
                )
            )
        return session_id, Session(who, csrf)

    def get(self, session_id: str | None) -> Session | None:
        """The live session of cookie value ``session_id``, or ``None`` (unknown, expired, token revoked)."""
        if not session_id or len(session_id) > 100:
            return None
        with self.db.connect() as conn:
            rows = conn.execute(_LOOKUP, {"id_hash": _digest(session_id), "now": utcnow()}).all()
        if not rows:
            return None
        csrf, token_id, admin, _ = rows[0]
        return Session(Principal(token_id, bool(admin), frozenset(r[3] for r in rows if r[3] is not None)), csrf)

    def sign_out(self, session_id: str) -> None:
        with self.db.write() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == _digest(session_id)))
