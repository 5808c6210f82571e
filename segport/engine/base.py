"""The engine Protocols, the one seam between segport and the database that holds profiles, and what they answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from segport.domain.behaviour import BehaviourContext
from segport.domain.event_files import EventAttribute
from segport.domain.export import ExportSpec
from segport.domain.keys import Catalog, CatalogEntry
from segport.domain.rules import check_rule
from segport.engine.interrupt import Interrupt


@dataclass(frozen=True, slots=True)
class Target:
    """What an export or a page reads: a segment's snapshot, or the users holding a tag."""

    kind: str  # "segment" | "tag"
    key: str


@dataclass(slots=True)
class MembersPage:
    """One page of a target's members and the target's total, both read from one snapshot."""

    total: int
    rows: list[dict[str, Any]]  # {"gio_id": "1", key: value, ...}; identities lists, others strings


@dataclass(slots=True)
class ExportOutput:
    rows: int
    files: list[Path]
    # the data version of the snapshot the files were read from (DuckDB: read in the export's own
    # transaction; ClickHouse: the snapshot row the export read its tables from)
    data_version: int


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    """What the engine needs to compute a segment: a rule tree checked against its catalogue, or an id list
    matched on an identity. Each engine compiles the tree to its own SQL
    (:func:`segport.domain.rules.compile_rule` with its dialect), with the same semantics."""

    key: str
    identity: str | None = None  # column key for FROM_FILES
    rule_tree: Any = None
    catalog: Catalog | None = None
    behaviour: BehaviourContext | None = None  # set when the rule holds event conditions

    @classmethod
    def from_rule(
        cls, key: str, tree: Any, catalog: Catalog, behaviour: BehaviourContext | None = None
    ) -> SegmentDefinition:
        """A rule segment, its tree validated against ``catalog`` (and its event conditions against
        ``behaviour.events``) now (raises :class:`InvalidRule`)."""
        check_rule(tree, catalog, behaviour.events if behaviour is not None else None)
        return cls(key, rule_tree=tree, catalog=catalog, behaviour=behaviour)


@dataclass(frozen=True, slots=True)
class TagComputation:
    """What the engine needs to compute a tag from events into its column (``key``, a ``tag_`` key of
    ``catalog``): the definition as its JSON (each engine parses it against ``behaviour.events`` and ``catalog``
    with the domain's parser, so both read it alike) and the behaviour context (event schema, clock, time zone)."""

    key: str
    definition: Any
    catalog: Catalog
    behaviour: BehaviourContext


@dataclass(slots=True)
class ComputeResult:
    total_users: int
    unmatched: int = 0


@dataclass(slots=True)
class ImportReport:
    rows_read: int
    inserted: int
    updated: int
    elapsed_s: float = 0.0
    segments: dict[str, int] = field(default_factory=dict)  # DAILY segments recomputed: key -> members
    unmatched: dict[str, int] = field(default_factory=dict)  # ... and, for id lists, ids matching no user


@dataclass(slots=True)
class EventImportReport:
    """What a load of events did: rows stored, users created for identities seen first, the attribute keys
    met for the first time (with the type they were stored as), and each event name's attribute keys."""

    rows_read: int
    stored: int
    users_created: int = 0
    new_attributes: list[EventAttribute] = field(default_factory=list)
    events: dict[str, list[str]] = field(default_factory=dict)  # event name -> attribute keys it carried
    batches_skipped: list[int] = field(default_factory=list)  # spool batches the store already held
    elapsed_s: float = 0.0


@dataclass(slots=True)
class UserEvents:
    """One page of a user's events (``gio_id`` 0: no such user) and whether more follow within the bounds."""

    gio_id: int
    rows: list[dict[str, Any]]  # {"time": ms, "event": name, "type": ..., "attrs": {...}, "std": {...}}
    has_next: bool


@dataclass(slots=True)
class EventScan:
    """A time-bounded count, and how many stored rows the engine read to answer it."""

    events: int
    rows_read: int


class ProfileAccess(Protocol):
    """What any process may ask of the profiles. An API process asks the engine process
    (:class:`segport.engine.client.RemoteEngine`): each method here is one operation of
    :mod:`segport.engine.protocol`, its parameters the request and its return type the answer.
    Backends raise only :mod:`segport.errors` types."""

    def ensure_project(self, project_id: str, catalog: Catalog) -> None:
        """Create the project's tables if needed and add a column for every catalogue key."""

    def drop_column(self, project_id: str, key: str) -> None: ...

    def import_users(
        self,
        project_id: str,
        catalog: Catalog,
        path: Path,
        file_format: str,
        match: str,
        recompute: list[SegmentDefinition],
        progress: Any = None,
    ) -> ImportReport:
        """Upsert users from a file and recompute ``recompute`` in the same transaction: all or nothing.
        ``progress`` (phase lines) is called in the process that owns the engine only."""

    def load_member_ids(self, project_id: str, segment_key: str, path: Path) -> int:
        """Store an uploaded id list for a FROM_FILES segment; returns the number of distinct ids."""

    def compute_segment(self, project_id: str, segment: SegmentDefinition) -> ComputeResult: ...

    def compute_segments(self, project_id: str, segments: list[SegmentDefinition]) -> dict[str, ComputeResult]:
        """Several segments computed together (the DAILY recompute): one snapshot, one data version, and the
        event measures of their rules read in one pass over the events. All or nothing."""
        ...

    def drop_segment(self, project_id: str, segment_key: str) -> None: ...

    def compute_tag(self, project_id: str, tag: TagComputation) -> ComputeResult:
        """Compute a tag from the project's events and store each user's value in the tag's column of the
        users table, in one change (a user without a value: null); ``total_users``: users holding a value."""

    def data_version(self, project_id: str) -> int:
        """A number that changes whenever profiles or memberships of the project change."""

    def count(self, project_id: str, target: Target) -> int: ...

    def members_page(
        self, project_id: str, target: Target, columns: list[CatalogEntry], limit: int, offset: int
    ) -> MembersPage:
        """The target's total and one page of members by ``gio_id``, both from one snapshot."""

    def lookup_user(
        self, project_id: str, catalog: Catalog, identity: CatalogEntry, value: str
    ) -> dict[str, Any] | None:
        """One user's every catalogue value (identities as lists, the rest as strings), or ``None``."""

    def tag_counts(self, project_id: str, tags: list[CatalogEntry]) -> dict[str, int]:
        """Users holding a non-null value, per tag."""

    def import_events(
        self, project_id: str, catalog: Catalog, attributes: list[EventAttribute], path: Path, file_format: str
    ) -> EventImportReport:
        """Load an event file (:mod:`segport.domain.events`) into the project's event store: every row checked
        first (a bad one refuses the file, naming its row), identities resolved to ``gio_id`` (an identity seen
        for the first time becomes a new user), then the rows stored at once. Rows with a ``$batch`` column
        whose batch the store already holds are skipped, so the loader may load a spool batch twice."""

    def user_events(
        self,
        project_id: str,
        identity: CatalogEntry,
        value: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        offset: int,
        descending: bool,
    ) -> UserEvents:
        """One user's events with ``start_ms <= time < end_ms``, by time (then by storage order)."""

    def count_events(self, project_id: str, start_ms: int, end_ms: int) -> EventScan:
        """The project's events with ``start_ms <= time < end_ms``, and the stored rows read to count them."""

    def close(self) -> None: ...


class ProfileEngine(ProfileAccess, Protocol):
    """A profile engine itself (a backend, in the one process that owns it): everything of
    :class:`ProfileAccess`, and what only its owner does: repair at start-up, and write exports."""

    def reconcile(self, catalogs: dict[str, Catalog]) -> list[str]:
        """Start-up repair: make each project's columns exactly its catalogue's (add what a catalogue key
        lacks, drop what no key owns); returns what changed. Cheap when nothing differs."""

    def export(
        self,
        project_id: str,
        target: Target,
        columns: list[CatalogEntry],
        spec: ExportSpec,
        out_dir: Path,
        file_names: Callable[[int], list[str]],
        *,
        max_file_rows: int = 0,
        excel_safe: bool = False,
        interrupt: Interrupt | None = None,
    ) -> ExportOutput:
        """Write the export into ``out_dir`` natively; ``file_names(parts)`` names the files.

        With ``interrupt``, the engine binds a function that aborts the running statement, so a cancel or a
        lost lease stops the work at once instead of at the end."""
