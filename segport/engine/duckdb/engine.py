"""The embedded default engine: one DuckDB file in the data dir, owned by one process.

Tables: ``users_<project>`` (``gio_id`` plus one column per catalogue key), ``m_<project>_<segment>`` (a
segment's membership snapshot: its members' ``gio_id``), ``l_<project>_<segment>`` (an uploaded id list),
``segport_state`` (per-project ``gio_id`` counter and data version). Every change to profiles and
memberships is one DuckDB transaction, so an export — one ``COPY`` statement — always reads one snapshot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from segport.domain.event_files import EventAttribute
from segport.domain.export import ExportSpec
from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, quote_ident
from segport.domain.rules import compile_rule
from segport.engine.base import (
    ComputeResult,
    EventImportReport,
    EventScan,
    ExportOutput,
    ImportReport,
    MembersPage,
    SegmentDefinition,
    TagComputation,
    Target,
    UserEvents,
)
from segport.engine.behaviour_sql import SharedPass, shared_conditions, shared_groups
from segport.engine.duckdb import behaviour, event_reads, importer, pages, schema, tags, writer
from segport.engine.duckdb import events as ev
from segport.engine.duckdb.export_sql import (  # noqa: F401  (export_query, filtered_query: imported from here)
    _copy_options,
    _ids_query,
    _query,
    _select_list,
    _source,
    export_query,
    filtered_query,
    scan_query,
)
from segport.engine.duckdb.messages import engine_words
from segport.engine.duckdb.rules import DuckDBRules
from segport.engine.duckdb.sql import idlist_table, members_table, users_table
from segport.engine.interrupt import Interrupt
from segport.errors import (
    ComputeFailed,
    EngineBusy,
    ExportFailed,
    ImportRejected,
    OutOfMemory,
    SchemaChangeFailed,
    StorageFull,
    exhaustion_of,
)
from segport.testing_hooks import fault_point, pause_point

_STATE_DDL = """
CREATE TABLE IF NOT EXISTS segport_state (
    project VARCHAR PRIMARY KEY, next_gio_id BIGINT NOT NULL, data_version BIGINT NOT NULL
)"""
# A rule segment's compiled rule, kept with the data version its membership was computed at (NULL until the
# computing transaction bumps the version, see _bump): while the project's version still matches, the
# membership is exactly the users the rule selects, so an export may read the users table with the rule as its
# filter (one ordered scan) instead of joining the membership. No primary key: a DELETE and an INSERT of the
# same key in one transaction is all it sees.
_RULES_DDL = """
CREATE TABLE IF NOT EXISTS segport_segment_rules (
    project VARCHAR NOT NULL, segment VARCHAR NOT NULL, data_version BIGINT, rule_sql VARCHAR NOT NULL,
    params VARCHAR NOT NULL
)"""


class DuckDBEngine:
    """:class:`segport.engine.base.ProfileEngine` on a DuckDB file."""

    def __init__(
        self,
        path: Path,
        *,
        memory_limit: str = "256MB",
        threads: int = 0,
        temp_directory: Path | None = None,
        export_bytes: int = 0,
    ) -> None:
        # preserve_insertion_order stays on: imports number a file's rows in file order (row_number() OVER ()),
        # and an export that is one scan of the users table (export_sql.scan_query) relies on it for its order
        config: dict[str, Any] = {"memory_limit": memory_limit, "preserve_insertion_order": True}
        self._memory_limit = memory_limit
        if temp_directory is not None:  # where sorts, joins and aggregates spill beyond memory_limit
            temp_directory.mkdir(parents=True, exist_ok=True)
            config["temp_directory"] = str(temp_directory)
        if threads:
            config["threads"] = threads
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path), config=config)
        except duckdb.IOException as exc:
            first = str(exc).splitlines()[0]
            if "lock" in first.lower():
                raise EngineBusy(
                    f"the profile database {path} is in use by another process (is `segport serve` running "
                    f"on this data dir without a server.json?): {first}"
                ) from exc
            raise ExportFailed(f"cannot open the profile database {path}: {first}") from exc
        self.chunk_rows = writer.CHUNK_ROWS  # members one COPY sorts at once (see writer.py)
        # an export reads the users table in one ordered scan when it can (export_sql.scan_query); tests and
        # bench/soak.py turn it off to drive the chunked writer, the path every other export takes
        self.one_scan = True
        self.export_bytes = export_bytes  # an export's reservation in the memory budget; 0 = not sized by it
        self._writer = threading.Lock()
        self._versions: dict[str, int] = {}
        self._versions_lock = threading.Lock()
        self._generation = 0  # one writer at a time; readers never wait for it
        with self._cursor() as cur:
            cur.execute(_STATE_DDL)
            cur.execute(_RULES_DDL)

    # --- connections -------------------------------------------------------------------------------
    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction under the writer lock: committed whole or rolled back whole. Its memory is
        the import's reservation in the budget (segport/engine/admission.py); beyond DuckDB's limit it spills.
        Schema changes turn the driver's errors into :class:`SchemaChangeFailed`; imports and computations
        into the resource that ran out (:func:`_exhaustion`) or their own error."""
        with self._writer, self._cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            finally:
                with self._versions_lock:
                    self._generation += 1
                    self._versions.clear()

    def close(self) -> None:
        self._con.close()

    # --- schema ------------------------------------------------------------------------------------
    def ensure_project(self, project_id: str, catalog: Catalog) -> None:
        """Create the project's tables and give the users table a column for every catalogue key, in one
        transaction. A column left by an earlier life of a key (another type, or another case: a removal
        interrupted before its ``DROP COLUMN``) is replaced, so the new key never inherits it."""
        try:
            with self._transaction() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS {users_table(project_id)} (gio_id BIGINT NOT NULL)")
                cur.execute("INSERT INTO segport_state VALUES (?, 1, 0) ON CONFLICT DO NOTHING", [project_id])
                schema.align_columns(cur, project_id, catalog, schema.columns_of(cur, project_id), prune=False)
        except duckdb.Error as exc:  # the driver's error becomes ours at the boundary
            raise SchemaChangeFailed(
                f"the profile database of project {project_id} could not take the catalogue change: "
                f"{str(exc).splitlines()[0]}"
            ) from exc

    def reconcile(self, catalogs: dict[str, Catalog]) -> list[str]:
        """Make every project's users table hold exactly its catalogue's columns (start-up repair after a
        kill between a catalogue change and its ``ALTER TABLE``). One read when nothing differs; returns
        what was changed, as log lines."""
        with self._cursor() as cur:
            have = schema.all_columns(cur)
        changes: list[str] = []
        for project_id, catalog in catalogs.items():
            if schema.differs(have.get(project_id), catalog):
                with self._transaction() as cur:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {users_table(project_id)} (gio_id BIGINT NOT NULL)")
                    cur.execute("INSERT INTO segport_state VALUES (?, 1, 0) ON CONFLICT DO NOTHING", [project_id])
                    done = schema.align_columns(
                        cur, project_id, catalog, schema.columns_of(cur, project_id), prune=True
                    )
                    if done:
                        _bump(cur, project_id)
                changes += [f"project {project_id}: {c}" for c in done]
        return changes

    def drop_column(self, project_id: str, key: str) -> None:
        try:
            with self._transaction() as cur:
                cur.execute(f"ALTER TABLE {users_table(project_id)} DROP COLUMN IF EXISTS {quote_ident(key)}")
                _bump(cur, project_id)
        except duckdb.Error as exc:
            raise SchemaChangeFailed(
                f"the profile database of project {project_id} could not drop the column {key}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc

    def data_version(self, project_id: str) -> int:
        """The project's data version, cached: every submit asks for it, and a DuckDB query then waits behind
        a running export's COPY for a worker thread. The cache is safe because this process owns the file
        (DuckDB lets one process open it for writing) and every write here goes through :meth:`_transaction`,
        which empties the cache when it ends."""
        with self._versions_lock:
            cached, generation = self._versions.get(project_id), self._generation
        if cached is not None:
            return cached
        with self._cursor() as cur:
            version = _version(cur, project_id)
        with self._versions_lock:
            if self._generation == generation:  # no write ended meanwhile: the value is current
                self._versions[project_id] = version
        return version

    # --- imports and segments ----------------------------------------------------------------------
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
        with _exhaustion(), self._transaction() as cur:
            report = importer.import_users(cur, project_id, catalog, path, file_format, match, progress)
            if recompute and progress:
                progress(f"recomputing {len(recompute)} segment(s)")
            events = behaviour.event_table(cur, project_id)
            shared = _shared_pass(cur, recompute, events)  # the events did not change: shared as for DAILY
            for seg in recompute:
                result = _compute(cur, project_id, seg, shared, events)
                report.segments[seg.key] = result.total_users
                report.unmatched[seg.key] = result.unmatched
            _drop_passes(cur, shared)
            _bump(cur, project_id)
            pause_point("import-written")  # tests kill an import here: every row written, nothing committed
        return report

    def load_member_ids(self, project_id: str, segment_key: str, path: Path) -> int:
        with _exhaustion(), self._transaction() as cur:
            return importer.load_id_list(cur, idlist_table(project_id, segment_key), path)

    def compute_segment(self, project_id: str, segment: SegmentDefinition) -> ComputeResult:
        try:
            with self._transaction() as cur:
                result = _compute(cur, project_id, segment)
                _bump(cur, project_id)
        except duckdb.Error as exc:  # the driver's error becomes ours at the boundary
            exhausted = exhaustion_of(exc)  # out of memory or disk: not the segment's fault, retry later
            if exhausted is not None:
                raise exhausted from exc
            raise ComputeFailed(f"segment {segment.key} could not be computed: {engine_words(exc)}") from exc
        return result

    def compute_segments(self, project_id: str, segments: list[SegmentDefinition]) -> dict[str, ComputeResult]:
        """Several segments in one transaction; the event measures of their rules come from one pass over the
        events (a temporary table of the measures per user), each segment's statement reads that table."""
        try:
            with self._transaction() as cur:
                events = behaviour.event_table(cur, project_id)  # read once: no segment changes it
                shared = _shared_pass(cur, segments, events)
                results = {seg.key: _compute(cur, project_id, seg, shared, events) for seg in segments}
                _drop_passes(cur, shared)
                _bump(cur, project_id)
        except duckdb.Error as exc:
            exhausted = exhaustion_of(exc)
            if exhausted is not None:
                raise exhausted from exc
            keys = ", ".join(s.key for s in segments)
            raise ComputeFailed(f"segments {keys} could not be computed: {engine_words(exc)}") from exc
        return results

    def compute_tag(self, project_id: str, tag: TagComputation) -> ComputeResult:
        """A tag from events into its column of the users table: one transaction (:mod:`.tags`)."""
        try:
            with self._transaction() as cur:
                result = tags.compute_tag(cur, project_id, tag)
                _bump(cur, project_id)
        except duckdb.Error as exc:
            exhausted = exhaustion_of(exc)
            if exhausted is not None:
                raise exhausted from exc
            raise ComputeFailed(f"tag {tag.key} could not be computed: {engine_words(exc)}") from exc
        return result

    def drop_segment(self, project_id: str, segment_key: str) -> None:
        with self._transaction() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {members_table(project_id, segment_key)}")
            cur.execute(f"DROP TABLE IF EXISTS {idlist_table(project_id, segment_key)}")
            _forget_rule(cur, project_id, segment_key)
            _bump(cur, project_id)

    # --- reading -----------------------------------------------------------------------------------
    def count(self, project_id: str, target: Target) -> int:
        with self._cursor() as cur, _exhaustion():
            src = _source(cur, project_id, target)
            row = cur.execute(f"SELECT count(*) FROM ({_ids_query(src, project_id, target)})").fetchone()
        return int(row[0]) if row else 0

    # --- reading for the API family (pages, one user, tag sizes) -----------------------------------
    def members_page(
        self, project_id: str, target: Target, columns: list[CatalogEntry], limit: int, offset: int
    ) -> MembersPage:
        """A target's total and one page of its members (ordered by ``gio_id``), rendered for the API.

        Both reads run in one DuckDB transaction, so the total and the page come from the same snapshot
        even while an import or a recompute commits a new one.
        """
        keys = [GIO_ID, *(c.key for c in columns)]
        with self._cursor() as cur, _exhaustion():
            cur.execute("BEGIN TRANSACTION")
            try:
                src = _source(cur, project_id, target)
                # a segment's members are read from its membership table alone (ints; every member is a
                # user): joining 3M members to the users table for a count took ~100 MB of hash table a page
                ids = _ids_query(src, project_id, target)
                total = int(cur.execute(f"SELECT count(*) FROM ({ids})").fetchone()[0])  # type: ignore[index]
                rows = []
                if offset < total:
                    # pick the page's gio_ids first (a narrow sort), then read only those users' columns
                    rows = cur.execute(
                        f"WITH ids AS (SELECT gio_id FROM ({ids}) ORDER BY gio_id LIMIT ? OFFSET ?) "
                        f"SELECT {pages.select_list(columns)} FROM ids JOIN {users_table(project_id)} u "
                        "USING (gio_id) ORDER BY u.gio_id",
                        [limit, offset],
                    ).fetchall()
            finally:
                cur.execute("ROLLBACK")
        return MembersPage(total, [dict(zip(keys, r, strict=True)) for r in rows])

    def lookup_user(
        self, project_id: str, catalog: Catalog, identity: CatalogEntry, value: str
    ) -> dict[str, Any] | None:
        """The user ``value`` names for ``identity`` as events resolve it (a linked device is its login user, else
        the lowest ``gio_id`` holding it: :func:`event_reads.resolve_gio_id`), every catalogue key rendered."""
        entries = list(catalog.entries.values())
        with self._cursor() as cur, _exhaustion():
            gio_id = event_reads.resolve_gio_id(cur, project_id, identity, value)
            row = (
                cur.execute(
                    f"SELECT {pages.select_list(entries)} FROM {users_table(project_id)} u WHERE u.gio_id = ?",
                    [gio_id],
                ).fetchone()
                if gio_id
                else None
            )
        return None if row is None else dict(zip([GIO_ID, *(e.key for e in entries)], row, strict=True))

    def tag_counts(self, project_id: str, tags: list[CatalogEntry]) -> dict[str, int]:
        """Members per tag (users with a non-null value), all tags counted in one scan of one snapshot."""
        if not tags:
            return {}
        with self._cursor() as cur, _exhaustion():
            row = cur.execute(pages.tag_counts_sql(users_table(project_id), tags)).fetchone()
        return {t.key: int(n) for t, n in zip(tags, row or [0] * len(tags), strict=True)}

    # --- events ------------------------------------------------------------------------------------
    def import_events(
        self, project_id: str, catalog: Catalog, attributes: list[EventAttribute], path: Path, file_format: str
    ) -> EventImportReport:
        """Check and stage the file, resolve identities (new users for identities seen first), store the rows
        in time order and record the spool batches they came from: one transaction."""
        started = time.perf_counter()
        try:
            with self._transaction() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS {users_table(project_id)} (gio_id BIGINT NOT NULL)")
                cur.execute("INSERT INTO segport_state VALUES (?, 1, 0) ON CONFLICT DO NOTHING", [project_id])
                declared = ev.declared_types(attributes, ev.store_columns(cur, project_id))
                staged = ev.stage(
                    cur, catalog, declared, path, file_format or None, project_id, _now_ms(), raw_identities=True
                )
                ev.ensure_store(cur, project_id, staged.columns)
                skipped = ev.skip_loaded_batches(cur, staged, project_id)
                added = ev.resolve_identities(cur, catalog, staged, users_table(project_id), project_id)
                names, select = ev.final_rows(staged, ordered=not staged.in_order)
                stored = cur.execute(
                    f"INSERT INTO {ev.events_table(project_id)} ({', '.join(ev.q(n) for n in names)}) {select}"
                ).fetchone()
                ev.link_devices(cur, catalog, staged, users_table(project_id), project_id)
                cur.execute(
                    'INSERT INTO segport_event_batches SELECT DISTINCT ?, "$batch" FROM ev_stage '
                    'WHERE "$batch" IS NOT NULL',
                    [project_id],
                )
                events = ev.event_names(cur, staged)
                cur.execute("DROP VIEW IF EXISTS ev_stage" if staged.view else "DROP TABLE IF EXISTS ev_stage")
                for table in ("ev_ids", "ev_map", "ev_rawids", "ev_rawmap"):
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                if added:
                    _bump(cur, project_id)
        except duckdb.Error as exc:
            raise ImportRejected(f"the events of {path.name} could not be stored: {engine_words(exc)}") from exc
        return EventImportReport(
            staged.rows,
            int(stored[0]) if stored else 0,
            added,
            staged.new_attributes,
            events,
            skipped,
            time.perf_counter() - started,
        )

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
        with self._cursor() as cur:
            return event_reads.user_events(
                cur, project_id, identity, value, start_ms, end_ms, limit, offset, descending
            )

    def count_events(self, project_id: str, start_ms: int, end_ms: int) -> EventScan:
        with self._cursor() as cur:
            return event_reads.count_events(cur, project_id, start_ms, end_ms)

    # --- export ------------------------------------------------------------------------------------
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
        try:
            with self._cursor() as cur:
                if fault_point("export-oom"):  # tests: an out-of-memory error at the first statement
                    raise duckdb.OutOfMemoryException("Out of Memory Error: failed to pin block (injected)")
                if interrupt is not None:  # cancel / lost lease: abort the running COPY from another thread
                    interrupt.bind(cur.interrupt)
                try:
                    src = _source(cur, project_id, target)
                    select_list, options = _select_list(columns, spec, excel_safe), _copy_options(spec)

                    def scan(c: duckdb.DuckDBPyConnection, version: int, members: int) -> tuple[str, list] | None:
                        return scan_query(c, project_id, target, select_list, version, members)

                    return writer.write_export(
                        cur,
                        lambda where: (_query(select_list, src, where), options),
                        _ids_query(src, project_id, target),
                        out_dir,
                        file_names,
                        max_file_rows=max_file_rows,
                        chunk_rows=self._chunk_rows(len(columns)),
                        version_of=lambda c: _version(c, project_id),
                        stopped=(lambda: interrupt.fired) if interrupt is not None else lambda: False,
                        scan_for=scan if self.one_scan else None,
                    )
                finally:
                    if interrupt is not None:  # before the cursor closes: a cancel now finds nothing to abort
                        interrupt.unbind()
        except duckdb.InterruptException as exc:  # not ours (a cancel or a lost lease is seen by the runner): retry
            raise ExportFailed("the export was interrupted (cancelled or taken over)", transient=True) from exc
        except duckdb.IOException as exc:
            text = str(exc)
            if "No space left" in text or "File too large" in text or "Disk quota" in text:
                raise StorageFull(f"the result folder is full: {engine_words(exc)}") from exc
            exhausted = exhaustion_of(exc)  # too many open files
            if exhausted is not None:
                raise exhausted from exc
            raise ExportFailed(f"writing the result failed: {engine_words(exc)}") from exc
        except duckdb.OutOfMemoryException as exc:
            raise OutOfMemory(
                f"the export ran out of memory: raise SEGPORT_ENGINE_MEMORY_BYTES (DuckDB's limit is now {self._memory_limit}) "
                "or export fewer columns"
            ) from exc
        except duckdb.Error as exc:
            exhausted = exhaustion_of(exc)
            if exhausted is not None:
                raise exhausted from exc
            raise ExportFailed(f"the export query failed: {engine_words(exc)}") from exc
        except OSError as exc:  # the FIFO's pump or the result folder (EMFILE, ENOSPC)
            exhausted = exhaustion_of(exc)
            if exhausted is None:
                raise
            raise exhausted from exc

    def _chunk_rows(self, columns: int) -> int:
        """Members one ``COPY`` sorts at once: ``chunk_rows``, fewer when the export's reservation in the memory
        budget would not hold them (a sorted row of ``columns`` columns taken as 512 + 256 × columns bytes)."""
        if not self.export_bytes:
            return self.chunk_rows
        fits = self.export_bytes // (512 + 256 * columns)
        return max(1, min(self.chunk_rows, max(10_000, fits)))


@contextmanager
def _exhaustion() -> Iterator[None]:
    """DuckDB running out of memory, of file descriptors or of disk, as segport's errors (503/507 with a code)."""
    try:
        yield
    except (duckdb.Error, OSError, MemoryError) as exc:
        exhausted = exhaustion_of(exc)
        if exhausted is None:
            raise
        raise exhausted from exc


def _now_ms() -> int:
    return int(time.time() * 1000)


def _version(cur: duckdb.DuckDBPyConnection, project_id: str) -> int:
    row = cur.execute("SELECT data_version FROM segport_state WHERE project = ?", [project_id]).fetchone()
    return int(row[0]) if row else 0


def _bump(cur: duckdb.DuckDBPyConnection, project_id: str) -> None:
    cur.execute("UPDATE segport_state SET data_version = data_version + 1 WHERE project = ?", [project_id])
    # the rules of the memberships this transaction computed hold from the new version on
    cur.execute(
        "UPDATE segport_segment_rules SET data_version = (SELECT data_version FROM segport_state WHERE project = ?) "
        "WHERE project = ? AND data_version IS NULL",
        [project_id, project_id],
    )


def _forget_rule(cur: duckdb.DuckDBPyConnection, project_id: str, segment_key: str) -> None:
    cur.execute("DELETE FROM segport_segment_rules WHERE project = ? AND segment = ?", [project_id, segment_key])


def _remember_rule(cur: duckdb.DuckDBPyConnection, project_id: str, segment_key: str, sql: str, params: list) -> None:
    """Keep a membership's rule for the export's one-scan path (export_sql.scan_query), when its parameters
    survive JSON exactly (str, int, float, bool, None); otherwise the export joins the membership."""
    if not all(p is None or type(p) in (str, int, float, bool) for p in params):
        return
    cur.execute(
        "INSERT INTO segport_segment_rules VALUES (?, ?, NULL, ?, ?)",
        [project_id, segment_key, sql, json.dumps(params, ensure_ascii=False)],
    )


def _shared_pass(
    cur: duckdb.DuckDBPyConnection, segments: list[SegmentDefinition], events: tuple[str | None, dict[str, str]]
) -> SharedPass | None:
    """The event measures of the segments' rules (those computed at the first one's clock and time zone) that
    share a pass (:func:`shared_groups`) over the project's ``events`` (its event table and columns), each pass a
    temporary table ``beh_pass<i>``; ``None``: none do."""
    shared = shared_conditions(segments)
    if shared is None:
        return None
    ctx, conds = shared
    table, columns = events
    found: dict[str, tuple[str, str]] = {}
    for i, group in enumerate(shared_groups(conds, ctx.now_ms, ctx.time_zone)):
        rules = DuckDBRules.on_events(table, columns)(Catalog([]), "u", behaviour=ctx)
        built = behaviour.DuckDBEventSQL(ctx, rules, table, columns).shared_pass(group)
        if built is None:
            continue
        sql, measures = built
        cur.execute(f"CREATE OR REPLACE TEMP TABLE beh_pass{i} AS {sql}", rules.params)
        found.update({key: (f"beh_pass{i}", column) for key, column in measures.items()})
    return SharedPass(found) if found else None


def _drop_passes(cur: duckdb.DuckDBPyConnection, shared: SharedPass | None) -> None:
    for table in sorted({t for t, _ in shared.columns.values()} if shared else ()):
        cur.execute(f"DROP TABLE {table}")


def _compute(
    cur: duckdb.DuckDBPyConnection,
    project_id: str,
    seg: SegmentDefinition,
    shared: SharedPass | None = None,
    events: tuple[str | None, dict[str, str]] | None = None,
) -> ComputeResult:
    """``seg``'s membership table; ``events``: the project's event table and columns when the caller read them."""
    users = users_table(project_id)
    members = members_table(project_id, seg.key)
    unmatched = 0
    _forget_rule(cur, project_id, seg.key)  # whatever replaces the membership, the old rule no longer describes it
    if seg.rule_tree is not None and seg.catalog is not None:
        dialect = DuckDBRules
        if seg.behaviour is not None:  # event conditions read the project's event table (if it has one yet)
            dialect = DuckDBRules.on_events(*(events or behaviour.event_table(cur, project_id)), shared)
        rule = compile_rule(seg.rule_tree, seg.catalog, dialect, behaviour=seg.behaviour)
        cur.execute(
            f"CREATE OR REPLACE TABLE {members} AS SELECT u.gio_id FROM {users} u WHERE {rule.sql} ORDER BY u.gio_id",
            rule.params,
        )
        if seg.behaviour is None:  # a rule on the users table alone (event conditions depend on more than it)
            _remember_rule(cur, project_id, seg.key, rule.sql, rule.params)
    elif seg.identity is not None:
        ids = idlist_table(project_id, seg.key)
        col = f"u.{quote_ident(seg.identity)}"
        multi = cur.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
            [f"users_{project_id}", seg.identity],
        ).fetchone()
        if multi and str(multi[0]).endswith("[]"):
            matched = f"SELECT DISTINCT u.gio_id, v.value FROM {users} u, unnest({col}) AS v(value)"
        else:
            matched = f"SELECT u.gio_id, {col} AS value FROM {users} u WHERE {col} IS NOT NULL"
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE seg_match AS SELECT l.value, x.gio_id FROM {ids} l "
            f"LEFT JOIN ({matched}) x ON x.value = l.value"
        )
        cur.execute(
            f"CREATE OR REPLACE TABLE {members} AS SELECT DISTINCT gio_id FROM seg_match "
            "WHERE gio_id IS NOT NULL ORDER BY gio_id"
        )
        unmatched = int(cur.execute("SELECT count(*) FROM seg_match WHERE gio_id IS NULL").fetchone()[0])  # type: ignore[index]
        cur.execute("DROP TABLE seg_match")
    else:
        raise ValueError(f"segment {seg.key} has neither a rule nor an id list")
    total = int(cur.execute(f"SELECT count(*) FROM {members}").fetchone()[0])  # type: ignore[index]
    return ComputeResult(total, unmatched)
