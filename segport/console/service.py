"""What the console does, in terms of the services the API uses (never the engine directly).

Each method takes the signed-in :class:`Principal` and goes through the same checks the API makes, so a
project the token does not see is a 404 here too, an export is refused for the same reasons with the same
codes, and a download resolves a job by name exactly like ``/download``. When the API runs in processes of its
own with the engine elsewhere, these services are what those processes have: so is the console.
"""

from __future__ import annotations

from dataclasses import dataclass

from segport.app import App
from segport.domain.jobs import TargetKind
from segport.domain.keys import Catalog, CatalogEntry, KeyKind
from segport.services.exports import Download, ExportRequest
from segport.services.queries import MAX_PAGE_PROPERTIES, UserPage
from segport.services.tags import TagService, TagView
from segport.store.event_catalog import AttributeInfo, EventCatalog, EventName
from segport.store.events import DataSource, DataSources
from segport.store.meta import Principal
from segport.store.models import JobRow, Project, SegmentRow

PREVIEW_ROWS = 20
RECENT_JOBS = 50


@dataclass(frozen=True, slots=True)
class CatalogGroups:
    """The catalogue as the property picker shows it: identities, user properties, tags."""

    identities: list[CatalogEntry]
    properties: list[CatalogEntry]
    tags: list[CatalogEntry]

    @classmethod
    def of(cls, catalog: Catalog) -> CatalogGroups:
        return cls(catalog.of_kind(KeyKind.IDENTITY), catalog.of_kind(KeyKind.PROPERTY), catalog.of_kind(KeyKind.TAG))


class ConsoleService:
    """Cheap to build per request: it holds references to the app's services."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.exports = app.exports
        self.queries = app.queries

    def projects(self, who: Principal) -> list[Project]:
        return [p for p in self.app.meta.projects() if who.can_see(p.id)]

    def project(self, who: Principal, project_id: str) -> Project:
        return self.queries.project(who, project_id)

    def segments(self, who: Principal, project_id: str, search: str = "") -> list[SegmentRow]:
        self.queries.project(who, project_id)
        rows, _ = self.app.meta.segments(project_id)
        needle = search.strip().casefold()
        if needle:
            rows = [r for r in rows if needle in r.name.casefold() or needle in r.key.casefold()]
        return rows

    def segment(self, who: Principal, project_id: str, key: str) -> SegmentRow:
        self.queries.project(who, project_id)
        return self.app.meta.segment(project_id, key)

    def catalog(self, who: Principal, project_id: str) -> CatalogGroups:
        self.queries.project(who, project_id)
        return CatalogGroups.of(self.app.meta.catalog(project_id))

    def tags(self, who: Principal, project_id: str) -> list[TagView]:
        """Every tag of the project (imported and computed), with a computed tag's definition and detector."""
        self.queries.project(who, project_id)
        return TagService(self.app.data).views(project_id)

    def tag(self, who: Principal, project_id: str, key: str) -> TagView:
        self.queries.project(who, project_id)
        return TagService(self.app.data).view(project_id, key)

    def preview(self, who: Principal, project_id: str, key: str, properties: list[str]) -> UserPage:
        """The first members of the segment (the API's segment users page), with at most the first 20 of
        the chosen keys: the page's own limit."""
        return self.queries.segment_users(who, project_id, key, properties[:MAX_PAGE_PROPERTIES], PREVIEW_ROWS, 0)

    def export(self, who: Principal, project_id: str, key: str, request: ExportRequest) -> JobRow:
        return self.exports.submit(who, project_id, TargetKind.SEGMENT, key, request)

    def events(
        self, who: Principal, project_id: str
    ) -> tuple[list[EventName], list[AttributeInfo], str | None, list[DataSource]]:
        """The project's event names, attribute catalogue, collection key and data sources."""
        self.project(who, project_id)
        catalog, sources = EventCatalog(self.app.meta), DataSources(self.app.meta)
        return (
            catalog.names(project_id),
            catalog.attribute_rows(project_id),
            sources.collect_key(project_id),
            sources.list(project_id),
        )

    def jobs(self, who: Principal, project_id: str) -> list[JobRow]:
        self.queries.project(who, project_id)
        return self.app.queue.list(project_id, limit=RECENT_JOBS)

    def job(self, who: Principal, project_id: str, job_id: str) -> JobRow:
        return self.exports.job(who, job_id, project_id)

    def cancel(self, who: Principal, project_id: str, job_id: str) -> JobRow:
        self.exports.job(who, job_id, project_id)  # another project's job: 404 before anything changes
        return self.exports.cancel(who, job_id)

    def download(self, who: Principal, file: str) -> Download:
        return self.exports.download(who, file)

    def uris(self, row: JobRow) -> list[str]:
        return self.exports.uris(row)
