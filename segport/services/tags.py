"""Tags computed from events: define one (checked against the event catalogue, nothing stored on a 400), compute
it in the engine into its ``tag_`` column, recompute it (the admin API, E15, the DAILY scheduler), delete it.

A computed tag is a catalogue ``tag_`` entry (name, value type derived from its definition, :mod:`segport.domain.tags`)
plus its definition and detector (:mod:`segport.store.tag_definitions`); its values live in the users table like
an imported tag's, so exports, pages, lookups and rules read them the same way.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from segport.domain import strict_json
from segport.domain.behaviour import BehaviourContext, EventSchema
from segport.domain.behaviour_parse import event_schema, parse_tag_definition
from segport.domain.keys import CatalogEntry, KeyKind, parse_key
from segport.domain.tags import MAX_DEFINITION_CHARS, definition_text, tag_type, value_type
from segport.engine.base import ComputeResult, TagComputation
from segport.errors import (
    AlreadyExists,
    DetectorBusy,
    InvalidParameter,
    InvalidRule,
    SegportError,
    TagNotFound,
)
from segport.services.data import DataService, catalog_entry
from segport.store.event_catalog import EventCatalog
from segport.store.models import TagDefinitionRow, utcnow
from segport.store.tag_definitions import TagStore

log = logging.getLogger("segport.tags")
RECOMPUTABLE = ("FINISH", "ERROR")


@dataclass(frozen=True, slots=True)
class TagSpec:
    key: str
    name: str
    definition: Any  # the JSON text, or its parsed value
    description: str = ""
    scheduler: str | None = None
    creator: str = ""


@dataclass(frozen=True, slots=True)
class TagView:
    """A tag of the catalogue, with its definition when it is computed (``None``: imported with the profiles)."""

    entry: CatalogEntry
    definition: TagDefinitionRow | None


class TagService:
    def __init__(self, data: DataService) -> None:
        self.data = data
        self.meta = data.meta
        self.engine = data.engine
        self.store = TagStore(data.meta)
        self.events = EventCatalog(data.meta)

    # --- the context a definition is read in ----------------------------------------------------------
    def event_schema(self, project_id: str) -> EventSchema:
        """The project's event names and attributes (and the standard fields ``$path`` …, text)."""
        return event_schema([n.key for n in self.events.names(project_id)], self.events.attributes(project_id))

    def context(self, project_id: str) -> BehaviourContext:
        project = self.meta.project(project_id)
        return BehaviourContext(project_id, self.event_schema(project_id), int(time.time() * 1000), project.timezone)

    # --- define, compute, delete -----------------------------------------------------------------------
    def create(self, project_id: str, spec: TagSpec) -> TagView:
        """Check the definition, add the catalogue entry (its column) and the definition, compute it. Any
        failure leaves nothing behind: a 400 stores nothing, a failed computation takes both out again."""
        self.meta.project(project_id)
        kind, key = parse_key(spec.key)
        if kind is not KeyKind.TAG:
            raise InvalidParameter(f"a computed tag's key starts with tag_, like tag_pay_30d; got {spec.key!r}")
        if not spec.name.strip():
            raise InvalidParameter("a tag needs a name (1-200 characters)")
        scheduler = (spec.scheduler or "DAILY").upper()
        if scheduler not in ("DAILY", "ONCE"):
            raise InvalidParameter(f"scheduler must be DAILY or ONCE, not {spec.scheduler!r}")
        obj = definition_json(spec.definition)
        catalog = self.meta.catalog(project_id)
        twin = next((k for k in catalog.entries if k.lower() == key.lower()), None)
        if twin is not None:  # the same key, or one the profile engine cannot tell from it (case)
            raise AlreadyExists(f"key {twin!r} is already in the catalogue of project {project_id}")
        events = self.event_schema(project_id)
        defn = parse_tag_definition(obj, "definition", events, catalog)
        entry = catalog_entry(key, spec.name, value_type(defn, events).value, spec.description)
        now = utcnow()
        row = TagDefinitionRow(
            project_id=project_id,
            key=key,
            type=tag_type(defn),
            definition=definition_text(obj),
            scheduler=scheduler,
            detector_stage="NONE",
            total_users=0,
            creator=spec.creator,
            created_at=now,
            updated_at=now,
        )
        self.data.add_catalog_entries(project_id, [entry])
        try:
            self.store.add(row)
            self.recompute(project_id, key)
        except BaseException:
            self.store.delete(project_id, key)
            self.data.remove_catalog_key(project_id, key)
            raise
        return self.view(project_id, key)

    def recompute(self, project_id: str, key: str) -> ComputeResult:
        """Compute a tag into its column now. A failure is recorded on the tag (detector ERROR), then raised."""
        row = self.store.get(project_id, key)
        self.store.update(project_id, key, detector_stage="RUNNING")
        try:
            try:
                computation = TagComputation(
                    key, json.loads(row.definition), self.meta.catalog(project_id), self.context(project_id)
                )
                result = self.engine.compute_tag(project_id, computation)
            finally:
                self.data.sync_version(project_id)
        except Exception as exc:
            if not isinstance(exc, SegportError):
                log.exception("computing tag %s of %s failed", key, project_id)
            message = exc.message if isinstance(exc, SegportError) else "an internal error (see the server log)"
            self.store.update(project_id, key, detector_stage="ERROR", detector_error=message, detected_at=utcnow())
            raise
        self.store.update(
            project_id,
            key,
            detector_stage="FINISH",
            detected_at=utcnow(),
            total_users=result.total_users,
            detector_error=None,
        )
        return result

    def recompute_if_idle(self, project_id: str, key: str) -> ComputeResult:
        """E15: recompute only when the detector is FINISH or ERROR (as E14 for segments)."""
        blocking = self.store.start_compute(project_id, key, RECOMPUTABLE)
        if blocking is not None:
            raise DetectorBusy(
                f"tag {key!r} cannot be recomputed while its detector is {blocking} "
                f"(allowed when {' or '.join(RECOMPUTABLE)})"
            )
        return self.recompute(project_id, key)

    def recompute_daily(self, older_than_s: float = 0.0) -> list[tuple[str, str]]:
        """Recompute every DAILY computed tag last computed more than ``older_than_s`` ago, oldest tag first (a
        HORIZONTAL tag made on another computed tag comes after it). A failure is recorded on its tag."""
        done = []
        now = utcnow()
        for project in self.meta.projects():
            for row in self.store.all(project.id):
                if row.scheduler != "DAILY":
                    continue
                if row.detected_at is not None and (now - row.detected_at).total_seconds() < older_than_s:
                    continue
                try:
                    self.recompute(project.id, row.key)
                except SegportError:
                    continue
                except Exception:
                    log.exception("recomputing tag %s/%s failed", project.id, row.key)
                    continue
                done.append((project.id, row.key))
        return done

    def delete(self, project_id: str, key: str) -> None:
        """Delete a computed tag: its definition, its catalogue entry and its column (refused while a segment
        rule or a HORIZONTAL tag reads it)."""
        view = self.view(project_id, key)
        if view.definition is None:
            raise TagNotFound(
                f"tag {view.entry.key!r} of project {project_id} is not computed from events "
                "(an imported tag's key is removed from the catalogue)"
            )
        self.data.remove_catalog_key(
            project_id, view.entry.key
        )  # the definition goes with its entry (ON DELETE CASCADE)

    # --- reading ---------------------------------------------------------------------------------------
    def view(self, project_id: str, key: str) -> TagView:
        self.meta.project(project_id)
        raw = key
        entry = self.meta.catalog(project_id).get(key) or self.meta.catalog(project_id).get(f"tag_{key}")
        if entry is None or entry.kind is not KeyKind.TAG:
            raise TagNotFound(f"tag {raw!r} not found in project {project_id}")
        return TagView(entry, self.store.find(project_id, entry.key))

    def views(self, project_id: str) -> list[TagView]:
        """Every tag of the catalogue (imported and computed), in catalogue order."""
        self.meta.project(project_id)
        rows = {r.key: r for r in self.store.all(project_id)}
        return [TagView(e, rows.get(e.key)) for e in self.meta.catalog(project_id).of_kind(KeyKind.TAG)]


def definition_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > MAX_DEFINITION_CHARS:
        raise InvalidRule(f"definition is too long: at most {MAX_DEFINITION_CHARS} characters")
    try:
        return strict_json.loads(value)
    except strict_json.StrictJSONError as exc:
        raise InvalidRule(f"definition is not valid JSON: {exc}") from None
