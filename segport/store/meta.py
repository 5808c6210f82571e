"""Projects, tokens, catalogue and segment definitions in the metadata store."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError

from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.domain.text import display_name_problem
from segport.errors import (
    AlreadyExists,
    Conflict,
    InvalidParameter,
    ProjectNotFound,
    SegmentNotFound,
    TokenNotFound,
    Unauthorized,
)
from segport.store.db import Database
from segport.store.models import CatalogRow, Project, SegmentRow, Token, TokenProject, utcnow

PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9]{8}$")
SEGMENT_KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,100}$")
# DuckDB names (tables users_<project> and m_<project>_<segment>, columns <key>) ignore case: two ids that
# differ only in case would share one table or column, so the second is refused
_CASE_NOTE = "names that differ only in upper/lower case cannot be told apart by the profile engine"


# The hot path (every request authenticates; every submit reads its target) runs these Core statements: the ORM
# costs several times more CPU per query than the query itself, and the API process has one GIL to share.
_TOKENS, _TOKEN_PROJECTS = Token.__table__, TokenProject.__table__
_AUTH = (
    select(_TOKENS.c.id, _TOKENS.c.admin, _TOKENS.c.token_hash, _TOKENS.c.revoked_at, _TOKEN_PROJECTS.c.project_id)
    .select_from(_TOKENS.outerjoin(_TOKEN_PROJECTS, _TOKEN_PROJECTS.c.token_id == _TOKENS.c.id))
    .where(_TOKENS.c.token_hash == bindparam("digest"))
)
_PROJECT = select(Project.__table__).where(Project.__table__.c.id == bindparam("project_id"))
_SEGMENT = select(SegmentRow.__table__.c.key, SegmentRow.__table__.c.name).where(
    SegmentRow.__table__.c.project_id == bindparam("project_id"), SegmentRow.__table__.c.key == bindparam("key")
)
_CATALOG = (
    select(CatalogRow.__table__)
    .where(CatalogRow.__table__.c.project_id == bindparam("project_id"))
    .order_by(CatalogRow.__table__.c.position)
)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's row id, whether it is an admin token, and the projects it may see."""

    token_id: int
    admin: bool
    projects: frozenset[str]

    def can_see(self, project_id: str) -> bool:
        return self.admin or project_id in self.projects


@dataclass(frozen=True, slots=True)
class SegmentRef:
    key: str
    name: str


class MetaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- projects ----------------------------------------------------------------------------------
    def create_project(self, project_id: str, name: str, timezone: str = "Asia/Shanghai") -> Project:
        if not PROJECT_ID_RE.match(project_id):
            raise InvalidParameter(f"project id must be 8 letters or digits, like WlGk4Daj; got {project_id!r}")
        problem = display_name_problem(name)
        if problem:
            raise InvalidParameter(f"project name {name[:40]!r} is refused: {problem}")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidParameter(f"unknown timezone {timezone!r}") from None
        try:
            with self.db.write() as s:
                if s.get(Project, project_id) is not None:
                    raise AlreadyExists(f"project {project_id} already exists")
                twin = s.scalar(select(Project.id).where(func.lower(Project.id) == project_id.lower()))
                if twin is not None:
                    raise AlreadyExists(f"project {twin} already exists; {_CASE_NOTE}")
                row = Project(id=project_id, name=name, timezone=timezone, created_at=utcnow())
                s.add(row)
        except IntegrityError:  # PostgreSQL: created by a concurrent writer after our check
            raise AlreadyExists(f"project {project_id} already exists") from None
        return row

    def project(self, project_id: str) -> Project:
        with self.db.read() as s:
            row = s.get(Project, project_id)
        if row is None:
            raise ProjectNotFound(f"project {project_id!r} not found")
        return row

    def set_data_version(self, project_id: str, version: int) -> None:
        """Mirror the engine's data version of a project (what a submit deduplicates on); the time it
        changed is kept for job results."""
        with self.db.write() as s:
            row = s.get(Project, project_id)
            if row is not None and row.data_version != version:
                row.data_version = version
                row.data_version_at = utcnow()

    def projects(self) -> list[Project]:
        with self.db.read() as s:
            return list(s.scalars(select(Project).order_by(Project.id)))

    # --- tokens ------------------------------------------------------------------------------------
    def create_token(self, projects: list[str], *, admin: bool = False, label: str = "") -> tuple[int, str]:
        """Create a token; the raw value is returned once and only its hash is stored."""
        if not admin and not projects:
            raise InvalidParameter("a project token needs at least one --project")
        for p in projects:
            self.project(p)
        raw = str(uuid.uuid4())
        with self.db.write() as s:
            row = Token(token_hash=hash_token(raw), hint=raw[:8], admin=admin, label=label, created_at=utcnow())
            s.add(row)
            s.flush()
            for p in dict.fromkeys(projects):
                s.add(TokenProject(token_id=row.id, project_id=p))
        return row.id, raw

    def revoke_token(self, token: str) -> None:
        """Revoke by raw token value or by numeric id."""
        with self.db.write() as s:
            if token.isdigit():
                row = s.get(Token, int(token))
            else:
                row = s.scalar(select(Token).where(Token.token_hash == hash_token(token)))
            if row is None:
                raise TokenNotFound("no such token")
            row.revoked_at = row.revoked_at or utcnow()

    def tokens(self) -> list[tuple[Token, list[str]]]:
        with self.db.read() as s:
            rows = list(s.scalars(select(Token).order_by(Token.id)))
            links = s.execute(select(TokenProject.token_id, TokenProject.project_id)).all()
        by_token: dict[int, list[str]] = {}
        for tid, pid in links:
            by_token.setdefault(tid, []).append(pid)
        return [(r, sorted(by_token.get(r.id, []))) for r in rows]

    def authenticate(self, raw: str | None) -> Principal:
        """The caller of token ``raw``: one query (the token and its projects), never cached, so a token
        revoked by any process (the CLI writes the database directly) fails at once."""
        if not raw:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        digest = hash_token(raw)
        with self.db.connect() as conn:
            rows = conn.execute(_AUTH, {"digest": digest}).all()
        if not rows:
            raise Unauthorized("invalid or revoked token")
        token_id, admin, token_hash, revoked_at, _ = rows[0]
        if not hmac.compare_digest(token_hash, digest) or revoked_at is not None:
            raise Unauthorized("invalid or revoked token")
        return Principal(token_id, bool(admin), frozenset(r[4] for r in rows if r[4] is not None))

    def export_target(self, project_id: str, segment_key: str | None) -> tuple[Any, Catalog, SegmentRef | None]:
        """What a submit needs, read in one connection: the project row, its catalogue and (with
        ``segment_key``) the segment. Raises :class:`ProjectNotFound` / :class:`SegmentNotFound`."""
        with self.db.connect(snapshot=True) as conn:
            project = conn.execute(_PROJECT, {"project_id": project_id}).first()
            if project is None:
                raise ProjectNotFound(f"project {project_id!r} not found")
            segment = None
            if segment_key is not None:
                found = conn.execute(_SEGMENT, {"project_id": project_id, "key": segment_key}).first()
                if found is None:
                    raise SegmentNotFound(f"segment {segment_key!r} not found in project {project_id}")
                segment = SegmentRef(found.key, found.name)
            entries = conn.execute(_CATALOG, {"project_id": project_id}).all()
        return project, Catalog([_entry(r) for r in entries]), segment

    # --- catalogue ---------------------------------------------------------------------------------
    def catalog(self, project_id: str) -> Catalog:
        with self.db.read() as s:
            rows = s.scalars(
                select(CatalogRow).where(CatalogRow.project_id == project_id).order_by(CatalogRow.position)
            )
            return Catalog([_entry(r) for r in rows])

    def catalog_rows(self, project_id: str, kind: KeyKind | None = None) -> list[CatalogRow]:
        """The stored catalogue rows (with their timestamps), in catalogue order."""
        with self.db.read() as s:
            q = select(CatalogRow).where(CatalogRow.project_id == project_id).order_by(CatalogRow.position)
            if kind is not None:
                q = q.where(CatalogRow.kind == kind.value)
            return list(s.scalars(q))

    def upsert_catalog(self, project_id: str, entries: list[CatalogEntry]) -> tuple[int, int]:
        """Add or update entries (a key's kind, type and multi flag never change). Returns (added, updated)."""
        self.project(project_id)
        added = updated = 0
        with self.db.write() as s:
            pos = s.scalar(select(func.max(CatalogRow.position)).where(CatalogRow.project_id == project_id)) or 0
            folded = {
                k.lower(): k for k in s.scalars(select(CatalogRow.key).where(CatalogRow.project_id == project_id))
            }
            for e in entries:
                row = s.get(CatalogRow, (project_id, e.key))
                if row is None:
                    twin = folded.setdefault(e.key.lower(), e.key)
                    if twin != e.key:
                        raise InvalidParameter(f"key {e.key!r} clashes with the key {twin!r}; {_CASE_NOTE}")
                    pos += 1
                    s.add(
                        CatalogRow(
                            project_id=project_id,
                            key=e.key,
                            kind=e.kind.value,
                            name=e.name,
                            type=e.type.value,
                            multi=e.multi,
                            description=e.description,
                            position=pos,
                            created_at=utcnow(),
                            updated_at=utcnow(),
                        )
                    )
                    added += 1
                    continue
                if (row.type, row.multi) != (e.type.value, e.multi):
                    raise Conflict(  # the request is well formed: the stored key is what it conflicts with
                        f"key {e.key!r} is already {row.type}{'[]' if row.multi else ''}; its type cannot change"
                    )
                if (row.name, row.description) != (e.name, e.description):
                    row.name, row.description, row.updated_at = e.name, e.description, utcnow()
                    updated += 1
        return added, updated

    def delete_catalog_key(self, project_id: str, key: str) -> None:
        with self.db.write() as s:
            s.execute(delete(CatalogRow).where(CatalogRow.project_id == project_id, CatalogRow.key == key))

    # --- segments ----------------------------------------------------------------------------------
    def add_segment(self, row: SegmentRow) -> SegmentRow:
        if not SEGMENT_KEY_RE.match(row.key):
            raise InvalidParameter(f"segment key must be 1-100 letters, digits or '_'; got {row.key!r}")
        try:
            with self.db.write() as s:
                if s.get(SegmentRow, (row.project_id, row.key)) is not None:
                    raise AlreadyExists(f"segment {row.key!r} already exists in project {row.project_id}")
                twin = s.scalar(
                    select(SegmentRow.key).where(
                        SegmentRow.project_id == row.project_id, func.lower(SegmentRow.key) == row.key.lower()
                    )
                )
                if twin is not None:
                    raise AlreadyExists(f"segment {twin!r} already exists in project {row.project_id}; {_CASE_NOTE}")
                s.add(row)
        except IntegrityError:  # PostgreSQL: created by a concurrent writer after our check
            raise AlreadyExists(f"segment {row.key!r} already exists in project {row.project_id}") from None
        return row

    def segment(self, project_id: str, key: str) -> SegmentRow:
        with self.db.read() as s:
            row = s.get(SegmentRow, (project_id, key))
        if row is None:
            raise SegmentNotFound(f"segment {key!r} not found in project {project_id}")
        return row

    def segments(self, project_id: str, *, limit: int | None = None, offset: int = 0) -> tuple[list[SegmentRow], int]:
        with self.db.read() as s:
            total = s.scalar(select(func.count()).select_from(SegmentRow).where(SegmentRow.project_id == project_id))
            q = (
                select(SegmentRow)
                .where(SegmentRow.project_id == project_id)
                .order_by(SegmentRow.created_at, SegmentRow.key)
            )
            if limit is not None:
                q = q.limit(limit).offset(offset)
            return list(s.scalars(q)), int(total or 0)

    def update_segment(self, project_id: str, key: str, **fields: Any) -> SegmentRow:
        with self.db.write() as s:
            row = s.get(SegmentRow, (project_id, key))
            if row is None:
                raise SegmentNotFound(f"segment {key!r} not found in project {project_id}")
            for name, value in fields.items():
                setattr(row, name, value)
        return row

    def start_segment_compute(self, project_id: str, key: str, allowed: tuple[str, ...]) -> str | None:
        """Set the detector to RUNNING if its stage is one of ``allowed``, in one write transaction.

        Returns ``None`` when it was set, else the stage that prevented it (so two recompute requests
        cannot both start).
        """
        with self.db.write() as s:
            row = s.get(SegmentRow, (project_id, key))
            if row is None:
                raise SegmentNotFound(f"segment {key!r} not found in project {project_id}")
            if row.detector_stage not in allowed:
                return row.detector_stage
            row.detector_stage = "RUNNING"
        return None

    def delete_segment(self, project_id: str, key: str) -> None:
        with self.db.write() as s:
            row = s.get(SegmentRow, (project_id, key))
            if row is None:
                raise SegmentNotFound(f"segment {key!r} not found in project {project_id}")
            s.delete(row)


def _entry(r: Any) -> CatalogEntry:
    """A catalogue entry from a :class:`CatalogRow` or a Core row of its table."""
    return CatalogEntry(r.key, KeyKind(r.kind), r.name, ValueType(r.type), bool(r.multi), r.description)


def segment_rule(row: SegmentRow) -> Any:
    """A segment's rule tree as stored (``None`` for an id-list segment)."""
    return json.loads(row.rule) if row.rule else None


def iso_ms(value: datetime | None) -> str | None:
    """ISO-8601 UTC with milliseconds, as GrowingIO writes times: ``2022-05-24T01:36:58.534Z``."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
