"""Events: history from files, the loader from the spool, the attribute catalogue, and reading events back.

The engine stores events (:meth:`segport.engine.base.ProfileAccess.import_events`); this service keeps the
metadata store's side (the attribute catalogue, the event names, the identities events resolve on) in step.
"""

from __future__ import annotations

import csv
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segport.domain.event_files import (
    BATCH_COLUMN,
    DEFAULT_TYPE,
    DEVICE_ID,
    DEVICE_IDENTITY,
    EVENT_COLUMN,
    LOGIN_IDENTITY,
    TIME_COLUMN,
    TYPE_COLUMN,
    USER_ID,
    USER_KEY,
    EventAttribute,
    check_attribute_key,
    identity_of_user_key,
)
from segport.domain.events import ITEM
from segport.domain.keys import KEY_RE, CatalogEntry, KeyKind, ValueType, identity_column, parse_type
from segport.domain.text import bad_character, display_name_problem
from segport.engine.base import EventImportReport, ProfileAccess, UserEvents
from segport.errors import ImportRejected, InvalidParameter, KeyInUse, SegportError, UnknownKey
from segport.services.data import DataService
from segport.store.event_catalog import EventCatalog
from segport.store.meta import MetaStore

log = logging.getLogger("segport.events")
USER_PROPERTY_TYPES = ("LOGIN_USER_ATTRIBUTES", "VISITOR_ATTRIBUTES")
MAX_EVENTS_LIMIT = 1000
_FITS = {
    ValueType.INT: re.compile(r"^\s*[+-]?[0-9]{1,18}\s*$"),
    ValueType.DOUBLE: re.compile(r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"),
    ValueType.DATE: re.compile(r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$"),
}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_IDENTITIES = (
    CatalogEntry(identity_column(LOGIN_IDENTITY), KeyKind.IDENTITY, "登录用户ID"),
    CatalogEntry(identity_column(DEVICE_IDENTITY), KeyKind.IDENTITY, "匿名用户ID", multi=True),
)


@dataclass(slots=True)
class LoadRound:
    """What one round of the loader did."""

    batches: int = 0
    events: int = 0
    set_aside: int = 0


class EventService:
    def __init__(self, meta: MetaStore, engine: ProfileAccess, data: DataService) -> None:
        self.meta = meta
        self.engine = engine
        self.data = data
        self.catalog = EventCatalog(meta)

    # --- history from files ------------------------------------------------------------------------
    def import_events(self, project_id: str, path: Path, *, file_format: str | None = None) -> EventImportReport:
        """Load an event file into the project's event store: all or nothing (see docs/events.md)."""
        self.meta.project(project_id)
        self._ensure_identities(project_id)
        catalog = self.meta.catalog(project_id)
        try:
            report = self.engine.import_events(
                project_id, catalog, self.catalog.attributes(project_id), path, file_format or ""
            )
        finally:
            self.data.sync_version(project_id)
        self.catalog.record(project_id, report.new_attributes, report.events)
        return report

    def _ensure_identities(self, project_id: str) -> None:
        """Events resolve on the login id and the device id: both are identities of every project with events."""
        catalog = self.meta.catalog(project_id)
        missing = [e for e in _IDENTITIES if e.key not in catalog]
        if missing:
            self.data.add_catalog_entries(project_id, missing)

    # --- the attribute catalogue -------------------------------------------------------------------
    def declare(
        self, project_id: str, key: str, name: str = "", type_text: str = "string", description: str = ""
    ) -> EventAttribute:
        """Declare (or rename, re-describe) an event attribute. Its type cannot change once declared or seen."""
        self.meta.project(project_id)
        key = check_attribute_key(key.strip())
        value_type, multi = parse_type(type_text or "string")
        if multi:
            raise InvalidParameter(f"event attribute {key!r}: event attributes hold one value (no [] types)")
        if len(name) > 200 or len(description) > 2000:
            raise InvalidParameter(f"event attribute {key!r}: a name has at most 200 characters, a description 2000")
        problem = display_name_problem(name) if name else None
        if problem:
            raise InvalidParameter(f"event attribute {key!r}: display name {name[:40]!r} is refused: {problem}")
        bad = bad_character(description, allow_line_breaks=True)
        if bad:
            raise InvalidParameter(f"event attribute {key!r}: the description holds the control character {bad}")
        have = {a.key: a for a in self.catalog.attributes(project_id)}
        if key in have and have[key].type is not value_type:
            raise KeyInUse(f"event attribute {key!r} is stored as {have[key].type.value}; a stored type never changes")
        attribute = EventAttribute(key, (name or key).strip(), value_type, description.strip())
        self.catalog.declare(project_id, [attribute])
        return attribute

    # --- reading back ------------------------------------------------------------------------------
    def user_events(
        self,
        project_id: str,
        identity_key: str,
        value: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        offset: int,
        order: str,
    ) -> UserEvents:
        catalog = self.meta.catalog(project_id)
        column = identity_column(identity_key.strip())
        entry = catalog.get(column)
        if entry is None or entry.kind is not KeyKind.IDENTITY:
            # The identities events resolve on ($basic_userId, $anonymous_user) join the catalogue with the
            # project's first events, and a project with no identity at all has no users: either way nobody holds
            # the value yet, which is E11's and E18's unknown user (gioId "0"), not an unknown key.
            nobody = entry is None and (column in (e.key for e in _IDENTITIES) or not catalog.identities())
            if not nobody:
                known = ", ".join(e.identity for e in catalog.identities()) or "none"
                raise UnknownKey(f"unknown identity key {identity_key!r} in project {project_id} (known: {known})")
            entry = None
        if order.lower() not in ("asc", "desc"):
            raise InvalidParameter(f"order must be asc or desc, not {order[:20]!r}")
        if not 1 <= limit <= MAX_EVENTS_LIMIT:
            raise InvalidParameter(f"limit must be 1 to {MAX_EVENTS_LIMIT}, not {limit}")
        if offset < 0 or start_ms < 0 or end_ms < 0:
            raise InvalidParameter("offset, startTime and endTime cannot be negative")
        if end_ms <= start_ms:
            raise InvalidParameter(f"endTime ({end_ms}) must be after startTime ({start_ms})")
        if entry is None:
            return UserEvents(0, [], False)
        return self.engine.user_events(
            project_id, entry, value, start_ms, end_ms, limit, offset, order.lower() == "desc"
        )

    # --- the loader --------------------------------------------------------------------------------
    def load_pending(self, spool: Any, scratch: Path, limit: int = 100) -> LoadRound:
        """One round of the loader: the spool's pending batches (oldest first) loaded into the event store,
        then marked loaded. The engine records each batch id with its rows in the same transaction, so a crash
        between that commit and ``mark_loaded`` makes the next round skip what is already stored."""
        done = LoadRound()
        batches = spool.pending(limit, rows=True)
        by_project: dict[str, list[Any]] = {}
        for batch in batches:
            by_project.setdefault(batch.project_id, []).append(batch)
        for project_id, group in by_project.items():
            try:
                done.events += self._load(project_id, group, scratch)
            except ImportRejected as exc:  # one batch the engine refuses must not hold up the others
                log.warning("loading %d batches of %s failed, loading them one by one: %s", len(group), project_id, exc)
                for batch in group:
                    try:
                        done.events += self._load(project_id, [batch], scratch)
                    except ImportRejected as one:
                        log.error(
                            "spool batch %s of %s set aside, its events not stored: %s", batch.id, project_id, one
                        )
                        done.set_aside += 1
            spool.mark_loaded([b.id for b in group])
            done.batches += len(group)
        return done

    def _load(self, project_id: str, batches: list[Any], scratch: Path) -> int:
        self._ensure_identities(project_id)
        declared = {a.key: a.type for a in self.catalog.attributes(project_id)}
        table, profiles = _columns(batches, declared)
        if table is None:
            return 0
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="spool-", dir=scratch) as folder:
            path = Path(folder) / "events.parquet"
            pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False)
            self.import_events(project_id, path, file_format="parquet")
            self._set_user_properties(project_id, profiles, Path(folder))
        return table.num_rows

    def _set_user_properties(self, project_id: str, profiles: dict[str, list[dict[str, Any]]], folder: Path) -> None:
        """LOGIN_USER_ATTRIBUTES: the login user's ``usr_`` properties; VISITOR_ATTRIBUTES: the properties of the
        user the device id resolves to (a profile import matched on the multi-valued ``id_$anonymous_user``, after
        the events, so the device's user exists). New keys are added to the catalogue as strings, a later event
        winning key by key; a key an event does not name is left as it was. Applied after the events, login
        properties first, on every load of the batch (the same values again: idempotent)."""
        device = identity_column(DEVICE_IDENTITY)
        for column, items in sorted(profiles.items(), key=lambda p: p[0] == device):
            merged: dict[str, dict[str, Any]] = {}
            for item in items:  # in time order
                merged.setdefault(item[column], {}).update({k: v for k, v in item.items() if k != column})
                merged[item[column]] = merged.pop(item[column])  # in the order of each one's last event: of two
                # device ids of one user in one file, the later row wins (docs/events.md, "User properties")
            keys = sorted({k for values in merged.values() for k in values})
            try:
                catalog = self.meta.catalog(project_id)
                new = [CatalogEntry(k, KeyKind.PROPERTY, k) for k in keys if k not in catalog]
                if new:
                    self.data.add_catalog_entries(project_id, new)
                catalog = self.meta.catalog(project_id)
                # one file per set of keys: a file's columns overwrite, so each user's row names only its own keys
                by_keys: dict[tuple[str, ...], list[tuple[str, dict[str, Any]]]] = {}
                for who, values in merged.items():
                    fits = tuple(k for k in sorted(values) if (e := catalog.get(k)) is not None and not e.multi)
                    if fits:
                        by_keys.setdefault(fits, []).append((who, values))
                for n, (fits, users) in enumerate(by_keys.items()):
                    path = folder / f"profiles-{n}.csv"
                    with open(path, "w", encoding="utf-8", newline="") as f:
                        out = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
                        out.writerow([column, *fits])
                        for who, values in users:
                            out.writerow([who, *(_fit(values[k], catalog.entries[k].type) for k in fits)])
                    self.data.import_users(project_id, path, file_format="csv", match=column)
            except SegportError as exc:
                log.error("user properties of %d events of %s not set: %s", len(items), project_id, exc.message)


def _fit(value: Any, value_type: ValueType) -> Any:
    """A string value as its declared type takes it, or None (stored as null) when it does not fit."""
    if value is None:
        return None
    text = str(value)
    if _CONTROL.search(text):
        return None
    pattern = _FITS.get(value_type)
    if pattern is not None and not pattern.match(text):
        return None
    return text


def _columns(
    batches: list[Any], declared: dict[str, ValueType]
) -> tuple[pa.Table | None, dict[str, list[dict[str, Any]]]]:
    """The spool's normalized events as the columns of an event file (one Arrow table: ``event``, ``time``,
    ``userId``, ``userKey``, ``deviceId``, ``$type``, ``$batch``, one text column per standard field and attribute;
    None when no event is stored), and the user properties their LOGIN_USER_ATTRIBUTES and VISITOR_ATTRIBUTES
    events set, per identity column (the login identity, or the device id). Every value is text (numbers of
    standard fields too) and typed by the catalogue in the engine, as a CSV file's are; an attribute value that
    does not fit its declared type is null (:func:`_fit`). Each column is filled in place, without a dict per row:
    this is the loader's hot path (docs/performance.md)."""
    total = sum(len(b.events) if b.rows is None else len(b.rows) for b in batches)
    names: list[Any] = []
    times: list[int] = []
    user_ids: list[Any] = []
    user_keys: list[Any] = []
    device_ids: list[Any] = []
    types: list[str] = []
    batch_ids: list[int] = []
    extra: dict[str, list[Any]] = {}  # standard fields ($…) and attributes, each [None] * total, filled at row n
    fits: dict[str, Any] = {}  # attribute key -> its declared type's pattern (None: any text), or False: skipped
    plain: dict[str, list[Any]] = {}  # the columns of the attributes whose text is stored as it is (strings)
    profiles: dict[str, list[dict[str, Any]]] = {}
    n = 0
    for batch in batches:
        for t, kind, name, user_id, user_key, device_id, attrs, std in (
            batch.rows if batch.rows is not None else map(_as_row, batch.events)
        ):
            kind = kind or DEFAULT_TYPE
            if kind == ITEM:  # items (collect/item) have no store in the engine yet: marked loaded, not stored
                continue
            names.append(name if kind == DEFAULT_TYPE else (name or "$" + kind.lower()))
            times.append(int(t))
            user_ids.append(user_id)
            user_keys.append(user_key)
            device_ids.append(device_id)
            types.append(kind)
            batch_ids.append(batch.id)
            if std:
                for k, v in std.items():
                    column = extra.get("$" + k)
                    if column is None:
                        column = extra["$" + k] = [None] * total
                    column[n] = None if v is None else str(v)
            if kind in USER_PROPERTY_TYPES:
                _user_properties(kind, user_id, user_key, device_id, attrs or {}, profiles)
            elif attrs:
                for k, v in attrs.items():
                    column = plain.get(k)
                    if column is not None and type(v) is str:  # most values: text of a key typed string
                        column[n] = v
                        continue
                    pattern = fits.get(k)
                    if pattern is None and k not in fits:
                        pattern = fits[k] = _fit_pattern(k, declared)
                    if pattern is False:
                        continue  # the intake refuses such keys; never one the store cannot hold
                    column = extra.get(k)
                    if column is None:
                        column = extra[k] = [None] * total
                        if pattern is None:
                            plain[k] = column
                    if v is not None:
                        text = v if type(v) is str else str(v)
                        if pattern is not None and not pattern.match(text):
                            text = None
                        column[n] = text  # (a control character is looked for per column, below)
            n += 1
    if not n:
        return None, profiles
    string = pa.string()
    arrays = {
        EVENT_COLUMN: pa.array(names, string),
        TIME_COLUMN: pa.array(times, pa.int64()),
        USER_ID: pa.array(user_ids, string),
        USER_KEY: pa.array(user_keys, string),
        DEVICE_ID: pa.array(device_ids, string),
        TYPE_COLUMN: pa.array(types, string),
        BATCH_COLUMN: pa.array(batch_ids, pa.int64()),
    }
    for k, column in extra.items():
        if len(column) > n:
            del column[n:]
        values = pa.array(column, string)
        if k in fits:  # an attribute: a value holding a control character does not fit (null), as in _fit
            bad = pc.match_substring_regex(values, _CONTROL.pattern)
            if pc.any(bad).as_py():
                values = pc.if_else(bad, pa.scalar(None, string), values)
        arrays[k] = values
    return pa.table(arrays), profiles


def _fit_pattern(key: str, declared: dict[str, ValueType]) -> Any:
    """How values of attribute ``key`` are fitted: the pattern of its declared type (None: any text without a
    control character), or False for a key the store cannot hold."""
    try:
        check_attribute_key(key)
    except SegportError:
        return False
    return _FITS.get(declared.get(key, ValueType.STRING))


def _as_row(e: dict[str, Any]) -> tuple[Any, ...]:
    """A normalized event as the tuple :func:`segport.domain.events.json_event_rows` gives."""
    return (
        e["t"],
        e.get("type"),
        e.get("event"),
        e.get("user_id"),
        e.get("user_key"),
        e.get("device_id"),
        e.get("attrs"),
        e.get("std"),
    )


def _user_properties(
    kind: str,
    user_id: str | None,
    user_key: str | None,
    device_id: str | None,
    attrs: dict[str, Any],
    profiles: dict[str, list[dict[str, Any]]],
) -> None:
    """The ``usr_`` properties a LOGIN_USER_ATTRIBUTES or VISITOR_ATTRIBUTES event sets, under its identity column."""
    column = ""
    if kind == "LOGIN_USER_ATTRIBUTES" and user_id:
        column, who = identity_column(identity_of_user_key(user_key)), user_id
    # keyed by the device id ("||" would split it into two values in the profile file: left out)
    elif kind == "VISITOR_ATTRIBUTES" and device_id and "||" not in device_id:
        column, who = identity_column(DEVICE_IDENTITY), device_id
    if column:
        item = {column: who}
        for k, v in attrs.items():
            key = "usr_" + k
            if KEY_RE.match(key):
                item[key] = v
        profiles.setdefault(column, []).append(item)
