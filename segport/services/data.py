"""Data in: projects, tokens, catalogue, user profiles and segments."""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segport.domain.behaviour import BehaviourContext, EventSchema
from segport.domain.behaviour_parse import event_schema
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, identity_column, parse_key, parse_type
from segport.domain.rules import check_rule, has_event_conditions, parse_rule_text, rule_keys
from segport.domain.text import bad_character, display_name_problem
from segport.engine.base import ComputeResult, ImportReport, ProfileAccess, ProfileEngine, SegmentDefinition
from segport.errors import ImportRejected, InvalidParameter, InvalidRule, KeyInUse, SegportError, UnknownKey
from segport.store.event_catalog import EventCatalog
from segport.store.meta import MetaStore
from segport.store.models import SegmentRow, utcnow
from segport.store.tag_definitions import TagStore
from segport.testing_hooks import pause_point

log = logging.getLogger("segport.data")
CATALOG_COLUMNS = ("key", "name", "type")


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    key: str
    name: str
    description: str = ""
    rule: Any = None
    members: Path | None = None
    identity: str | None = None
    scheduler: str | None = None
    creator: str = ""


class DataService:
    """Catalogue, profile imports and segments: each change to the metadata store and to the engine as one unit."""

    def __init__(self, meta: MetaStore, engine: ProfileAccess, clock: Callable[[], float] = time.time) -> None:
        self.meta = meta
        self.engine = engine
        self.clock = clock  # the clock relative time windows of event conditions are resolved with (seconds)

    # --- catalogue ---------------------------------------------------------------------------------
    def import_catalog_csv(self, project_id: str, text: str) -> tuple[int, int]:
        """Import ``key,name,type[,description]`` rows: all or nothing. Returns (added, updated)."""
        self.meta.project(project_id)
        try:
            return self._import_catalog_csv(project_id, text)
        except csv.Error as exc:
            raise ImportRejected(f"catalogue file is not valid CSV: {exc}") from None

    def _import_catalog_csv(self, project_id: str, text: str) -> tuple[int, int]:
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in CATALOG_COLUMNS if c not in header]
        if missing:
            raise ImportRejected(f"catalogue file needs the columns key,name,type; missing {', '.join(missing)}")
        reader.fieldnames = header
        entries: list[CatalogEntry] = []
        seen: set[str] = set()
        for n, row in enumerate(reader, start=1):
            try:
                entry = catalog_entry(
                    row.get("key") or "",
                    row.get("name") or "",
                    row.get("type") or "string",
                    row.get("description") or "",
                )
            except SegportError as exc:
                raise ImportRejected(f"catalogue row {n}: {exc.message}") from None
            if entry.key in seen:
                raise ImportRejected(f"catalogue row {n}: key {entry.key!r} appears twice")
            seen.add(entry.key)
            entries.append(entry)
        return self.add_catalog_entries(project_id, entries)

    def add_catalog_entries(self, project_id: str, entries: list[CatalogEntry]) -> tuple[int, int]:
        """Add or update keys: the catalogue rows, then the engine's columns, as one unit.

        The two live in different databases. If the engine refuses its ``ALTER TABLE``, the keys this call
        added are taken out of the catalogue again (a compensating step); if the process dies between the
        two commits, :func:`repair` (run when the engine's owner starts) adds the missing columns.
        """
        before = set(self.meta.catalog(project_id).entries)
        result = self.meta.upsert_catalog(project_id, entries)
        pause_point("catalog-added")
        try:
            self.engine.ensure_project(project_id, self.meta.catalog(project_id))
        except BaseException:
            for key in dict.fromkeys(e.key for e in entries if e.key not in before):
                self.meta.delete_catalog_key(project_id, key)
            raise
        return result

    def update_catalog_entry(
        self, project_id: str, key: str, *, name: str | None = None, description: str | None = None
    ) -> CatalogEntry:
        """Rename a key (its display name) and/or change its description; kind and type never change."""
        sent = key  # messages show the key as the caller wrote it (ids_x, not the canonical id_x)
        _, key = parse_key(key)
        entry = self.meta.catalog(project_id).get(key)
        if entry is None:
            raise UnknownKey(f"key {sent!r} is not in the catalogue of project {project_id}")
        if name is not None and not name.strip():  # not a silent reset to the key: say so
            raise InvalidParameter(f"key {sent!r}: a display name cannot be empty (it would reset to the key)")
        new = catalog_entry(
            entry.key,
            name if name is not None else entry.name,
            entry.type_name,
            description if description is not None else entry.description,
        )
        self.meta.upsert_catalog(project_id, [new])
        return new

    def remove_catalog_key(self, project_id: str, key: str) -> None:
        sent = key
        _, key = parse_key(key)
        catalog = self.meta.catalog(project_id)
        if key not in catalog:
            raise UnknownKey(f"key {sent!r} is not in the catalogue of project {project_id}")
        rows, _ = self.meta.segments(project_id)
        users = [r.key for r in rows if (r.rule and key in rule_keys(json.loads(r.rule))) or r.identity == key]
        if users:
            raise KeyInUse(f"key {key!r} is used by segment(s) {', '.join(users)}; change or delete them first")
        layered = TagStore(self.meta).layered_on(project_id, key)
        if layered:
            raise KeyInUse(f"tag {key!r} is the source of the tag(s) {', '.join(layered)}; delete them first")
        # catalogue first: a kill before the DROP COLUMN leaves a column no key owns, which nothing reads
        # and :func:`repair` drops; a key with no column would break every export naming it
        self.meta.delete_catalog_key(project_id, key)
        pause_point("catalog-removed")
        try:
            self.engine.drop_column(project_id, key)
        except BaseException:
            self.meta.upsert_catalog(project_id, [catalog.entries[key]])  # the column stays, so does its key
            raise
        finally:
            self.sync_version(project_id)

    # --- users -------------------------------------------------------------------------------------
    def import_users(
        self,
        project_id: str,
        path: Path,
        *,
        file_format: str | None = None,
        match: str = "id_$basic_userId",
        progress: Any = None,
    ) -> ImportReport:
        """Upsert users from a file and recompute the DAILY segments, all in one engine transaction."""
        self.meta.project(project_id)
        catalog = self.meta.catalog(project_id)
        self.engine.ensure_project(project_id, catalog)
        # a computed tag's values belong to its definition: the import refuses a column for one (docs/tags.md)
        catalog = Catalog(list(catalog.entries.values()), [r.key for r in TagStore(self.meta).all(project_id)])
        column = identity_column(match)
        entry = catalog.get(column)
        if entry is None or entry.kind is not KeyKind.IDENTITY:  # said here: the engine only sees the column
            raise ImportRejected(f"--match {match!r} is not an identity in the catalogue")
        daily = self._definitions(project_id, only_daily=True)
        try:
            report = self.engine.import_users(
                project_id, catalog, path, file_format or "", column, [d for d, _ in daily], progress
            )
        finally:
            self.sync_version(project_id)
        now = utcnow()
        for definition, _row in daily:
            self.meta.update_segment(
                project_id,
                definition.key,
                detector_stage="FINISH",
                detected_at=now,
                total_users=report.segments.get(definition.key, 0),
                unmatched=report.unmatched.get(definition.key, 0),
                detector_error=None,
            )
        return report

    # --- segments ----------------------------------------------------------------------------------
    def create_segment(self, project_id: str, spec: SegmentSpec) -> SegmentRow:
        self.meta.project(project_id)
        catalog = self.meta.catalog(project_id)
        self.engine.ensure_project(project_id, catalog)
        if not spec.name.strip() or len(spec.name) > 200 or len(spec.description) > 2000:
            raise InvalidParameter("a segment needs a name of 1-200 characters (and a description of at most 2000)")
        problem = display_name_problem(spec.name)
        if problem:
            raise InvalidParameter(f"segment name {spec.name[:40]!r} is refused: {problem}")
        bad = bad_character(spec.description, allow_line_breaks=True)
        if bad:
            raise InvalidParameter(f"the segment's description holds the control character {bad}")
        if (spec.rule is None) == (spec.members is None):
            raise InvalidParameter("a segment needs either a rule or a members file, not both")
        rule_text = None
        identity = None
        if spec.rule is not None:
            rule = parse_rule_text(spec.rule) if isinstance(spec.rule, str) else spec.rule
            events = self.event_schema(project_id) if has_event_conditions(rule) else None
            check_rule(rule, catalog, events)  # validate now: a bad rule never gets stored
            rule_text = json.dumps(rule, ensure_ascii=False)
            created_by, default_scheduler = "DIRECT", "DAILY"
        else:
            identity = identity_column(spec.identity or "$basic_userId")
            entry = catalog.get(identity)
            if entry is None or entry.kind is not KeyKind.IDENTITY:
                raise UnknownKey(f"--identity {spec.identity!r} is not an identity in the catalogue")
            created_by, default_scheduler = "FROM_FILES", "ONCE"
        scheduler = (spec.scheduler or default_scheduler).upper()
        if scheduler not in ("DAILY", "ONCE"):
            raise InvalidParameter(f"scheduler must be DAILY or ONCE, not {spec.scheduler!r}")
        now = utcnow()
        row = SegmentRow(
            project_id=project_id,
            key=spec.key,
            id=_segment_id(),
            name=spec.name,
            description=spec.description,
            created_by=created_by,
            scheduler=scheduler,
            rule=rule_text,
            identity=identity,
            detector_stage="NONE",
            total_users=0,
            unmatched=0,
            creator=spec.creator,
            updater=spec.creator,
            created_at=now,
            updated_at=now,
        )
        self.meta.add_segment(row)
        try:
            if spec.members is not None:
                self.engine.load_member_ids(project_id, spec.key, spec.members)
            self.recompute_segment(project_id, spec.key)
        except BaseException:
            self.meta.delete_segment(project_id, spec.key)
            self.engine.drop_segment(project_id, spec.key)
            self.sync_version(project_id)
            raise
        return self.meta.segment(project_id, spec.key)

    def recompute_segment(self, project_id: str, key: str) -> ComputeResult:
        """Recompute a segment's membership snapshot. Any failure is recorded on the segment (detector ERROR)
        before it is raised: a detector left RUNNING could never be recomputed through the API again."""
        row = self.meta.segment(project_id, key)
        self.meta.update_segment(project_id, key, detector_stage="RUNNING")
        try:
            try:
                result = self.engine.compute_segment(project_id, self._definition(row))
            finally:
                self.sync_version(project_id)
        except Exception as exc:
            if not isinstance(exc, SegportError):  # a bug: the log keeps the details, the segment a plain line
                log.exception("recomputing segment %s of %s failed", key, project_id)
            message = exc.message if isinstance(exc, SegportError) else "an internal error (see the server log)"
            self.meta.update_segment(
                project_id, key, detector_stage="ERROR", detector_error=message, detected_at=utcnow()
            )
            raise
        self.meta.update_segment(
            project_id,
            key,
            detector_stage="FINISH",
            detected_at=utcnow(),
            total_users=result.total_users,
            unmatched=result.unmatched,
            detector_error=None,
        )
        return result

    def recompute_daily(self, older_than_s: float = 0.0) -> list[tuple[str, str]]:
        """Recompute every DAILY segment (of every project) last computed more than ``older_than_s`` ago.

        A project's due segments are computed together (:meth:`ProfileAccess.compute_segments`: one snapshot,
        the event measures they share read in one pass over the events). That is all or nothing, so when it
        fails the segments are computed one by one, and one that fails is marked ERROR while the others still
        run. Returns the (project, segment) pairs that were recomputed."""
        done = []
        now = utcnow()
        for project in self.meta.projects():
            rows, _ = self.meta.segments(project.id)
            due = [
                row
                for row in rows
                if row.scheduler == "DAILY"
                and (row.detected_at is None or (now - row.detected_at).total_seconds() >= older_than_s)
            ]
            if len(due) > 1 and self._recompute_together(project.id, due):
                done += [(project.id, row.key) for row in due]
                continue
            for row in due:
                try:
                    self.recompute_segment(project.id, row.key)
                except SegportError:
                    continue
                except Exception:  # an engine failure: recorded on the segment; log it, go on with the others
                    log.exception("recomputing segment %s/%s failed", project.id, row.key)
                    continue
                done.append((project.id, row.key))
        return done

    def _recompute_together(self, project_id: str, rows: list[SegmentRow]) -> bool:
        """Compute ``rows`` in one engine operation; False (detectors left as they were, for the one-by-one
        path to record) when any of them cannot be defined or the operation fails."""
        try:
            definitions = [self._definition(row) for row in rows]
        except SegportError:
            return False  # the one-by-one path records which segment is wrong
        for row in rows:
            self.meta.update_segment(project_id, row.key, detector_stage="RUNNING")
        try:
            try:
                results = self.engine.compute_segments(project_id, definitions)
            finally:
                self.sync_version(project_id)
        except Exception as exc:
            if not isinstance(exc, SegportError):
                log.exception("recomputing the DAILY segments of %s together failed", project_id)
            return False
        finished = utcnow()
        for row in rows:
            result = results[row.key]
            self.meta.update_segment(
                project_id,
                row.key,
                detector_stage="FINISH",
                detected_at=finished,
                total_users=result.total_users,
                unmatched=result.unmatched,
                detector_error=None,
            )
        return True

    def delete_segment(self, project_id: str, key: str) -> None:
        self.meta.segment(project_id, key)
        self.meta.delete_segment(project_id, key)
        try:
            self.engine.drop_segment(project_id, key)
        finally:
            self.sync_version(project_id)

    def sync_version(self, project_id: str) -> None:
        """Mirror the engine's data version into the metadata store, in the same step as each engine change
        to profiles or memberships: submits deduplicate on it without asking the engine. (The engine process
        repeats it for every project at start, covering a crash between the two writes.)"""
        try:
            self.meta.set_data_version(project_id, self.engine.data_version(project_id))
        except SegportError as exc:  # engine gone meanwhile: the engine process syncs again when it starts
            log.warning("data version of %s not mirrored: %s", project_id, exc.message)

    def _definitions(self, project_id: str, *, only_daily: bool) -> list[tuple[SegmentDefinition, SegmentRow]]:
        rows, _ = self.meta.segments(project_id)
        return [(self._definition(r), r) for r in rows if not only_daily or r.scheduler == "DAILY"]

    def event_schema(self, project_id: str) -> EventSchema:
        """What event conditions of ``project_id`` are checked against: its event catalogue (event names the
        store holds, attribute keys) and the standard fields."""
        events = EventCatalog(self.meta)
        return event_schema([n.key for n in events.names(project_id)], events.attributes(project_id))

    def behaviour(self, project_id: str) -> BehaviourContext:
        """The context a computation of event conditions needs: the event schema, the clock read now (once
        per computation) and the project's time zone."""
        project = self.meta.project(project_id)
        return BehaviourContext(project_id, self.event_schema(project_id), int(self.clock() * 1000), project.timezone)

    def _definition(self, row: SegmentRow) -> SegmentDefinition:
        if row.rule:
            tree, catalog = json.loads(row.rule), self.meta.catalog(row.project_id)
            behaviour = self.behaviour(row.project_id) if has_event_conditions(tree) else None
            try:
                return SegmentDefinition.from_rule(row.key, tree, catalog, behaviour)
            except InvalidRule as exc:
                raise InvalidRule(f"segment {row.key}: {exc.message}") from None
        return SegmentDefinition(row.key, identity=row.identity)


def repair(meta: MetaStore, engine: ProfileEngine) -> list[str]:
    """Close any gap between the catalogues and the engine's columns that a kill between two commits left (see
    :meth:`DataService.add_catalog_entries` and :meth:`DataService.remove_catalog_key`); run by the process that
    owns the engine when it starts. Logged, and returned for the tests."""
    catalogs = {p.id: meta.catalog(p.id) for p in meta.projects()}
    changes = engine.reconcile(catalogs)
    for change in changes:
        log.warning("catalogue and profile database differed, repaired: %s", change)
    return changes


def catalog_entry(key: str, name: str, type_text: str = "string", description: str = "") -> CatalogEntry:
    """A checked catalogue entry. An identity may be written bare (``$basic_userId``) or as its column key
    (``id_$basic_userId``); identities are strings (``string[]`` for multi-valued ones)."""
    key = key.strip()
    if key.startswith("$"):
        key = identity_column(key)
    kind, canonical = parse_key(key)
    if len(name or "") > 200 or len(description or "") > 2000:
        raise InvalidParameter(f"key {canonical!r}: a name has at most 200 characters, a description 2000")
    problem = display_name_problem(name) if name else None  # no name at all: the key is its name
    if problem:
        raise InvalidParameter(f"key {canonical!r}: display name {name[:40]!r} is refused: {problem}")
    bad = bad_character(description or "", allow_line_breaks=True)
    if bad:
        raise InvalidParameter(f"key {canonical!r}: the description holds the control character {bad}")
    value_type, multi = parse_type(type_text or "string")
    if kind is KeyKind.IDENTITY and value_type.value != "string":
        raise InvalidParameter(f"identity {canonical!r} must be of type string")
    return CatalogEntry(canonical, kind, (name or canonical).strip(), value_type, multi, description.strip())


def _segment_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
