"""Use cases of the API family around the export: list segments and tags, page through their members,
look up one user, recompute a segment or recount a tag.

Everything here reads the same stores the export reads: segment definitions in the metadata store, members
from the engine's snapshot. Wire shapes are the HTTP layer's business (``segport.http.family``).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from segport.domain.jobs import TargetKind
from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, KeyKind, canonical_key, identity_column
from segport.engine.base import MembersPage, ProfileAccess, Target
from segport.errors import (
    DetectorBusy,
    ProjectNotFound,
    ProjectRequired,
    TagNotFound,
    TooManyProperties,
    UnknownKey,
)
from segport.services.data import DataService
from segport.services.exports import ExportRequest, ExportService
from segport.services.tags import TagService
from segport.store.meta import MetaStore, Principal
from segport.store.models import CatalogRow, JobRow, Project, SegmentRow, TagDefinitionRow, utcnow
from segport.store.tag_definitions import TagStore

MAX_PAGE_PROPERTIES = 20
RECOMPUTABLE = ("FINISH", "ERROR")
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class TagInfo:
    """A tag of the catalogue with what the tag list shows about it."""

    entry: CatalogEntry
    id: str
    total_users: int
    detected_at: datetime
    created_at: datetime | None
    updated_at: datetime | None
    computed: TagDefinitionRow | None = None  # a tag computed from events: its definition and detector


@dataclass(frozen=True, slots=True)
class UserPage:
    """A page of members plus the columns that were asked for (to split identities from properties)."""

    columns: list[CatalogEntry]
    page: MembersPage


class QueryService:
    """The family's read and recompute use cases. Cheap to build: it only holds references."""

    def __init__(self, meta: MetaStore, engine: ProfileAccess, data: DataService, exports: ExportService) -> None:
        self.meta = meta
        self.engine = engine
        self.data = data
        self.exports = exports

    # --- which project -----------------------------------------------------------------------------
    def project(self, who: Principal, project_id: str | None) -> Project:
        """The project of a project-level path, or for a platform-level path (``None``) the one project
        the token sees. Another project is reported as not found, like everywhere else."""
        if project_id is None:
            visible = [p.id for p in self.meta.projects()] if who.admin else sorted(who.projects)
            if not visible:
                raise ProjectNotFound("this token sees no project")
            if len(visible) > 1:
                shown = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "")
                raise ProjectRequired(
                    f"platform-level paths answer only for a token that sees exactly one project; this token "
                    f"sees {len(visible)} ({shown}): use /v1/api/projects/{{project_ID}}/... instead"
                )
            project_id = visible[0]
        if not who.can_see(project_id):
            raise ProjectNotFound(f"project {project_id!r} not found")
        return self.meta.project(project_id)

    # --- segments ----------------------------------------------------------------------------------
    def segments(self, who: Principal, project_id: str, limit: int, offset: int) -> tuple[list[SegmentRow], int]:
        self.project(who, project_id)
        return self.meta.segments(project_id, limit=limit, offset=offset)

    def segment_users(
        self, who: Principal, project_id: str, key: str, properties: list[str], limit: int, offset: int
    ) -> UserPage:
        self.project(who, project_id)
        self.meta.segment(project_id, key)  # 404 before anything else
        columns = page_columns(properties, self.meta.catalog(project_id))
        return UserPage(columns, self.engine.members_page(project_id, Target("segment", key), columns, limit, offset))

    def recompute_segment(self, who: Principal, project_id: str, key: str) -> str:
        """Recompute a segment's snapshot now (synchronously); only from FINISH or ERROR."""
        self.project(who, project_id)
        blocking = self.meta.start_segment_compute(project_id, key, RECOMPUTABLE)
        if blocking is not None:
            raise DetectorBusy(
                f"segment {key!r} cannot be recomputed while its detector is {blocking} "
                f"(allowed when {' or '.join(RECOMPUTABLE)})"
            )
        result = self.data.recompute_segment(project_id, key)  # a failure is recorded there (detector ERROR)
        return f"segment {key} recomputed: {result.total_users} users"

    # --- tags --------------------------------------------------------------------------------------
    def tags(self, who: Principal, project_id: str | None) -> list[TagInfo]:
        """Every tag of the project's catalogue, in catalogue order, with its live member count (and, for a tag
        computed from events, its definition and detector)."""
        project = self.project(who, project_id)
        rows = {r.key: r for r in self.meta.catalog_rows(project.id, KeyKind.TAG)}
        computed = {r.key: r for r in TagStore(self.meta).all(project.id)}
        entries = self.meta.catalog(project.id).of_kind(KeyKind.TAG)
        now = utcnow()
        counts = self.engine.tag_counts(project.id, entries)
        return [
            TagInfo(
                e,
                tag_id(project.id, e.key),
                counts.get(e.key, 0),
                now,
                _created(rows.get(e.key)),
                _updated(rows.get(e.key)),
                computed.get(e.key),
            )
            for e in entries
        ]

    def tag(self, who: Principal, project_id: str | None, raw: str) -> tuple[Project, CatalogEntry]:
        project = self.project(who, project_id)
        return project, resolve_tag(self.meta.catalog(project.id), raw, project.id)

    def tag_users(
        self, who: Principal, project_id: str | None, raw: str, properties: list[str], limit: int, offset: int
    ) -> UserPage:
        project, tag = self.tag(who, project_id, raw)
        columns = page_columns(properties, self.meta.catalog(project.id))
        return UserPage(columns, self.engine.members_page(project.id, Target("tag", tag.key), columns, limit, offset))

    def export_tag(
        self,
        who: Principal,
        project_id: str | None,
        raw: str,
        req: ExportRequest,
        *,
        abandoned: Callable[[], bool] | None = None,
    ) -> JobRow:
        """Submit a tag export (job name ``DET-...``, file named after the tag) like the seed's export."""
        project, tag = self.tag(who, project_id, raw)
        return self.exports.submit(who, project.id, TargetKind.TAG, tag.key, req, abandoned=abandoned)

    def recount_tag(self, who: Principal, project_id: str | None, raw: str) -> str:
        """A tag's recompute (E15). A tag computed from events is recomputed now, only from FINISH or ERROR (as
        E14); an imported tag is loaded with the profiles and always current, so its members are recounted."""
        project, tag = self.tag(who, project_id, raw)
        tags = TagService(self.data)
        if tags.store.find(project.id, tag.key) is not None:
            result = tags.recompute_if_idle(project.id, tag.key)
            return f"tag {tag.key} recomputed: {result.total_users} users hold a value"
        total = self.engine.count(project.id, Target("tag", tag.key))
        return (
            f"tag {tag.key} recounted: {total} users hold a value "
            "(tags are loaded with the profiles and are always current)"
        )

    # --- one user ----------------------------------------------------------------------------------
    def lookup(
        self, who: Principal, project_id: str | None, identity_key: str, value: str
    ) -> tuple[Catalog, dict[str, Any] | None]:
        """(catalogue, the user's rendered values or ``None``) for ``identity_key`` = ``value``."""
        project = self.project(who, project_id)
        catalog = self.meta.catalog(project.id)
        column = identity_column(identity_key.strip())
        entry = catalog.get(column)
        if entry is None or entry.kind is not KeyKind.IDENTITY:
            known = ", ".join(e.identity for e in catalog.identities()) or "none"
            raise UnknownKey(f"unknown identity key {identity_key!r} in project {project.id} (known: {known})")
        return catalog, self.engine.lookup_user(project.id, catalog, entry, value)


def page_columns(properties: list[str], catalog: Catalog) -> list[CatalogEntry]:
    """The catalogue entries of a page's ``properties[]``: at most 20, canonical (``ids_`` = ``id_``),
    in request order, duplicates and ``gio_id`` dropped; unknown keys are one 400 naming them."""
    distinct = {canonical_key(raw.strip()) for raw in properties} - {GIO_ID}  # counted after dropping
    if len(distinct) > MAX_PAGE_PROPERTIES:
        raise TooManyProperties(
            f"properties[] lists {len(distinct)} distinct keys; a page may ask for at most {MAX_PAGE_PROPERTIES}"
        )
    out: list[CatalogEntry] = []
    unknown: list[str] = []
    for raw in properties:
        key = canonical_key(raw.strip())
        if key == GIO_ID or any(e.key == key for e in out):
            continue
        entry = catalog.get(key)
        if entry is None:
            unknown.append(raw)
        else:
            out.append(entry)
    if unknown:
        raise UnknownKey("unknown keys for this project: " + ", ".join(repr(k) for k in unknown))
    return out


def resolve_tag(catalog: Catalog, raw: str, project_id: str) -> CatalogEntry:
    """A tag by its key, with or without the ``tag_`` prefix (``tag_rfm`` or ``rfm``)."""
    for key in (raw, f"tag_{raw}"):
        entry = catalog.get(key)
        if entry is not None and entry.kind is KeyKind.TAG:
            return entry
    raise TagNotFound(f"tag {raw!r} not found in project {project_id}")


def tag_id(project_id: str, key: str) -> str:
    """A tag's 8-character id, derived from its project and key: stable, and needs no stored column."""
    n = int.from_bytes(hashlib.sha256(f"{project_id}/{key}".encode()).digest()[:8], "big")
    chars = []
    for _ in range(8):
        n, r = divmod(n, len(_ALPHABET))
        chars.append(_ALPHABET[r])
    return "".join(chars)


def _created(row: CatalogRow | None) -> datetime | None:
    return row.created_at if row is not None else None


def _updated(row: CatalogRow | None) -> datetime | None:
    return row.updated_at if row is not None else None
